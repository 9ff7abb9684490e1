"""Embedding tables that live on the servers: a worker holds only the rows its batch touches.

    table = session.embedding(num_rows=10_000_000, dim=16)   # an nn.Module
    vectors = table(ids)                                     # pulls the unique rows of `ids`
    ... loss.backward(); optimizer.step()                    # pushes their gradients only

Row `id` lives on server `id % S` (see table_shard.py). A dynamic table

    table = session.dynamic_embedding(dim=16, admit_after=2, max_rows_per_server=1_000_000)

takes any int64 id but -2**63 and sends it to the server dynamic_table.route picks, which keeps
a row per admitted id (dynamic_shard.py); the rest is the same. A forward pass sends each server the
unique ids it owns and gets their rows back; `optimizer.step()` sends the summed gradient of each
touched row (each id once, however often the step used it) before the dense gradient, and the
servers apply both under the job's mode. Every header announces the bytes that follow it.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from psjob_runtime.dynamic_table import RESERVED_ID, DynamicTableSpec, route
from psjob_runtime.table_shard import TableSpec
from psjob_runtime.transport import Transfer, wait_all
from psjob_runtime.wire import (
    DYNAMIC_OPTIONS,
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    Header,
    Op,
    nbytes,
    new_header_buffer,
)

if TYPE_CHECKING:
    from psjob_runtime.worker import WorkerSession


@dataclass
class TableTraffic:
    """Rows and payload bytes this worker moved for one table (headers not counted)."""

    rows_pulled: int = 0
    bytes_pulled: int = 0
    rows_pushed: int = 0
    bytes_pushed: int = 0


@dataclass
class _Touched:
    ids: torch.Tensor
    rows: torch.Tensor


@dataclass
class TableClient:
    """A worker's handle on one table: routes ids to servers, moves rows, counts bytes."""

    session: "WorkerSession"
    spec: TableSpec | DynamicTableSpec
    traffic: TableTraffic = field(default_factory=TableTraffic)
    touched: list[_Touched] = field(default_factory=list)
    declaration: list[tuple[torch.Tensor, int, str]] = field(default_factory=list)
    """The declaration's messages (tensor, tag, what): sent again to a replacement server."""

    def _by_server(self, ids: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """(server, positions in ids) for every server that owns at least one of `ids`."""
        servers = self.session.ctx.num_servers
        owner = route(ids, servers) if isinstance(self.spec, DynamicTableSpec) else ids % servers
        return [
            (server, positions)
            for server in range(self.session.ctx.num_servers)
            if (positions := torch.nonzero(owner == server).view(-1)).numel()
        ]

    def _headers(self, op: Op, parts: list[tuple[int, list[torch.Tensor]]]) -> list[Transfer]:
        """One header per (server, payloads): the id count and the payloads' byte counts."""
        worker = self.session.ctx.replica_index
        extra = (self.spec.table, self.spec.dim, 0)
        return [
            self.session.transport.send(
                Header(
                    op,
                    worker,
                    0,
                    payloads[0].numel(),
                    extra,
                    (nbytes(payloads[0]), nbytes(payloads[1]) if len(payloads) > 1 else 0),
                ).encode(new_header_buffer()),
                server,
                TAG_HEADER,
                f"{op.name} request",
            )
            for server, payloads in parts
        ]

    def declare(self, init_scale: float) -> None:
        """Declare the table to every server; the same messages declare it again to a server
        that replaces a lost one (`declaration`)."""
        scale = torch.tensor([init_scale], dtype=torch.float32)
        payloads = [scale]
        if isinstance(self.spec, DynamicTableSpec):
            op, rows = Op.DECLARE_DYNAMIC, 0
            payloads.append(torch.tensor(self.spec.options.as_ints(), dtype=torch.int64))
            assert len(payloads[1]) == DYNAMIC_OPTIONS
        else:
            op, rows = Op.DECLARE_TABLE, self.spec.num_rows
        header = Header(
            op,
            self.session.ctx.replica_index,
            0,
            rows,
            (self.spec.table, self.spec.dim, 0),
            (nbytes(scale), nbytes(payloads[1]) if len(payloads) > 1 else 0),
        )
        what = "table declaration"
        self.declaration = [(header.encode(new_header_buffer()), TAG_HEADER, what)]
        self.declaration += [(payload, TAG_PAYLOAD, what) for payload in payloads]
        transport = self.session.transport
        for message, tag, _ in self.declaration:
            wait_all(
                transport.send(message, s, tag, what) for s in range(transport.ctx.num_servers)
            )

    def _check_ids(self, ids: torch.Tensor) -> None:
        if not ids.numel():
            return
        if isinstance(self.spec, DynamicTableSpec):
            if bool((ids == RESERVED_ID).any()):
                raise IndexError(f"{self.spec}: the id {RESERVED_ID} is reserved; use any other")
            return
        if int(ids.min()) < 0 or int(ids.max()) >= self.spec.num_rows:
            raise IndexError(
                f"{self.spec}: ids must be in 0..{self.spec.num_rows - 1}, got "
                f"{int(ids.min())}..{int(ids.max())}"
            )

    def pull(self, ids: torch.Tensor) -> torch.Tensor:
        """Current rows of unique global `ids`, from the servers that own them."""
        self._check_ids(ids)
        self.session.quiesce()
        transport = self.session.transport
        groups = self._by_server(ids)
        parts = [(server, ids[positions]) for server, positions in groups]
        wait_all(self._headers(Op.SPARSE_PULL, [(s, [p]) for s, p in parts]))
        wait_all(transport.send(p, s, TAG_PAYLOAD, "row ids") for s, p in parts)
        replies = [torch.empty(len(p), self.spec.dim) for _, p in parts]
        wait_all(
            transport.recv(reply, s, TAG_REPLY, f"rows of table {self.spec.table}")
            for (s, _), reply in zip(parts, replies, strict=True)
        )
        rows = torch.empty(ids.numel(), self.spec.dim)
        for (_, positions), reply in zip(groups, replies, strict=True):
            rows[positions] = reply
        self.traffic.rows_pulled += ids.numel()
        self.traffic.bytes_pulled += ids.numel() * (8 + 4 * self.spec.dim)
        return rows

    def push(self) -> None:
        """Send the summed gradient of every row touched since the last push (none: nothing)."""
        found = [t for t in self.touched if t.rows.grad is not None]
        self.touched.clear()
        if not found:
            return
        ids = torch.cat([t.ids for t in found])
        grads = torch.cat(
            [t.rows.grad.detach().to("cpu") for t in found if t.rows.grad is not None]
        )
        if len(found) > 1:
            # Several lookups this step: one summed row per id, since a server takes no more ids
            # in one request than its shard has rows.
            ids, inverse = torch.unique(ids, return_inverse=True)
            grads = torch.zeros(len(ids), self.spec.dim).index_add_(0, inverse, grads)
        transport = self.session.transport
        parts = [(s, ids[p], grads[p]) for s, p in self._by_server(ids)]
        wait_all(self._headers(Op.SPARSE_PUSH, [(s, [i, g]) for s, i, g in parts]))
        wait_all(transport.send(i, s, TAG_PAYLOAD, "row ids") for s, i, _ in parts)
        wait_all(transport.send(g, s, TAG_PAYLOAD, "row gradients") for s, _, g in parts)
        self.traffic.rows_pushed += ids.numel()
        self.traffic.bytes_pushed += ids.numel() * (8 + 4 * self.spec.dim)


class ShardedEmbedding(nn.Module):
    """`nn.Embedding` whose table is sharded over the servers; no parameters on the worker."""

    def __init__(self, client: TableClient):
        super().__init__()
        self.client = client

    @property
    def traffic(self) -> TableTraffic:
        return self.client.traffic

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(ids.reshape(-1).to("cpu"), return_inverse=True)
        rows = self.client.pull(unique).to(self.client.session.device)
        if torch.is_grad_enabled():
            rows.requires_grad_(True)
            self.client.touched.append(_Touched(unique, rows))
        return rows[inverse.to(rows.device)].view(*ids.shape, self.client.spec.dim)
