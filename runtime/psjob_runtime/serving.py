"""Reading an export with torch alone: the functions docs/serving.md shows, importable here too.

A serving process should not need psjob: these functions use only json, pathlib and torch, and
docs/serving.md carries the same code for copying (a test keeps the two equal and runs the copy
in a process without psjob). An export is loaded into {"step", "dense", "tables"}; an
incremental export applied to the export of its base step gives what a full export of its own
step holds.
"""

import json
from pathlib import Path
from typing import Any

import torch


def load_export(folder: str | Path) -> dict[str, Any]:
    """A full export as {"step": int, "dense": {...}, "tables": {table: {"ids", "rows"}}}."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["kind"] != "full":
        raise ValueError(f"{folder} is incremental: load its base, then apply_incremental")
    return {
        "step": manifest["step"],
        "dense": torch.load(folder / manifest["dense"]["file"], weights_only=True),
        "tables": {
            entry["table"]: torch.load(folder / entry["file"], weights_only=True)
            for entry in manifest["tables"]
        },
    }


def apply_incremental(export: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`export` (loaded, of step S) updated by the incremental export in `folder` (since S)."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["kind"] != "incremental" or manifest["since"] != export["step"]:
        raise ValueError(f"{folder} does not apply to an export of step {export['step']}")
    tables: dict[int, dict[str, torch.Tensor]] = {}
    for entry in manifest["tables"]:
        delta = torch.load(folder / entry["file"], weights_only=True)
        table = export["tables"][entry["table"]]
        replaced = torch.isin(table["ids"], torch.cat([delta["ids"], delta["evicted"]]))
        ids = torch.cat([table["ids"][~replaced], delta["ids"]])
        rows = torch.cat([table["rows"][~replaced], delta["rows"]])
        order = torch.argsort(ids)
        tables[entry["table"]] = {"ids": ids[order], "rows": rows[order]}
    return {
        "step": manifest["step"],
        "dense": torch.load(folder / manifest["dense"]["file"], weights_only=True),
        "tables": tables,
    }


def lookup(
    table: dict[str, torch.Tensor], ids: torch.Tensor, default: torch.Tensor
) -> torch.Tensor:
    """Rows of `ids` (any shape) from a loaded table; `default` where it holds no row for an id."""
    if len(table["ids"]) == 0:
        return default.expand(*ids.shape, len(default)).clone()
    at = torch.searchsorted(table["ids"], ids).clamp(max=len(table["ids"]) - 1)
    found = (table["ids"][at] == ids).unsqueeze(-1)
    return torch.where(found, table["rows"][at], default)
