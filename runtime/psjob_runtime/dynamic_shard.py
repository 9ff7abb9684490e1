"""A server's shard of a dynamic table: a row per id it has admitted, bounded by the options.

Every operation works on a request's ids at once (id_index.py); nothing loops over ids. What a
shard does, with `step` the table's update count on this server (one per applied push in async
and ssp mode, one per round in sync mode; the same on every server):

- Lookup (SPARSE_PULL) changes nothing. An id with a row gets it; an id without one gets its
  initial values (a hash of the id, dynamic_table.initial_rows) when admission is off, or the
  default vector (zeros) while it waits for admission.
- Push (the gradient of a step): each id's count grows by the pushes that held it. With
  `admit_after` k >= 2 an id without a row is only counted (its gradient dropped) until its k-th
  push, which creates its row from its initial values; that push's gradient is dropped too, as
  it was computed against the default vector. Without admission (k <= 1) a push creates the row
  from its initial values and applies the gradient, exactly as nn.Embedding would.
- Capacity (`max_rows_per_server`): rows that a push would add beyond it evict the least
  recently updated rows first (among rows last updated at the same step, the smallest ids);
  rows this push updates are never evicted, and new rows that still find no room (the push
  alone holds more new ids than the capacity leaves) are not created: smallest ids first.
  Ids waiting for admission are bounded the same way by their last push.
- TTL (`ttl_steps` t): after the push of step s, rows last updated at step s - t or before are
  removed, and so are waiting ids last pushed then. A removed id starts over: count 0,
  initial values.

The row pool's memory follows the rows in use (see id_index.py); optimizer state lives in the
same pool, so it is removed and reused with its row.
"""

import threading
from collections.abc import Callable
from typing import Any

import torch

from psjob_runtime.dynamic_table import (
    RESERVED_ID,
    DynamicOptions,
    DynamicTableSpec,
    initial_rows,
    route,
)
from psjob_runtime.id_index import IdIndex
from psjob_runtime.sparse_optimizer import SparseOptimizer, build_sparse_optimizer
from psjob_runtime.training import OptimizerSettings

MAX_REQUEST_IDS = 1 << 22
"""Ids one request may carry to one server: a batch's unique ids per server stay far below."""
MAX_REQUEST_VALUES = 1 << 24
"""Float32 values (ids x dim) of one request's rows: 64 MiB, held per worker until its
PUSH_PULL (a fixed table's requests are bounded by its shard, which fits the server)."""
_COUNT_LIMIT = (1 << 31) - 1
"""Counts and steps are kept as int32 (memory per row); a count saturates here."""

MemoryCheck = Callable[[str, int], None]
"""Called with a description and the bytes a table's pool would need before it grows; raises
to refuse (capacity.CapacityError)."""


class DynamicShard:
    """Rows, optimizer state, counters and lock of one dynamic table on one server."""

    def __init__(
        self,
        spec: DynamicTableSpec,
        server: int,
        num_servers: int,
        settings: OptimizerSettings,
        bounds: DynamicOptions,
        memory_check: MemoryCheck | None = None,
    ):
        self.spec = spec
        self.server = server
        self.num_servers = num_servers
        self.options = spec.options.stricter(bounds)
        """What this server enforces: the table's own options under spec.training's bounds."""
        self.lock = threading.Lock()
        # Built on an empty shape only to learn its state's names; the pool holds the state.
        self.optimizer: SparseOptimizer = build_sparse_optimizer(settings, torch.Size([0, 0]))
        columns: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "rows": ((spec.dim,), torch.float32),
            "counts": ((), torch.int32),
            "last_update": ((), torch.int32),
        }
        for name in self.optimizer.state:
            columns[name] = ((spec.dim,), torch.float32)
        what = f"{spec} on server {server}"
        check = memory_check
        self.index = IdIndex(columns, None if check is None else lambda size: check(what, size))
        self.pending = IdIndex(
            {"counts": ((), torch.int32), "last_seen": ((), torch.int32)},
            None if check is None else lambda size: check(f"{what} (ids awaiting admission)", size),
        )
        self._link_state()

    @property
    def admits(self) -> bool:
        """Whether ids wait for admission (admit_after >= 2)."""
        return self.options.admit_after >= 2

    @property
    def held_rows(self) -> int:
        return self.index.live

    @property
    def held_bytes(self) -> int:
        """Resident bytes of the pools and indexes (slots never used are not resident)."""
        return self.index.resident_bytes + self.pending.resident_bytes

    def float_tensors(self) -> list[torch.Tensor]:
        """The rows in use and their optimizer state: what must be finite before a checkpoint."""
        with self.lock:
            slots = self.index.live_slots()
            names = ["rows", *self.optimizer.state]
            return [self.index.columns[name].index_select(0, slots) for name in names]

    def _link_state(self) -> None:
        """Point the optimizer at the pool's state columns (after they were reallocated)."""
        for name in self.optimizer.state:
            self.optimizer.state[name] = self.index.columns[name]

    # --- requests ----------------------------------------------------------------------------

    def misplaced_ids(self, ids: torch.Tensor) -> str | None:
        """What is wrong with `ids` for this shard, or None when every one is its own."""
        if not ids.numel():
            return None
        if bool((ids == RESERVED_ID).any()):
            return f"the reserved id {RESERVED_ID} (no table stores it)"
        if bool((route(ids, self.num_servers) != self.server).any()):
            return (
                f"ids of another server's shard (server {self.server} of {self.num_servers} "
                "holds the ids that dynamic_table.route sends it)"
            )
        return None

    def max_request_ids(self) -> int:
        return min(MAX_REQUEST_IDS, MAX_REQUEST_VALUES // self.spec.dim)

    def gather(self, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The rows of `ids` as a lookup sees them (see the module docstring), into `out`."""
        with self.lock:
            slots, _ = self.index.find(ids)
            if self.index.live:
                torch.index_select(self.index.columns["rows"], 0, slots.clamp_min(0), out=out)
        missing = torch.nonzero(slots < 0).view(-1)
        if missing.numel():
            fill = initial_rows(ids[missing], self.spec) if not self.admits else None
            out.index_copy_(0, missing, fill if fill is not None else out[missing].zero_())
        return out

    def apply(self, ids: torch.Tensor, grads: torch.Tensor, divisor: int = 1) -> None:
        """One optimizer step from a push's row gradients (duplicate ids summed, then divided
        by `divisor`, as the fixed tables do); counts, admission, capacity and TTL with it."""
        unique, inverse, pushes = torch.unique(ids, return_inverse=True, return_counts=True)
        summed = torch.zeros(len(unique), self.spec.dim).index_add_(0, inverse, grads)
        if divisor != 1:
            summed.div_(divisor)
        with self.lock:
            step = self.optimizer.step + 1
            slots, _ = self.index.find(unique)
            held = slots >= 0
            known = slots[held]
            self._touch(known, pushes[held], step)
            new_ids, new_pushes, new_grads = unique[~held], pushes[~held], summed[~held]
            if self.admits:
                new_ids, new_pushes = self._admit(new_ids, new_pushes, step)
                new_grads = new_grads[:0]  # computed against the default vector: dropped
            room = self._room(self.index, step, len(new_ids))
            created = self._create(new_ids[:room], new_pushes[:room], step)
            new_grads = new_grads[:room]
            self.optimizer.update(
                self.index.columns["rows"],
                torch.cat([known, created[: len(new_grads)]]),
                torch.cat([summed[held], new_grads]),
            )
            self._expire(step)

    # --- counting, admission, eviction -------------------------------------------------------

    def _touch(self, slots: torch.Tensor, pushes: torch.Tensor, step: int) -> None:
        counts = self.index.columns["counts"]
        raised = counts.index_select(0, slots).long() + pushes
        counts.index_copy_(0, slots, raised.clamp_max(_COUNT_LIMIT).int())
        self.index.columns["last_update"].index_fill_(0, slots, _stamp(step))

    def _admit(
        self, ids: torch.Tensor, pushes: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Count `ids` (no row yet); return those whose count reached admission, with it."""
        waiting = self.pending
        slots, _ = waiting.find(ids)
        held = slots >= 0
        counts = torch.zeros(len(ids), dtype=torch.int64)
        counts[held] = waiting.columns["counts"].index_select(0, slots[held]).long()
        counts += pushes
        ready = counts >= self.options.admit_after
        waiting.remove(slots[held & ready])
        stay = held & ~ready
        waiting.columns["counts"].index_copy_(
            0, slots[stay], counts[stay].clamp_max(_COUNT_LIMIT).int()
        )
        waiting.columns["last_seen"].index_fill_(0, slots[stay], _stamp(step))
        fresh = ~held & ~ready
        room = self._room(waiting, step, int(fresh.sum()))
        fresh_ids, fresh_counts = ids[fresh][:room], counts[fresh][:room]
        added = waiting.insert(fresh_ids)
        waiting.columns["counts"].index_copy_(0, added, fresh_counts.clamp_max(_COUNT_LIMIT).int())
        waiting.columns["last_seen"].index_fill_(0, added, _stamp(step))
        return ids[ready], counts[ready]

    def _create(self, ids: torch.Tensor, counts: torch.Tensor, step: int) -> torch.Tensor:
        """Rows for `ids` from their initial values, optimizer state zero; their slots."""
        slots = self.index.insert(ids)
        self._link_state()
        columns = self.index.columns
        columns["rows"].index_copy_(0, slots, initial_rows(ids, self.spec))
        columns["counts"].index_copy_(0, slots, counts.clamp_max(_COUNT_LIMIT).int())
        columns["last_update"].index_fill_(0, slots, _stamp(step))
        for name in self.optimizer.state:
            columns[name].index_fill_(0, slots, 0.0)
        return slots

    def _room(self, index: IdIndex, step: int, wanted: int) -> int:
        """How many of `wanted` new entries fit, after evicting (up to what they need) the
        least recently stamped entries not stamped `step`; ties: smallest ids first."""
        capacity = self.options.max_rows_per_server
        free = wanted if capacity is None else capacity - index.live
        if wanted <= free:
            return wanted
        return free + self._evict(index, wanted - free, step)

    def _evict(self, index: IdIndex, count: int, step: int) -> int:
        """Remove up to `count` entries stamped before `step`, least recent first (ties:
        smallest ids first); how many were removed."""
        stamps = index.columns["last_update" if index is self.index else "last_seen"]
        slots = index.live_slots()
        stamped = stamps.index_select(0, slots).long()
        old, old_stamps = slots[stamped < step], stamped[stamped < step]
        evict = min(count, len(old))
        if evict == len(old):
            index.remove(old)
        elif evict > 0:
            threshold = int(torch.kthvalue(old_stamps, evict).values)
            below = old[old_stamps < threshold]
            tied = old[old_stamps == threshold]
            order = torch.argsort(index.ids.index_select(0, tied))[: evict - len(below)]
            index.remove(torch.cat([below, tied[order]]))
        return max(0, evict)

    def _expire(self, step: int) -> None:
        ttl = self.options.ttl_steps
        if ttl is None:
            return
        for index, stamp in ((self.index, "last_update"), (self.pending, "last_seen")):
            slots = index.live_slots()
            stamps = index.columns[stamp].index_select(0, slots)
            index.remove(slots[stamps <= step - ttl])

    # --- checkpoints -------------------------------------------------------------------------

    def adopt(self, share: dict[str, Any], step: int) -> None:
        """Take this server's share of a checkpointed table (reslice.dynamic_share), then apply
        the options in force now: a capacity or TTL tighter than the checkpoint's trims it."""
        with self.lock:
            self.optimizer.step = step
            slots = self.index.insert(share["ids"])
            self._link_state()
            columns = self.index.columns
            columns["rows"].index_copy_(0, slots, share["rows"])
            for name in self.optimizer.state:
                columns[name].index_copy_(0, slots, share["state"][name])
            columns["counts"].index_copy_(0, slots, _int32(share["counts"]))
            columns["last_update"].index_copy_(0, slots, _int32(share["last_update"]))
            waiting = self.pending.insert(share["pending_ids"])
            self.pending.columns["counts"].index_copy_(0, waiting, _int32(share["pending_counts"]))
            self.pending.columns["last_seen"].index_copy_(
                0, waiting, _int32(share["pending_last_seen"])
            )
            self._trim()

    def reconfigure(self, spec: DynamicTableSpec, bounds: DynamicOptions) -> None:
        """Take the options a restarted job's code declares (same table, dim and init_scale)
        for a restored shard, under the job's bounds; trim to them."""
        with self.lock:
            self.spec = spec
            self.options = spec.options.stricter(bounds)
            self._trim()

    def _trim(self) -> None:
        """Evict beyond the capacity and expire by the TTL, as after the last step (lock held)."""
        step = self.optimizer.step
        capacity = self.options.max_rows_per_server
        if capacity is not None:
            for index in (self.index, self.pending):
                self._evict(index, index.live - capacity, step + 1)
        self._expire(step)

    def snapshot(self) -> dict[str, Any]:
        """This shard as a checkpoint's table entry (checkpoint_contents: kind "dynamic")."""
        with self.lock:
            slots = self.index.live_slots()
            columns = self.index.columns
            waiting = self.pending.live_slots()
            return {
                "kind": "dynamic",
                "table": self.spec.table,
                "dim": self.spec.dim,
                "step": self.optimizer.step,
                "init_scale": self.spec.init_scale,
                "options": {
                    "admit_after": self.spec.options.admit_after,
                    "ttl_steps": self.spec.options.ttl_steps,
                    "max_rows_per_server": self.spec.options.max_rows_per_server,
                },
                "ids": self.index.ids.index_select(0, slots),
                "rows": columns["rows"].index_select(0, slots),
                "state": {
                    name: columns[name].index_select(0, slots) for name in self.optimizer.state
                },
                "counts": columns["counts"].index_select(0, slots).long(),
                "last_update": columns["last_update"].index_select(0, slots).long(),
                "pending_ids": self.pending.ids.index_select(0, waiting),
                "pending_counts": self.pending.columns["counts"].index_select(0, waiting).long(),
                "pending_last_seen": self.pending.columns["last_seen"]
                .index_select(0, waiting)
                .long(),
            }


def _stamp(step: int) -> int:
    return min(step, _COUNT_LIMIT)


def _int32(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(0, _COUNT_LIMIT).int()
