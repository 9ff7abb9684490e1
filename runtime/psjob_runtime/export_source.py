"""The checkpoint an export reads: the newest complete step under a folder, of any job.

A server restoring a job reads only that job's files (checkpoint.latest). An export runs outside
the job, often on a copy of the volume, so it accepts any owner (or the one --owner names), but
checks every file exactly as a restoring server does (checkpoint_contents) because a checkpoint
folder may hold anything: another job's files, a step whose servers died while writing, a file
cut short or edited by hand. A step that fails is passed over with its reason, and when none is
usable the error lists every reason, newest first.

What it hands back is the model as the servers hold it, stitched across servers: the dense
vector in the workers' parameter order, and each table's rows sorted by id.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from psjob_runtime.checkpoint_contents import UnusableCheckpointError, check_file, check_together
from psjob_runtime.errors import PsjobError

_STEP_DIR = re.compile(r"^step-(\d+)$")
_FILE = re.compile(r"^server-(\d+)-of-(\d+)\.pt$")


class ExportError(PsjobError):
    """The export cannot be written as asked; the message names the path and the fix."""


@dataclass(frozen=True)
class Table:
    """One table as served: ids ascending (int64) now, their rows (one per id) when asked.

    Rows are gathered from the memory-mapped files on demand, so an export holds one table's
    rows at a time whatever the number of tables.
    """

    table: int
    kind: Literal["fixed", "dynamic"]
    dim: int
    num_rows: int | None
    """A fixed table's row count (its ids are 0..num_rows-1); None for a dynamic table."""
    ids: torch.Tensor
    shards: list[dict[str, Any]] = field(repr=False)
    """Each server's entry of this table, in server order."""
    place: torch.Tensor | None = field(default=None, repr=False)
    """Dynamic: where each row of the servers' entries, joined in server order, goes."""

    def rows(self) -> torch.Tensor:
        """float32 [len(ids), dim]: each row copied once, from its file to its place."""
        rows = torch.empty(len(self.ids), self.dim)
        if self.place is None:  # fixed: server k of S holds ids k, k+S, ...
            for server, shard in enumerate(self.shards):
                rows[server :: len(self.shards)] = shard["rows"]
            return rows
        offset = 0
        for shard in self.shards:
            count = len(shard["ids"])
            rows[self.place[offset : offset + count]] = shard["rows"]
            offset += count
        return rows


@dataclass(frozen=True)
class Source:
    """A usable checkpoint step, stitched: what an export writes."""

    folder: Path
    step: int
    owner: str
    servers: int
    dense: torch.Tensor
    tables: list[Table]


def read_latest(root: Path, owner: str | None = None) -> tuple[Source, list[str]]:
    """The newest usable step under `root` (of job `owner` when given) and why newer ones were
    passed over; raises ExportError listing every reason when none is usable."""
    if not root.is_dir():
        raise ExportError(
            f"checkpoint folder {str(root)!r} does not exist or is not a folder "
            "(give the job's spec.training.checkpoint.dir, or a copy of it)"
        )
    steps = sorted(
        (
            (int(m.group(1)), entry)
            for entry in root.iterdir()
            if (m := _STEP_DIR.match(entry.name))
        ),
        reverse=True,
    )
    if not steps:
        raise ExportError(
            f"no checkpoint under {str(root)!r}: it holds no step-NNNNNNNNN folder (give the "
            "job's spec.training.checkpoint.dir, where servers write their checkpoints)"
        )
    passed_over: list[str] = []
    for step, folder in steps:
        counts = _complete_counts(folder)
        if not counts:
            passed_over.append(f"{folder}: incomplete (not every server wrote its file)")
            continue
        for count in counts:
            try:
                return _stitch(folder, step, _open_all(folder, count, step, owner)), passed_over
            except UnusableCheckpointError as error:
                passed_over.append(f"{folder} ({count} servers): {error}")
    whose = f" of job {owner!r}" if owner else ""
    reasons = "\n  ".join(passed_over)
    raise ExportError(f"no usable checkpoint{whose} under {str(root)!r}:\n  {reasons}")


def _complete_counts(folder: Path) -> list[int]:
    """Server counts with a file for every server in `folder`, most servers first."""
    if not folder.is_dir():
        return []
    found: dict[int, set[int]] = {}
    for entry in folder.iterdir():
        if match := _FILE.match(entry.name):
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    return sorted((k for k, seen in found.items() if seen == set(range(k))), reverse=True)


def _open_all(folder: Path, count: int, step: int, owner: str | None) -> list[dict[str, Any]]:
    """Every server's file, checked alone and together; the job is server 0's unless given."""
    files: list[dict[str, Any]] = []
    for server in range(count):
        path = folder / f"server-{server}-of-{count}.pt"
        try:
            loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as error:  # truncated, partial, not a torch file, unsafe pickle
            lines = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
            raise UnusableCheckpointError(f"{path.name} does not open ({reason})") from None
        if owner is None:
            found = loaded.get("owner") if isinstance(loaded, dict) else None
            owner = found if isinstance(found, str) else "(no owner recorded)"
        try:
            files.append(check_file(loaded, owner, server, count, step))
        except UnusableCheckpointError as error:
            raise UnusableCheckpointError(f"{path.name}: {error}") from None
    check_together(files)
    return files


def _stitch(folder: Path, step: int, files: list[dict[str, Any]]) -> Source:
    ordered = sorted(files, key=lambda saved: int(saved["dense"]["start"]))
    dense = torch.cat([saved["dense"]["values"] for saved in ordered]).clone()
    tables = []
    for index in range(len(files[0]["tables"])):
        shards = [saved["tables"][index] for saved in files]
        if shards[0].get("kind", "fixed") == "dynamic":
            tables.append(_dynamic_table(shards))
        else:
            tables.append(_fixed_table(shards))
    return Source(folder, step, files[0]["owner"], len(files), dense, tables)


def _fixed_table(shards: list[dict[str, Any]]) -> Table:
    first = shards[0]
    num_rows = int(first["num_rows"])
    ids = torch.arange(num_rows)
    return Table(int(first["table"]), "fixed", int(first["dim"]), num_rows, ids, shards)


def _dynamic_table(shards: list[dict[str, Any]]) -> Table:
    """Each server holds the rows of the ids routed to it, in no order: joined, sorted by id.

    Ids waiting for admission have no row and are not exported: serving gives them the default
    a lookup of an id without a row gives.
    """
    first = shards[0]
    ids = torch.cat([shard["ids"] for shard in shards])
    order = torch.argsort(ids)
    ids = ids[order]
    if len(ids) > 1 and not bool((ids[1:] != ids[:-1]).all()):
        repeated = ids[1:][ids[1:] == ids[:-1]][:5].tolist()
        raise UnusableCheckpointError(f"table {first['table']} holds ids {repeated} more than once")
    place = torch.empty_like(order)
    place[order] = torch.arange(len(order))
    return Table(int(first["table"]), "dynamic", int(first["dim"]), None, ids, shards, place)
