"""Cut a server's share out of checkpoint files written by any number of servers.

A job may restart with a different server count than the one that wrote its checkpoint. The dense
vector was split into contiguous balanced slices and tables by id modulo the server count, so a
new server takes the overlapping ranges of the old slices, and the rows of the old shards whose
ids now map to it (by id modulo the count for fixed tables, by dynamic_table.route for dynamic
ones). Per-element optimizer state moves with its elements; scalar state (a step
count) is the same in every file and is taken from the first.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from psjob_runtime.dynamic_table import route
from psjob_runtime.sharding import Slice

SavedServer = Mapping[str, Any]
"""One server's checkpoint file as loaded (see checkpoint.snapshot for the keys)."""


def dense_share(files: Sequence[SavedServer], part: Slice) -> tuple[torch.Tensor, dict[str, Any]]:
    """Values and optimizer state of elements [part.start, part.stop) from every file's slice."""
    values: list[torch.Tensor] = []
    per_element: dict[str, list[torch.Tensor]] = {}
    scalars: dict[str, Any] = {}
    for saved in sorted(files, key=lambda f: int(f["dense"]["start"])):
        dense = saved["dense"]
        start, stop = max(part.start, dense["start"]), min(part.stop, dense["stop"])
        for name, value in dense["state"].items():
            if value.dim() == 0:
                scalars.setdefault(name, value.clone())
        if start >= stop:
            continue
        window = slice(start - dense["start"], stop - dense["start"])
        values.append(dense["values"][window])
        for name, value in dense["state"].items():
            if value.dim() == 1:
                per_element.setdefault(name, []).append(value[window])
    state: dict[str, Any] = {name: torch.cat(parts) for name, parts in per_element.items()}
    state.update(scalars)
    return torch.cat(values), state


def table_share(
    saved_tables: Sequence[Mapping[str, Any]], server: int, num_servers: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rows and per-row state of one table for server `server` of `num_servers`.

    `saved_tables` holds the table's entry from each old file, in old server order: old server k
    of K held ids k, k+K, k+2K, ...; the new server takes ids with id % num_servers == server.
    """
    old_servers = len(saved_tables)
    if old_servers == num_servers:
        saved = saved_tables[server]
        return saved["rows"].clone(), {k: v.clone() for k, v in saved["state"].items()}
    first = saved_tables[0]
    num_rows, dim = int(first["num_rows"]), int(first["dim"])
    count = max(0, (num_rows - server + num_servers - 1) // num_servers)
    rows = torch.empty(count, dim)
    state = {name: torch.empty(count, dim) for name in first["state"]}
    for old, saved in enumerate(saved_tables):
        ids = torch.arange(len(saved["rows"])) * old_servers + old
        mine = ids % num_servers == server
        target = ids[mine] // num_servers
        rows[target] = saved["rows"][mine]
        for name, value in saved["state"].items():
            state[name][target] = value[mine]
    return rows, state


DYNAMIC_ROW_KEYS = ("ids", "rows", "counts", "last_update")
DYNAMIC_PENDING_KEYS = ("pending_ids", "pending_counts", "pending_last_seen")


def dynamic_share(
    saved_tables: Sequence[Mapping[str, Any]], server: int, num_servers: int
) -> dict[str, Any]:
    """The rows (with state and counters) and the ids awaiting admission of one dynamic table
    that route to server `server` of `num_servers`, from the table's entry in every old file.

    Raises ValueError when an id appears twice: files of one step never hold the same id twice.
    """
    share: dict[str, Any] = {}
    for keys, ids_key in ((DYNAMIC_ROW_KEYS, "ids"), (DYNAMIC_PENDING_KEYS, "pending_ids")):
        ids = torch.cat([saved[ids_key] for saved in saved_tables])
        mine = route(ids, num_servers) == server
        for key in keys:
            share[key] = torch.cat([saved[key] for saved in saved_tables])[mine]
        if len(torch.unique(share[ids_key])) != len(share[ids_key]):
            raise ValueError(f"{ids_key} holds an id twice")
    names = saved_tables[0]["state"]
    ids = torch.cat([saved["ids"] for saved in saved_tables])
    mine = route(ids, num_servers) == server
    share["state"] = {
        name: torch.cat([saved["state"][name] for saved in saved_tables])[mine] for name in names
    }
    return share
