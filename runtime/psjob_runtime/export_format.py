"""The layout of an export folder, and reading a previous one back for an incremental export.

    manifest.json        what the folder holds (the Manifest below), written last
    model.pt             the dense parameters as a state_dict {name: tensor} (with --model), or
    dense.pt             {"values": the flat vector in model.parameters() order} (without)
    tables/<t>.pt        table t: {"ids": int64 [n], "rows": float32 [n, dim]}, ids ascending;
                         an incremental export adds {"evicted": int64 [e]}
    digests/<t>.pt       {"ids", "digests": int64 [n]}: a 64-bit hash of every row of the full
                         table at this step, so that the next --since compares without the rows

Everything is plain tensors in dictionaries written by torch.save, so torch.load(...,
weights_only=True) reads it without psjob installed. An incremental export holds every row whose
bits changed since its base (or whose id is new), the ids gone since, and the dense parameters
in full; its digests describe the full table, so the next incremental can be taken against it.
"""

from pathlib import Path
from typing import Final, Literal, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from psjob_runtime import hashing
from psjob_runtime.export_source import ExportError

FORMAT: Final = "psjob-export"
VERSION: Final = 1
MANIFEST = "manifest.json"
_DIGEST_CHUNK_ROWS = 1 << 18
"""Rows hashed at a time: bounds the temporary int64 copies to a few hundred MB at dim 64."""


def table_file(table: int) -> str:
    return f"tables/{table}.pt"


def digests_file(table: int) -> str:
    return f"digests/{table}.pt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameter(_Strict):
    name: str
    shape: list[int]


class Dense(_Strict):
    file: Literal["model.pt", "dense.pt"]
    layout: Literal["state_dict", "flat"]
    """state_dict: {name: tensor}; flat: {"values": 1-D tensor in model.parameters() order}."""
    elements: int = Field(ge=1)
    parameters: list[Parameter]
    """Names and shapes of the state_dict (empty for the flat layout)."""


class TableEntry(_Strict):
    table: int = Field(ge=0)
    kind: Literal["fixed", "dynamic"]
    dim: int = Field(ge=1)
    num_rows: int | None
    """A fixed table's row count; None for a dynamic one."""
    rows: int = Field(ge=0)
    """Rows in `file`: the whole table, or in an incremental export the changed ones."""
    evicted: int = Field(ge=0)
    """Ids gone since the base export (always 0 in a full export)."""
    file: str
    digests: str

    @model_validator(mode="after")
    def _files_of_this_table(self) -> Self:
        """A manifest names only its own files: `--since` reads them, and a hand-edited path
        (../elsewhere) must not make the export read outside the folder."""
        if (self.file, self.digests) != (table_file(self.table), digests_file(self.table)):
            raise ValueError(
                f"table {self.table} names files {self.file!r} and {self.digests!r}, expected "
                f"{table_file(self.table)!r} and {digests_file(self.table)!r}"
            )
        return self


class Manifest(_Strict):
    format: Literal["psjob-export"] = FORMAT
    version: Literal[1] = VERSION
    kind: Literal["full", "incremental"]
    step: int = Field(ge=0)
    since: int | None
    """The step of the export this one applies to (incremental only)."""
    owner: str
    """The job (namespace/name) whose checkpoint this is."""
    servers: int = Field(ge=1)
    checkpoint: str
    """The step folder read."""
    dense: Dense
    tables: list[TableEntry]


def row_digests(rows: torch.Tensor) -> torch.Tensor:
    """A 64-bit hash of each row's bits: equal rows (bit for bit) give equal digests."""
    digests = torch.empty(len(rows), dtype=torch.int64)
    for start in range(0, len(rows), _DIGEST_CHUNK_ROWS):
        bits = rows[start : start + _DIGEST_CHUNK_ROWS].contiguous().view(torch.int32)
        bits = bits.to(torch.int64) & 0xFFFFFFFF
        digest = torch.zeros(len(bits), dtype=torch.int64)
        for column in range(bits.shape[1]):
            digest = hashing.mix64(digest ^ bits[:, column], salt=column)
        digests[start : start + len(bits)] = digest
    return digests


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as error:
        raise ExportError(
            f"{str(folder)!r} is not a psjob export: {path.name} cannot be read "
            f"({error.strerror or error})"
        ) from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise ExportError(
            f"{str(path)!r} is not a psjob export manifest of version {VERSION}: "
            f"{where}: {first['msg']}"
        ) from None


def read_digests(folder: Path, entry: TableEntry) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, digests) of a previous export's table, checked: sorted unique int64, equal counts."""
    path = folder / entry.digests
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        lines = str(error).strip().splitlines()
        raise ExportError(
            f"{str(path)!r} does not open ({lines[0] if lines else type(error).__name__}): "
            "export in full instead of --since this folder"
        ) from None
    ids, digests = (_int64_vector(loaded, key, path) for key in ("ids", "digests"))
    if len(ids) != len(digests) or (len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all())):
        raise ExportError(f"{str(path)!r}: ids are not ascending and unique, one per digest")
    return ids, digests


def _int64_vector(loaded: object, key: str, path: Path) -> torch.Tensor:
    value = loaded.get(key) if isinstance(loaded, dict) else None
    if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or value.dim() != 1:
        raise ExportError(f"{str(path)!r}: {key} is not a 1-D int64 tensor")
    return value
