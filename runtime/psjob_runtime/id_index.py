"""A vectorised hash index from int64 ids to slots of a row pool, in plain torch tensors.

A dynamic table's server looks up, inserts and removes thousands of ids per request; a Python
loop over them would cost microseconds each. This index works on whole batches: open addressing
with linear probing, where every round gathers a window of buckets for all unresolved ids at
once, so a batch costs a few tensor operations per round whatever its size, and the rounds are
bounded by the longest probe (short: at most half the buckets are ever in use).

Memory stays close to the rows it serves: a bucket holds only an int32 slot (the id is read from
the pool's `ids` column), the pool grows by an eighth at a time, and freed slots are reused
before the pool grows. Columns (rows, optimizer state, counters) live beside `ids` in the pool
and grow with it, so a slot addresses them all. Removal leaves a tombstone; a rebuild drops
them once live ids and tombstones together would fill half the buckets.
"""

from collections.abc import Callable

import torch

from psjob_runtime import hashing
from psjob_runtime.capacity import CapacityError
from psjob_runtime.dynamic_table import RESERVED_ID
from psjob_runtime.training import MAX_INT32

EMPTY, REMOVED = -1, -2
"""Bucket values that are not slots: never used, and used by an id since removed."""
_WINDOW = 8
"""Buckets gathered per id and round after the first, which looks at the home bucket only (at
most half the buckets in use, most ids sit there); 8 resolves nearly all the rest in one more
round without gathering much more than their probe sequences (4, 16 and 32 measured slower)."""
_MIN_BUCKETS = 1 << 10
_MIN_SLOTS = 1 << 10
_SALT = 0xB0C4E7
"""Not the routing hash's salt: a server's ids share their routing residue, and buckets chosen
by the same bits would leave most of them unused."""

Column = tuple[tuple[int, ...], torch.dtype]
"""A pool column's shape per slot and its dtype."""


class IdIndex:
    """Ids to slots, plus the pool's columns; not thread-safe (the table's lock guards it)."""

    def __init__(
        self,
        columns: dict[str, Column],
        before_growth: Callable[[int], None] | None = None,
    ):
        self.slot_bytes = (
            8
            + 4
            + sum(torch.empty(1, *shape, dtype=dtype).nbytes for shape, dtype in columns.values())
        )
        """Bytes of one slot: its id, its place in the free list and its columns."""
        self.before_growth = before_growth
        """Told the bytes that the slots wanted beyond those in use will fill, before the pool
        grows; may raise to refuse (the server's memory bound)."""
        self.buckets = torch.full((_MIN_BUCKETS,), EMPTY, dtype=torch.int32)
        self.ids = torch.empty(0, dtype=torch.int64)
        self.columns: dict[str, torch.Tensor] = {
            name: torch.empty(0, *shape, dtype=dtype) for name, (shape, dtype) in columns.items()
        }
        self.free = torch.empty(0, dtype=torch.int32)
        self.free_count = 0
        self.high = 0
        """Slots below this have been handed out at least once."""
        self.live = 0
        self.removed = 0

    @property
    def capacity(self) -> int:
        return len(self.ids)

    @property
    def resident_bytes(self) -> int:
        """What the index and the slots handed out so far occupy (untouched pages excluded)."""
        return self.buckets.nbytes + self.high * self.slot_bytes

    def live_slots(self) -> torch.Tensor:
        """Every slot that holds an id, ascending (int64)."""
        return torch.nonzero(self.ids[: self.high] != RESERVED_ID).view(-1)

    def _home(self, ids: torch.Tensor) -> torch.Tensor:
        return hashing.mix64(ids, _SALT) & (len(self.buckets) - 1)

    def find(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot, bucket) of each id, -1 for ids not held (int64 each)."""
        if not self.live:
            none = torch.full((len(ids),), -1, dtype=torch.int64)
            return none, none.clone()
        # The home bucket of every id first: it settles most of them in a dozen operations.
        home = self._home(ids)
        held = self.buckets.index_select(0, home).long()
        hit = (held >= 0) & (self.ids.index_select(0, held.clamp_min(0)) == ids)
        slots = torch.where(hit, held, -1)
        buckets = torch.where(hit, home, -1)
        active = torch.nonzero(~hit & (held != EMPTY)).view(-1)
        keys, position = ids.index_select(0, active), home.index_select(0, active) + 1
        while active.numel():
            where, held = self._window(position, _WINDOW)
            stored = self.ids.index_select(0, held.clamp_min(0).view(-1)).view(held.shape)
            hit = (held >= 0) & (stored == keys.unsqueeze(1))
            found = torch.nonzero(hit.any(1)).view(-1)
            at = found * _WINDOW + hit.index_select(0, found).int().argmax(1)
            mine = active.index_select(0, found)
            slots.index_copy_(0, mine, held.view(-1).index_select(0, at))
            buckets.index_copy_(0, mine, where.view(-1).index_select(0, at))
            # no id is stored past an empty bucket
            going = torch.nonzero(~hit.any(1) & ~(held == EMPTY).any(1)).view(-1)
            active, keys = active.index_select(0, going), keys.index_select(0, going)
            position = position.index_select(0, going) + _WINDOW
        return slots, buckets

    def _window(self, position: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `width` buckets from each position on: (bucket numbers, their int64 values)."""
        where = (position.unsqueeze(1) + torch.arange(width)) & (len(self.buckets) - 1)
        held = self.buckets.index_select(0, where.view(-1)).view(where.shape).long()
        return where, held

    def insert(self, ids: torch.Tensor) -> torch.Tensor:
        """Slots for unique `ids` that the index does not hold (the caller checked), int64."""
        count = len(ids)
        if not count:
            return torch.empty(0, dtype=torch.int64)
        if 2 * (self.live + self.removed + count) > len(self.buckets):
            self._rebuild(self.live + count)
        slots = self._allocate(count)
        self.ids[slots] = ids
        self._place(ids, slots)
        self.live += count
        return slots

    def remove(self, slots: torch.Tensor) -> None:
        """Forget the ids in `slots` (live, unique); their slots are reused first."""
        if not slots.numel():
            return
        _, buckets = self.find(self.ids[slots])
        self.buckets[buckets] = REMOVED
        self.ids[slots] = RESERVED_ID
        count = len(slots)
        self.free[self.free_count : self.free_count + count] = slots.to(torch.int32)
        self.free_count += count
        self.live -= count
        self.removed += count

    def _allocate(self, count: int) -> torch.Tensor:
        reused = min(count, self.free_count)
        fresh = count - reused
        if self.high + fresh > self.capacity:
            self._grow(self.high + fresh)
        taken = self.free[self.free_count - reused : self.free_count].long()
        self.free_count -= reused
        slots = torch.cat([taken, torch.arange(self.high, self.high + fresh)])
        self.high += fresh
        return slots

    def _grow(self, needed: int) -> None:
        """Twice the slots, allocated but not written: the kernel backs a page only when a slot
        on it is first used, so resident memory follows the slots in use, and each slot is
        copied about once however large the pool grows."""
        if needed > MAX_INT32:
            raise CapacityError(
                f"a dynamic table's server would hold {needed} entries, beyond the {MAX_INT32} "
                "its int32 slots address: set max_rows_per_server or add servers"
            )
        if self.before_growth is not None:
            self.before_growth((needed - self.high) * self.slot_bytes)
        size = max(needed, 2 * self.capacity, _MIN_SLOTS)
        self.ids = _extended(self.ids, size, self.high)
        self.free = _extended(self.free, size, self.free_count)
        for name, column in self.columns.items():
            self.columns[name] = _extended(column, size, self.high)

    def _rebuild(self, expected: int) -> None:
        """New buckets, tombstones dropped: at most half of them used by `expected` ids."""
        size = _MIN_BUCKETS
        while size < 2 * expected:
            size *= 2
        self.buckets = torch.full((size,), EMPTY, dtype=torch.int32)
        self.removed = 0
        slots = self.live_slots()
        self._place(self.ids[slots], slots)

    def _place(self, ids: torch.Tensor, slots: torch.Tensor) -> None:
        """Claim a free bucket for each id: the first along its probe sequence.

        Ids of one batch may claim the same bucket in one round: all write, one value stays,
        and the others go on probing after it."""
        values, position, width = slots, self._home(ids), 1
        while values.numel():
            where, held = self._window(position, width)
            free = held < 0
            some = free.any(1)
            at = (torch.arange(len(held)) * width + free.int().argmax(1))[some]
            target = where.view(-1).index_select(0, at)
            claim = values[some]
            self.buckets.index_copy_(0, target, claim.to(torch.int32))
            won = self.buckets.index_select(0, target).long() == claim
            reused = held.view(-1).index_select(0, at)[won]
            self.removed -= int((reused == REMOVED).sum())
            after = position + width
            after[some] = torch.where(won, target, target + 1)
            going = torch.ones_like(some)
            going[torch.nonzero(some).view(-1)[won]] = False
            values, position, width = values[going], after[going], _WINDOW


def _extended(tensor: torch.Tensor, size: int, used: int) -> torch.Tensor:
    """`tensor` in a new allocation of `size` rows, its first `used` rows copied, the rest not
    written (not resident until used)."""
    grown = torch.empty(size, *tensor.shape[1:], dtype=tensor.dtype)
    grown[:used] = tensor[:used]
    return grown
