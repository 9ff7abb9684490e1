"""What a checkpoint file must hold, checked before a server adopts any of it.

A file can be whole and still wrong: written by another job that shares the directory, by an
older psjob, or edited by hand. A restoring server cuts tensors by the offsets a file records
and hands them to optimizers, so a wrong key ends in a KeyError and a wrong shape is adopted
silently (a 10-element slice for a 1000-element model). Every key, type, dtype and shape is
therefore checked against what the files say about themselves (server k of K holds its balanced
slice of `total` elements and its rows of each table) and against each other, before anything is
used; a file that fails is passed over like a truncated one. The checks read only the pickled
header and tensor metadata, never the memory-mapped data.

Keys of one server's file (see ParameterServer._snapshot), format 3:

    format, owner, server, servers, step, updates, worker_steps
    dense:  total, start, stop, values, state {name: 0-d or per-element tensor}
    tables: one entry per table, in table order, each with
        kind: "fixed" or "dynamic"; table (int); dim (int); step (int: the table's update count
        on this server, which lazy Adam's bias correction and a dynamic table's TTL count in)
      kind "fixed" (rows of ids id % servers == server, at local row id // servers):
        num_rows (int); rows float32 [shard rows, dim]; state {name: float32 like rows}
      kind "dynamic" (the ids that splitmix64 routes to this server, see dynamic_table.route):
        init_scale (float);
        options {admit_after: int, ttl_steps: int | None, max_rows_per_server: int | None}:
            the table's own options as session.dynamic_embedding() declared them (the bounds
            of spec.training.embeddings are applied on top when a server serves the table);
        ids          int64 [n]        every id that has a row on this server, in no order;
        rows         float32 [n, dim] their rows;
        state        {name: float32 [n, dim]} the optimizer's per-row state (sgd: none,
                     adagrad: sum, adam: exp_avg and exp_avg_sq);
        counts       int64 [n]        pushes that held the id (admission count, incl. those
                     before its row was created);
        last_update  int64 [n]        the table's step of the row's last update;
        pending_ids, pending_counts, pending_last_seen  int64 [m]: ids counted for admission
                     but not yet admitted (no row), their counts and the step they were last
                     pushed; empty without admission.

Format 2 files (tables without `kind`, all fixed) are still read.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from psjob_runtime.sharding import balanced_slices
from psjob_runtime.table_shard import shard_rows

FORMAT = 3
"""3: tables carry their kind (fixed or dynamic). 2: files carry their owner (read: all their
tables are fixed). Format 1 files (no owner) are passed over."""
READABLE = (2, FORMAT)
DTYPE = torch.float32
"""Every float tensor a server holds: parameters, rows and optimizer state."""
COUNTERS = torch.int64
"""A dynamic table's ids, counts and steps."""
OPTION_KEYS = ("admit_after", "ttl_steps", "max_rows_per_server")


class UnusableCheckpointError(ValueError):
    """A file or step that must be passed over; the message names the field and what it holds."""


def check_file(
    loaded: object, owner: str, server: int, num_servers: int, step: int
) -> dict[str, Any]:
    """`loaded` as server `server` of `num_servers` of job `owner` wrote it for `step`."""
    record = _mapping(loaded, "the file")
    if record.get("format") not in READABLE:
        raise UnusableCheckpointError(
            f"not a psjob checkpoint of format {' or '.join(map(str, READABLE))} "
            f"(format is {record.get('format')!r})"
        )
    if record.get("owner") != owner:
        raise UnusableCheckpointError(
            f"it belongs to job {record.get('owner')!r}, not to this job {owner!r}"
        )
    for key, value in {"server": server, "servers": num_servers, "step": step}.items():
        if record.get(key) != value:
            raise UnusableCheckpointError(f"{key} is {record.get(key)!r}, expected {value}")
    _count(record.get("updates"), "updates")
    worker_steps = record.get("worker_steps")
    if not isinstance(worker_steps, list) or not worker_steps:
        raise UnusableCheckpointError(f"worker_steps is {_kind(worker_steps)}, expected a list")
    for index, worker_step in enumerate(worker_steps):
        _count(worker_step, f"worker_steps[{index}]")
    _check_dense(_mapping(record.get("dense"), "dense"), server, num_servers)
    tables = record.get("tables")
    if not isinstance(tables, list):
        raise UnusableCheckpointError(f"tables is {_kind(tables)}, expected a list")
    for index, table in enumerate(tables):
        _check_table(_mapping(table, f"tables[{index}]"), index, server, num_servers)
    ids = [table["table"] for table in tables]
    if len(set(ids)) != len(ids):
        raise UnusableCheckpointError(f"tables holds table ids {ids}, each must appear once")
    return record


def check_together(files: Sequence[Mapping[str, Any]]) -> None:
    """The files of one step describe one model: same size, tables and optimizer state names.

    Re-slicing joins pieces by name and position, so a file that disagrees would make a
    server's share silently shorter or mix two tables' rows.
    """
    first = files[0]
    for saved in files[1:]:
        where = f"server {saved['server']} of {saved['servers']}"
        if saved["dense"]["total"] != first["dense"]["total"]:
            raise UnusableCheckpointError(
                f"{where} has dense.total {saved['dense']['total']}, "
                f"server 0 has {first['dense']['total']}"
            )
        if _state_layout(saved["dense"]["state"]) != _state_layout(first["dense"]["state"]):
            raise UnusableCheckpointError(
                f"{where} has dense.state {_state_layout(saved['dense']['state'])}, "
                f"server 0 has {_state_layout(first['dense']['state'])}"
            )
        if _tables_layout(saved) != _tables_layout(first):
            raise UnusableCheckpointError(
                f"{where} has tables {_tables_layout(saved)}, server 0 has {_tables_layout(first)}"
            )


def _check_dense(dense: Mapping[str, Any], server: int, num_servers: int) -> None:
    total = _count(dense.get("total"), "dense.total", minimum=num_servers)
    part = balanced_slices(total, num_servers)[server]
    for key, expected in (("start", part.start), ("stop", part.stop)):
        if dense.get(key) != expected:
            raise UnusableCheckpointError(
                f"dense.{key} is {dense.get(key)!r}, but server {server} of {num_servers} holds "
                f"elements [{part.start}, {part.stop}) of {total}"
            )
    _tensor(dense.get("values"), "dense.values", (part.numel,))
    for name, value in _mapping(dense.get("state"), "dense.state").items():
        _tensor(value, f"dense.state.{name}", (part.numel,), ())


def _check_table(table: Mapping[str, Any], index: int, server: int, num_servers: int) -> None:
    where = f"tables[{index}]"
    kind = table.get("kind", "fixed")
    if kind == "dynamic":
        _check_dynamic(table, where)
        return
    if kind != "fixed":
        raise UnusableCheckpointError(f"{where}.kind is {kind!r}, expected 'fixed' or 'dynamic'")
    _count(table.get("table"), f"{where}.table")
    num_rows = _count(table.get("num_rows"), f"{where}.num_rows", minimum=1)
    dim = _count(table.get("dim"), f"{where}.dim", minimum=1)
    _count(table.get("step"), f"{where}.step")
    shape = (shard_rows(num_rows, server, num_servers), dim)
    _tensor(table.get("rows"), f"{where}.rows", shape)
    for name, value in _mapping(table.get("state"), f"{where}.state").items():
        _tensor(value, f"{where}.state.{name}", shape)


def _check_dynamic(table: Mapping[str, Any], where: str) -> None:
    """A dynamic table's entry: counters as long as its ids, rows and state as wide as dim.
    Which ids a server holds is checked where they are re-sliced (reslice.dynamic_share)."""
    _count(table.get("table"), f"{where}.table")
    dim = _count(table.get("dim"), f"{where}.dim", minimum=1)
    _count(table.get("step"), f"{where}.step")
    scale = table.get("init_scale")
    if not isinstance(scale, float) or not math.isfinite(scale):
        raise UnusableCheckpointError(f"{where}.init_scale is {scale!r}, expected a finite float")
    options = _mapping(table.get("options"), f"{where}.options")
    if sorted(options) != sorted(OPTION_KEYS):
        raise UnusableCheckpointError(
            f"{where}.options has keys {sorted(options)}, expected {sorted(OPTION_KEYS)}"
        )
    _count(options["admit_after"], f"{where}.options.admit_after")
    for key in OPTION_KEYS[1:]:
        if options[key] is not None:
            _count(options[key], f"{where}.options.{key}", minimum=1)
    rows = _length(table.get("ids"), f"{where}.ids")
    for key in ("counts", "last_update"):
        _tensor(table.get(key), f"{where}.{key}", (rows,), dtype=COUNTERS)
    _tensor(table.get("rows"), f"{where}.rows", (rows, dim))
    for name, value in _mapping(table.get("state"), f"{where}.state").items():
        _tensor(value, f"{where}.state.{name}", (rows, dim), (rows,))
    waiting = _length(table.get("pending_ids"), f"{where}.pending_ids")
    for key in ("pending_counts", "pending_last_seen"):
        _tensor(table.get(key), f"{where}.{key}", (waiting,), dtype=COUNTERS)


def _length(value: object, where: str) -> int:
    """The length of a 1-d int64 tensor of ids."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        _tensor(value, where, (len(value),), dtype=COUNTERS)
        return len(value)
    raise UnusableCheckpointError(f"{where} is {_kind(value)}, expected a 1-d int64 tensor")


def _state_layout(state: Mapping[str, torch.Tensor]) -> list[tuple[str, int]]:
    return sorted((name, value.dim()) for name, value in state.items())


def _tables_layout(saved: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """What every file must agree on about each table (not its rows: those differ)."""
    return [
        (table["table"], table["num_rows"], table["dim"], sorted(table["state"]))
        if table.get("kind", "fixed") == "fixed"
        else (
            table["table"],
            "dynamic",
            table["dim"],
            table["init_scale"],
            table["options"],
            sorted(table["state"]),
        )
        for table in saved["tables"]
    ]


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UnusableCheckpointError(f"{where} is {_kind(value)}, expected a dictionary")
    return value


def _count(value: object, where: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UnusableCheckpointError(f"{where} is {value!r}, expected an integer >= {minimum}")
    return value


def _tensor(
    value: object, where: str, *shapes: tuple[int, ...], dtype: torch.dtype = DTYPE
) -> None:
    if not isinstance(value, torch.Tensor):
        raise UnusableCheckpointError(f"{where} is {_kind(value)}, expected a tensor")
    if value.dtype != dtype:
        raise UnusableCheckpointError(f"{where} has dtype {value.dtype}, expected {dtype}")
    if tuple(value.shape) not in shapes:
        expected = " or ".join(str(list(shape)) for shape in shapes)
        raise UnusableCheckpointError(f"{where} has shape {list(value.shape)}, expected {expected}")


def _kind(value: object) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"
