"""`python -m psjob_runtime export CHECKPOINT_DIR OUT`: a trained model for serving, torch only.

Reads the newest usable checkpoint step (export_source), writes the dense parameters and every
table in the layout export_format describes, and with `--since PREVIOUS` only the table rows
that changed since that export. The folder is assembled under a temporary name beside OUT and
renamed into place, so a reader (a serving fleet polling for new exports) never sees half of
one. OUT must not exist, be empty, or (with --replace) be an earlier export; anything else is
refused, since it may be someone's data.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from psjob_runtime.export_dense import load_factory, name_parameters
from psjob_runtime.export_format import (
    MANIFEST,
    Dense,
    Manifest,
    TableEntry,
    digests_file,
    read_digests,
    read_manifest,
    row_digests,
    table_file,
)
from psjob_runtime.export_source import ExportError, Source, read_latest


@dataclass(frozen=True)
class ExportRequest:
    checkpoint_dir: Path
    out: Path
    since: Path | None = None
    model: str | None = None
    """module:factory naming the dense parameters (export_dense); None keeps the flat vector."""
    owner: str | None = None
    replace: bool = False


def export(request: ExportRequest) -> Manifest:
    """Write the export `request` asks for; raises ExportError naming the path and the fix."""
    out = request.out.resolve()
    _check_target(out, request)
    naming = None if request.model is None else _Naming(request.model, load_factory(request.model))
    base = None if request.since is None else _Base(request.since, read_manifest(request.since))
    source, passed_over = read_latest(request.checkpoint_dir, request.owner)
    for reason in passed_over:
        print(f"passed over {reason}", file=sys.stderr)
    if base is not None:
        _check_base(base, source)
    staging: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        manifest = _write(staging, source, naming, base)
        _move_into_place(staging, out)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise ExportError(
                f"OUT {str(out)!r} could not be written: {error.strerror or error} "
                f"({error.filename or out.parent}); nothing was left there"
            ) from error
        raise
    return manifest


def _check_target(out: Path, request: ExportRequest) -> None:
    if request.since is not None and request.since.resolve() == out:
        raise ExportError(
            f"OUT {str(out)!r} is the --since export: an incremental export is applied to its "
            "base, so write it to a new folder and keep the base"
        )
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ExportError(f"OUT {str(out)!r} is a file: give a folder that does not exist yet")
    if not (out / MANIFEST).is_file():
        raise ExportError(
            f"OUT {str(out)!r} is not empty and holds no export: give a new folder "
            "(an export never deletes what it did not write)"
        )
    if not request.replace:
        raise ExportError(
            f"OUT {str(out)!r} holds an export already: pass --replace to replace it, "
            "or give a new folder"
        )


@dataclass(frozen=True)
class _Base:
    """The export --since names: an incremental export holds what changed since it."""

    folder: Path
    manifest: Manifest

    def digests(self, table: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = next(t for t in self.manifest.tables if t.table == table)
        return read_digests(self.folder, entry)


def _check_base(base: _Base, source: Source) -> None:
    previous, since = base.manifest, base.folder
    if previous.owner != source.owner:
        raise ExportError(
            f"--since {str(since)!r} was exported from job {previous.owner!r}, the checkpoint "
            f"belongs to {source.owner!r}: give an export of the same job, or export in full"
        )
    if previous.step > source.step:
        raise ExportError(
            f"--since {str(since)!r} is of step {previous.step}, newer than the checkpoint's "
            f"step {source.step}: give an older export, or export in full"
        )
    before = [(t.table, t.kind, t.dim) for t in previous.tables]
    now = [(t.table, t.kind, t.dim) for t in source.tables]
    if before != now:
        raise ExportError(
            f"--since {str(since)!r} holds tables (id, kind, dim) {before}, the checkpoint "
            f"holds {now}: export in full"
        )


@dataclass(frozen=True)
class _Naming:
    """--model as given and the factory it names."""

    spec: str
    factory: Callable[[], object]


def _write(folder: Path, source: Source, naming: _Naming | None, base: _Base | None) -> Manifest:
    (folder / "tables").mkdir()
    (folder / "digests").mkdir()
    dense = _write_dense(folder, source.dense, naming)
    entries = []
    for table in source.tables:
        rows = table.rows()
        digests = row_digests(rows)
        _save({"ids": table.ids, "digests": digests}, folder / digests_file(table.table))
        if base is None:
            content = {"ids": table.ids, "rows": rows}
        else:
            content = _changes(table.ids, rows, digests, *base.digests(table.table))
        _save(content, folder / table_file(table.table))
        entries.append(
            TableEntry(
                table=table.table,
                kind=table.kind,
                dim=table.dim,
                num_rows=table.num_rows,
                rows=len(content["ids"]),
                evicted=len(content.get("evicted", ())),
                file=table_file(table.table),
                digests=digests_file(table.table),
            )
        )
        del rows, content  # one table's rows at a time: free these before the next table's
    manifest = Manifest(
        kind="full" if base is None else "incremental",
        step=source.step,
        since=None if base is None else base.manifest.step,
        owner=source.owner,
        servers=source.servers,
        checkpoint=str(source.folder.absolute()),
        dense=dense,
        tables=entries,
    )
    (folder / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def _write_dense(folder: Path, flat: torch.Tensor, naming: _Naming | None) -> Dense:
    if naming is None:
        _save({"values": flat}, folder / "dense.pt")
        return Dense(file="dense.pt", layout="flat", elements=flat.numel(), parameters=[])
    state, parameters = name_parameters(flat, naming.factory, naming.spec)
    _save(state, folder / "model.pt")
    return Dense(file="model.pt", layout="state_dict", elements=flat.numel(), parameters=parameters)


def _changes(
    ids: torch.Tensor,
    rows: torch.Tensor,
    digests: torch.Tensor,
    base_ids: torch.Tensor,
    base_digests: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Rows whose id is new or whose bits differ from the base, and the base's ids now gone."""
    if len(base_ids) == 0:
        changed = torch.ones(len(ids), dtype=torch.bool)
    else:
        at = torch.searchsorted(base_ids, ids).clamp_(max=len(base_ids) - 1)
        changed = (base_ids[at] != ids) | (base_digests[at] != digests)
    evicted = base_ids[~torch.isin(base_ids, ids)]
    return {"ids": ids[changed], "rows": rows[changed], "evicted": evicted}


def _save(content: dict[str, torch.Tensor], path: Path) -> None:
    with path.open("wb") as out:
        torch.save(content, out)
        out.flush()
        os.fsync(out.fileno())


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder to OUT; an earlier export there is swapped out, then deleted."""
    staging.chmod(0o777 & ~_umask())
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(staging, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
    os.rename(out, retired / out.name)
    os.rename(staging, out)
    with contextlib.suppress(OSError):
        shutil.rmtree(retired)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
