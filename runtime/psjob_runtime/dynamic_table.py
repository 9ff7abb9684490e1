"""What every process agrees on about a dynamic table: options, routing and initial rows.

A dynamic table (`session.dynamic_embedding(dim=...)`) takes any int64 id but one and keeps a row
per distinct id, with no collisions. Ids go to servers by a mixing hash, not by id % S: hashed
64-bit ids, consecutive ids and the skewed ids of a Zipf stream all spread evenly, since
splitmix64's finaliser turns any input pattern into well-spread bits. A row's initial values
depend only on its id and table, never on the server count, so training agrees on 1, 2 or 3
servers and a re-sliced checkpoint stays valid. The options bound what a server keeps: an
admission count, a TTL in the table's steps and a row capacity per server (dynamic_shard.py).
"""

from dataclasses import dataclass

import torch

from psjob_runtime import hashing
from psjob_runtime.training import MAX_INT32

RESERVED_ID = -(1 << 63)
"""The one int64 a dynamic table refuses as an id (-2**63): servers mark free slots with it and
detect a message cut short by it (as HierarchicalKV and TFRA reserve empty-key values)."""
_ROUTE_SALT = 0x5EED
_INIT_SALT = 0x1D5
_COLUMN_STEP = 0x9E3779B97F4A7C15 - (1 << 64)
_COLUMN_MIX = 0xD6E8FEB86659FD93 - (1 << 64)


@dataclass(frozen=True)
class DynamicOptions:
    """How many rows a server keeps of one dynamic table (every field optional)."""

    admit_after: int = 0
    """Pushes that must hold an id before it gets a row (0 or 1: from its first push)."""
    ttl_steps: int | None = None
    """A row not updated during the table's last `ttl_steps` steps is removed."""
    max_rows_per_server: int | None = None
    """Rows one server keeps at most; the least recently updated go first."""

    def __post_init__(self) -> None:
        if not 0 <= self.admit_after <= MAX_INT32:
            raise ValueError(f"admit_after must be in 0..{MAX_INT32}, got {self.admit_after}")
        for name in ("ttl_steps", "max_rows_per_server"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_INT32:
                raise ValueError(f"{name} must be in 1..{MAX_INT32} or None, got {value}")

    def stricter(self, bounds: "DynamicOptions") -> "DynamicOptions":
        """These options with `bounds` (spec.training.embeddings) applied: the stricter of each
        wins, an unset value bounding nothing (the larger admission count, the shorter TTL, the
        smaller capacity)."""
        return DynamicOptions(
            admit_after=max(self.admit_after, bounds.admit_after),
            ttl_steps=_smaller(self.ttl_steps, bounds.ttl_steps),
            max_rows_per_server=_smaller(self.max_rows_per_server, bounds.max_rows_per_server),
        )

    def as_ints(self) -> list[int]:
        """The three options as they travel in a declaration (0: unset)."""
        return [self.admit_after, self.ttl_steps or 0, self.max_rows_per_server or 0]

    @staticmethod
    def from_ints(values: list[int]) -> "DynamicOptions":
        admit_after, ttl, capacity = values
        return DynamicOptions(admit_after, ttl or None, capacity or None)


def _smaller(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    return first if second is None else min(first, second)


@dataclass(frozen=True)
class DynamicTableSpec:
    """What every process must agree on about one dynamic table."""

    table: int
    dim: int
    init_scale: float
    options: DynamicOptions

    def __str__(self) -> str:
        return f"dynamic table {self.table} (dim {self.dim})"


def route(ids: torch.Tensor, num_servers: int) -> torch.Tensor:
    """The server of each id: splitmix64(id) without its sign bit, modulo the server count."""
    return hashing.shift_right(hashing.mix64(ids, _ROUTE_SALT), 1) % num_servers


def initial_rows(ids: torch.Tensor, spec: DynamicTableSpec) -> torch.Tensor:
    """Uniform(-scale, scale) rows of `ids`, computed from each id alone (len(ids) x dim).

    splitmix64 of the id and table, then per column one multiply-xorshift round of that value
    plus the column times the golden ratio: a full hash per id, a cheap one per value (servers
    compute the rows of every new id a batch brings, on its lookup and on its first push)."""
    base = hashing.mix64(ids, _INIT_SALT + spec.table)
    x = base.unsqueeze(1) + torch.arange(spec.dim) * _COLUMN_STEP
    x = (x ^ hashing.shift_right(x, 32)) * _COLUMN_MIX
    rows = hashing.shift_right(x, 40).to(torch.float32).mul_(2 * spec.init_scale / (1 << 24))
    return rows.sub_(spec.init_scale)
