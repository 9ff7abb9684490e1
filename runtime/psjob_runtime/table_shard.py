"""A server's shard of an embedding table: the rows whose id % S equals the server's index.

Tables are split by id, not in contiguous ranges: ids drawn from a skewed (Zipf) distribution
crowd at the low end, and a modulo split spreads those hot rows evenly, so no server carries the
head of every table. Row `id` lives on server `id % S` at local row `id // S`. A shard owns its
rows, the row-wise optimizer state and a lock, so pulls never see half-applied updates.
"""

import threading
from dataclasses import dataclass
from typing import Any

import torch

from psjob_runtime import hashing
from psjob_runtime.errors import PsjobError
from psjob_runtime.sparse_optimizer import SparseOptimizer, build_sparse_optimizer
from psjob_runtime.training import OptimizerSettings

_INIT_CHUNK_ROWS = 1 << 20
"""Rows initialised per batch of hashing: bounds the temporary int64 keys to 128 MB at dim 16."""


class TableMismatchError(PsjobError):
    """Workers (or a checkpoint) disagree about a table's shape; a restart would not help."""


@dataclass(frozen=True)
class TableSpec:
    """What every process must agree on about one table."""

    table: int
    num_rows: int
    dim: int

    def __str__(self) -> str:
        return f"table {self.table} ({self.num_rows} x {self.dim})"


def shard_rows(num_rows: int, server: int, num_servers: int) -> int:
    """How many rows of a `num_rows` table server `server` of `num_servers` holds."""
    return max(0, (num_rows - server + num_servers - 1) // num_servers)


def initial_rows(spec: TableSpec, server: int, num_servers: int, init_scale: float) -> torch.Tensor:
    """Uniform(-scale, scale) rows that depend only on the row's id, never on the server count."""
    count = shard_rows(spec.num_rows, server, num_servers)
    rows = torch.empty(count, spec.dim)
    columns = torch.arange(spec.dim)
    for start in range(0, count, _INIT_CHUNK_ROWS):
        local = torch.arange(start, min(count, start + _INIT_CHUNK_ROWS))
        keys = (local * num_servers + server).unsqueeze(1) * spec.dim + columns
        rows[start : start + len(local)] = hashing.uniform(keys, salt=spec.table)
    return rows.mul_(2 * init_scale).sub_(init_scale)


class TableShard:
    """Rows, optimizer state and lock of one table on one server."""

    def __init__(
        self,
        spec: TableSpec,
        server: int,
        num_servers: int,
        rows: torch.Tensor,
        optimizer: SparseOptimizer,
    ):
        self.spec = spec
        self.server = server
        self.num_servers = num_servers
        self.rows = rows
        self.optimizer = optimizer
        self.lock = threading.Lock()

    @staticmethod
    def create(
        spec: TableSpec,
        server: int,
        num_servers: int,
        settings: OptimizerSettings,
        init_scale: float,
    ) -> "TableShard":
        rows = initial_rows(spec, server, num_servers, init_scale)
        return TableShard(
            spec, server, num_servers, rows, build_sparse_optimizer(settings, rows.shape)
        )

    def misplaced_ids(self, ids: torch.Tensor) -> str | None:
        """What is wrong with global `ids` for this shard, or None when every one is its own.

        The server asks before it uses ids a peer sent: an id out of range or of another
        server's shard would read or write rows that do not exist here.
        """
        if not ids.numel():
            return None
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.spec.num_rows:
            return f"ids {low}..{high} outside {self.spec}"
        if bool((ids % self.num_servers != self.server).any()):
            return (
                f"ids of another server's shard (server {self.server} of {self.num_servers} "
                f"holds the ids with id % {self.num_servers} == {self.server})"
            )
        return None

    def max_request_ids(self) -> int:
        """Ids one request may carry to this shard: each once, so no more than its rows."""
        return self.held_rows

    @property
    def held_rows(self) -> int:
        return self.rows.shape[0]

    @property
    def held_bytes(self) -> int:
        return self.rows.nbytes + sum(t.nbytes for t in self.optimizer.state.values())

    def float_tensors(self) -> list[torch.Tensor]:
        """The rows and their optimizer state: what must be finite before a checkpoint."""
        return [self.rows, *self.optimizer.state.values()]

    def snapshot(self) -> dict[str, Any]:
        """This shard as a checkpoint's table entry (checkpoint_contents: kind "fixed")."""
        return {
            "kind": "fixed",
            "table": self.spec.table,
            "num_rows": self.spec.num_rows,
            "dim": self.spec.dim,
            "rows": self.rows,
            "state": self.optimizer.state,
            "step": self.optimizer.step,
        }

    def local_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Local rows of global `ids` (checked with `misplaced_ids` when they arrived)."""
        return ids // self.num_servers

    def gather(self, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The current rows of `ids` (global), copied into `out` (len(ids) x dim)."""
        index = self.local_index(ids)
        with self.lock:
            return torch.index_select(self.rows, 0, index, out=out)

    def apply(self, ids: torch.Tensor, grads: torch.Tensor, divisor: int = 1) -> None:
        """One optimizer step from row gradients: duplicates summed, then divided by `divisor`
        (the workers averaged in a sync round, as the dense path averages)."""
        index = self.local_index(ids)
        unique, inverse = torch.unique(index, return_inverse=True)
        summed = torch.zeros(len(unique), self.spec.dim).index_add_(0, inverse, grads)
        if divisor != 1:
            summed.div_(divisor)
        with self.lock:
            self.optimizer.update(self.rows, unique, summed)
