"""A parameter server: one slice of the dense parameters, one shard of every embedding table.

Servers run no user code: `python -m psjob_runtime server`. They learn the slice's size from
worker 0's INIT and each table's shape from its declaration, so the same server image serves any
model. One thread per worker waits on that worker alone; a wait on one known peer fails at once
when that peer's connection drops (a receive from any source would only time out), so a dead
worker is named within moments. The first failure in any thread ends the server with that
failure's exit code, except in async mode, where a lost worker is dropped and the others go on.

With spec.training.checkpoint set, the server restores its share from the newest usable
checkpoint at start, writes one every `everySteps` steps, at the end, when a peer is lost (so a
restart loses as little as possible) and on SIGTERM (pod deletion, node drain), then exits 143.

Server 0 keeps each worker's latest report, which rides on the worker's requests (progress_block),
and its own newest checkpoint; with PSJOB_PROGRESS_PORT set every server answers GET /metrics, and
server 0 GET /progress (progress_http.py).

Every request is checked before anything is allocated or received for it (see `_next_header`
and the handlers): the header's fields against the peer's connection, the slice and the known
tables, its announced payload bytes against what the op must carry. A bad request is a
ProtocolError naming the peer and the field; the peer is then treated as lost. With
spec.training.refuseNonFinite (the default) a push holding NaN or Inf counts as a zero gradient
and is reported, non-finite initial values are refused, and no checkpoint is written from
non-finite state, so the newest finite checkpoint is never pruned.
"""

import datetime
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from psjob_runtime import capacity, checkpoint, progress_block, server_endpoints
from psjob_runtime.consistency import Gate, SparseGrads, make_gate
from psjob_runtime.contract import JobContext
from psjob_runtime.dynamic_shard import DynamicShard
from psjob_runtime.dynamic_table import RESERVED_ID, DynamicOptions, DynamicTableSpec
from psjob_runtime.errors import ExitCode, PeerLostError, PsjobError
from psjob_runtime.log import log
from psjob_runtime.progress_block import BadBlockError
from psjob_runtime.progress_board import ProgressBoard
from psjob_runtime.reslice import dense_share, dynamic_share, table_share
from psjob_runtime.server_optimizer import build_optimizer, warm_up
from psjob_runtime.sharding import balanced_slices
from psjob_runtime.shards import Shard
from psjob_runtime.sparse_optimizer import build_sparse_optimizer
from psjob_runtime.table_shard import TableMismatchError, TableShard, TableSpec, shard_rows
from psjob_runtime.training import Mode
from psjob_runtime.transport import MAX_CHUNK_BYTES, Connection, ConnectionLostError, Listener
from psjob_runtime.wire import (
    DYNAMIC_OPTIONS,
    HEADER_LEN,
    INLINE_OPS,
    PROGRESS_OPS,
    PROTOCOL_VERSION,
    REQUEST_PAYLOAD_OFFSET,
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    Header,
    Op,
    ProtocolError,
    ProtocolVersionError,
    ResumePoint,
    expected_payload_bytes,
    new_header_buffer,
    new_request_buffer,
    request_header,
    request_payload,
)

SETTLE_QUIET_SECONDS = 1.0
"""On SIGTERM in sync mode: how long no push may arrive before the round counts as settled."""
SETTLE_LIMIT_SECONDS = 10.0
"""On SIGTERM: the most the server waits for the round in progress; well inside the default
30 s grace period, leaving the rest for writing the checkpoint."""
MAX_DYNAMIC_DIM = 1 << 16
"""Widest row of a dynamic table: bounds the declaration before any memory is allocated."""
MAX_TABLES = 4096
"""Embedding tables one job may declare: bounds what declarations alone can make a server hold."""
MAX_STEP = 1 << 40
"""The largest step a worker may rejoin at: far beyond any job, far below overflow."""
LOGGED_REFUSALS = 10
"""Refused non-finite pushes logged one by one; after these, every hundredth."""

_SHORT = {torch.float32: 0x7FA5A5A5, torch.int64: RESERVED_ID}
"""Written at the end of every receive buffer (and of each of its chunks) before the receive: a
message shorter than announced leaves it there. As float32 the pattern is a NaN no arithmetic
produces; as int64 it is -2**63, which no id (dynamic tables reserve it), count or header's last
field may be."""


class ModelMismatchError(PsjobError):
    """Workers disagree about the model; a restart would not fix that (exit code 1)."""


class NonFiniteError(PsjobError):
    """Worker 0's initial values or a table's init_scale hold NaN or Inf (exit code 1): the
    restarted worker would send the same."""


class _LeftError(Exception):
    """The worker said LEAVE: its serving thread waits for a process of its index to return."""


class TerminatedError(PsjobError):
    """SIGTERM arrived; the final checkpoint (if configured) is written."""

    exit_code = ExitCode.TERMINATED


@dataclass
class _Link:
    """One worker as its serving thread sees it: who it is, and buffers reused every step."""

    worker: int
    rank: int
    peer: str
    """How logs name it, e.g. `worker 1 (rank 3)`."""
    conn: Connection
    """This worker's connection; a replacement process gets a new link on its own."""
    admitted: bool = False
    """The gate counts this worker (see `_gate`)."""
    inbox: torch.Tensor = field(default_factory=lambda: new_request_buffer(0))
    """Every request lands here: header room only until the slice exists, then room for the
    largest request (a PUSH_PULL with the slice's gradient inline); shorter ones fit too."""
    reply_buf: torch.Tensor = field(default_factory=new_header_buffer)
    parts: torch.Tensor | None = None
    """The slice's gradient as PUSH_PART requests bring it in, until PULL_AFTER_PARTS."""
    parts_end: int | None = None
    """Where the next part must end (None: no part since the last push; the slice's end)."""
    sparse: dict[int, tuple[Shard, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """Row gradients of SPARSE_PUSH by table (one each), until the next PUSH_PULL applies them."""
    non_finite: bool = False
    """A SPARSE_PUSH of this step held NaN or Inf: the step's whole push is refused."""


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(torch.int32) if tensor.dtype == torch.float32 else tensor


def _is_finite(values: torch.Tensor) -> bool:
    """True when no element is NaN or Inf; a sum first, since it is ~30 times cheaper and finite
    whenever every element is (the exact check runs only when the sum overflowed or is not)."""
    return math.isfinite(float(values.sum())) or bool(torch.isfinite(values).all())


class ParameterServer:
    """One server's state and threads; `run()` returns the gate once every worker said DONE."""

    def __init__(self, ctx: JobContext, listener: Listener, chunk_bytes: int = MAX_CHUNK_BYTES):
        self.ctx = ctx
        self.listener = listener
        self.chunk_bytes = chunk_bytes
        self.gate: Gate | None = None
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.finished = 0
        self.dropped: list[int] = []
        self.left: dict[int, float] = {}
        """Workers that said LEAVE and have not come back, with when (time.monotonic())."""
        self.present: set[int] = set()
        """Workers being served on a live connection now (see Gate.adopt)."""
        self.serving_workers: set[int] = set()
        """Worker indices with a serving thread: the job's, and those scaled up since."""
        self.changed = threading.Condition()
        self.tables: dict[int, Shard] = {}
        self.options_from_checkpoint: set[int] = set()
        """Restored dynamic tables that no worker has declared yet (see `_declare`)."""
        self.terminate = threading.Event()
        settings = ctx.training.checkpoint
        self.checkpoint_root = Path(settings.dir) if settings else None
        self.every = settings.every_steps if settings else 0
        self.restored: checkpoint.Checkpoint | None = None
        self.last_checkpoint = -1
        self.checkpoint_seconds: float | None = None
        """How long this process's last checkpoint write took (the metrics endpoint's gauge)."""
        self.board = ProgressBoard(ctx.num_workers) if ctx.replica_index == 0 else None
        """Server 0 only: the workers' latest reports and the newest checkpoint."""
        self.block_floats = progress_block.FLOATS if self.board is not None else 0
        """Room for a progress block in every request buffer (server 0 only)."""
        self.total = 0
        self.refuse_non_finite = ctx.training.refuse_non_finite
        self.refused = 0
        """Pushes refused for NaN or Inf (counted under `changed`)."""
        self.init_lock = threading.Lock()
        self.memory_limit = capacity.memory_limit_bytes()
        self.held_bytes = 0
        """Values and optimizer state allocated for the slice and the table shards."""
        self.serving: dict[Op, Callable[[_Link, Header], bool]] = {
            Op.INIT: self._on_init,
            Op.DECLARE_TABLE: self._on_declare_table,
            Op.DECLARE_DYNAMIC: self._on_declare_dynamic,
            Op.SPARSE_PULL: self._on_sparse_pull,
            Op.SPARSE_PUSH: self._on_sparse_push,
            Op.PULL: self._on_pull,
            Op.RESUME: self._on_resume,
            Op.PUSH_PULL: self._on_push_pull,
            Op.PUSH_PART: self._on_push_part,
            Op.PULL_AFTER_PARTS: self._on_pull_after_parts,
            Op.DONE: self._on_done,
            Op.REJOIN: self._on_rejoin,
            Op.LEAVE: self._on_leave,
        }
        """What each op a worker sends makes this server do, in its worker's thread."""

    # --- checkpoints -------------------------------------------------------------------------

    def restore(self) -> None:
        """Load this server's share of the newest usable checkpoint, re-sliced if need be."""
        if self.checkpoint_root is None:
            return
        checkpoint.check_writable(self.checkpoint_root)
        owner = checkpoint.owner_of(self.ctx)
        checkpoint.remove_leftovers(self.checkpoint_root, owner, self.ctx.replica_index)
        found = checkpoint.latest(self.checkpoint_root, owner=owner)
        index, servers = self.ctx.replica_index, self.ctx.num_servers
        if found is None:
            if self.ctx.restart_count > 0:
                log(
                    f"restart {self.ctx.restart_count} but no usable checkpoint in "
                    f"{self.checkpoint_root}: starting from the initial parameters"
                )
            return
        started = time.monotonic()
        for saved in found.files[0]["tables"]:
            entries = [f["tables"][len(self.tables)] for f in found.files]
            shard = self._restore_table(saved, entries)
            self.tables[shard.spec.table] = shard
            if isinstance(shard, TableShard):
                self.held_bytes += shard.held_bytes
        self.restored = found
        self.last_checkpoint = found.step
        # The slice is known from the checkpoint: serve at once, without waiting for worker 0
        # (a server replaced while worker 0 has finished would otherwise never get its INIT).
        total = int(found.files[0]["dense"]["total"])
        part = balanced_slices(total, servers)[index]
        self._check_fits(total, part.numel)
        self._adopt_initial(torch.empty(0), total)
        if self.board is not None:
            written = found.folder / checkpoint.file_name(0, found.num_servers)
            when = datetime.datetime.fromtimestamp(written.stat().st_mtime, datetime.UTC)
            self.board.checkpoint_written(found.step, when)
        print(
            f"server {index}: restored checkpoint step {found.step} from {found.folder} "
            f"({found.num_servers} -> {servers} servers) in {time.monotonic() - started:.1f} s",
            flush=True,
        )

    def _restore_table(self, saved: dict[str, Any], entries: list[dict[str, Any]]) -> Shard:
        """This server's shard of one checkpointed table, re-sliced from every file's entry."""
        index, servers = self.ctx.replica_index, self.ctx.num_servers
        if saved.get("kind", "fixed") == "dynamic":
            options = saved["options"]
            spec = DynamicTableSpec(
                int(saved["table"]),
                int(saved["dim"]),
                float(saved["init_scale"]),
                DynamicOptions(
                    options["admit_after"], options["ttl_steps"], options["max_rows_per_server"]
                ),
            )
            try:
                share = dynamic_share(entries, index, servers)
            except ValueError as error:
                raise checkpoint.CheckpointMismatchError(
                    f"the checkpoint's {spec} is unusable: {error}"
                ) from None
            shard = self._new_dynamic(spec)
            shard.adopt(share, int(saved["step"]))
            self.options_from_checkpoint.add(spec.table)
            return shard
        fixed = TableSpec(int(saved["table"]), int(saved["num_rows"]), int(saved["dim"]))
        rows, state = table_share(entries, index, servers)
        optimizer = build_sparse_optimizer(self.ctx.training.optimizer, rows.shape)
        optimizer.state.update(state)
        optimizer.step = int(saved["step"])
        return TableShard(fixed, index, servers, rows, optimizer)

    def _snapshot(self, gate: Gate) -> dict[str, Any]:
        part = balanced_slices(self.total, self.ctx.num_servers)[self.ctx.replica_index]
        state = gate.optimizer.state_dict()["state"].get(0, {})
        return {
            "format": checkpoint.FORMAT,
            "server": self.ctx.replica_index,
            "servers": self.ctx.num_servers,
            "step": gate.step,
            "updates": gate.updates,
            "worker_steps": list(gate.clock),
            "dense": {
                "total": self.total,
                "start": part.start,
                "stop": part.stop,
                "values": gate.params.detach(),
                "state": {k: v for k, v in state.items() if isinstance(v, torch.Tensor)},
            },
            "tables": [shard.snapshot() for _, shard in sorted(self.tables.items())],
        }

    def _state_is_finite(self, gate: Gate) -> bool:
        """Whether the slice, the table shards and all their optimizer state are finite."""
        tensors = [gate.params.detach()]
        tensors += [t for t in gate.optimizer.state_dict()["state"].get(0, {}).values()]
        for shard in self.tables.values():
            tensors += shard.float_tensors()
        return all(
            _is_finite(t) for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()
        )

    def write_checkpoint(self, gate: Gate, why: str) -> None:
        """Write this server's file for the gate's step (call with the gate's lock held)."""
        if self.checkpoint_root is None or gate.step == self.last_checkpoint:
            return
        if self.refuse_non_finite and not self._state_is_finite(gate):
            kept = f"step {self.last_checkpoint}" if self.last_checkpoint >= 0 else "none yet"
            log(
                f"server {self.ctx.replica_index}: checkpoint step {gate.step} ({why}) skipped: "
                f"the parameters or optimizer state hold NaN or Inf; the newest finite checkpoint "
                f"({kept}) stays (spec.training.refuseNonFinite)"
            )
            return
        started = time.monotonic()
        path = checkpoint.write(
            self.checkpoint_root,
            self.ctx.replica_index,
            self.ctx.num_servers,
            gate.step,
            self._snapshot(gate),
            owner=checkpoint.owner_of(self.ctx),
        )
        self.last_checkpoint = gate.step
        size = path.stat().st_size
        elapsed = time.monotonic() - started
        self.checkpoint_seconds = elapsed
        if self.board is not None:
            self.board.checkpoint_written(gate.step)
        refused = f"; {self.refused} non-finite pushes refused so far" if self.refused else ""
        print(
            f"server {self.ctx.replica_index}: checkpoint step {gate.step} ({why}) "
            f"{size / 1e6:.1f} MB in {elapsed:.2f} s -> {path}{refused}",
            flush=True,
        )

    def _after_update(self) -> None:
        gate = self.gate
        assert gate is not None
        if self.every and gate.step % self.every == 0:
            self.write_checkpoint(gate, f"every {self.every} steps")

    def final_checkpoint(self, why: str) -> None:
        gate = self.gate
        if gate is None:
            return
        with gate.cond:
            self.write_checkpoint(gate, why)

    # --- dense state -------------------------------------------------------------------------

    def _adopt_initial(self, initial: torch.Tensor, total: int) -> None:
        """Build the gate: from worker 0's values, or (restored) from the checkpoint's."""
        self.total = total
        optimizer_state: dict[str, Any] | None = None
        if self.restored is not None:
            part = balanced_slices(total, self.ctx.num_servers)[self.ctx.replica_index]
            initial, optimizer_state = dense_share(self.restored.files, part)
        param = torch.nn.Parameter(initial, requires_grad=False)
        optimizer = build_optimizer(self.ctx.training.optimizer, param)
        if optimizer_state:
            optimizer.load_state_dict(
                {
                    "state": {0: optimizer_state},
                    "param_groups": optimizer.state_dict()["param_groups"],
                }
            )
        gate = make_gate(self.ctx.training, param, optimizer, self.ctx.num_workers, self.tables)
        if self.restored is not None:
            self._restore_counters(gate, self.restored)
        gate.after_update = self._after_update
        self.gate = gate
        self.ready.set()

    def _restore_counters(self, gate: Gate, found: checkpoint.Checkpoint) -> None:
        """Continue the step count; workers resume at their saved positions (or all at the
        checkpoint's step when the worker count changed)."""
        mine = found.files[min(self.ctx.replica_index, found.num_servers - 1)]
        workers = self.ctx.num_workers
        saved_clock = [int(s) for s in mine["worker_steps"]]
        if len(saved_clock) == workers:
            gate.restore(int(mine["updates"]), saved_clock)
        else:
            step = found.step
            gate.restore(step if gate.counts_rounds else step * workers, [step] * workers)

    def _wait_ready(self, link: _Link) -> Gate:
        timeout = self.ctx.training.timeout_seconds
        if not self.ready.wait(timeout):
            raise PeerLostError(
                f"worker 0 did not send the initial parameters within {timeout} s "
                f"({link.peer} is waiting for them)"
            )
        assert self.gate is not None
        return self.gate

    def _gate(self, link: _Link) -> Gate:
        """The gate, once ready, counting this link's worker (a new or returning one joins)."""
        gate = self._wait_ready(link)
        if not link.admitted:
            gate.admit(link.worker)
            link.admitted = True
        return gate

    def _check_size(self, header: Header, gate: Gate) -> None:
        if header.numel != gate.params.numel():
            raise ModelMismatchError(
                f"worker {header.worker} sent {header.numel} elements for server "
                f"{self.ctx.replica_index}'s slice, but worker 0's model gives it "
                f"{gate.params.numel()}: every worker must build the same model"
            )

    # --- tables ------------------------------------------------------------------------------

    def _create_table(self, spec: TableSpec, init_scale: float) -> None:
        """Worker 0's declaration of a new table (call with `changed` held)."""
        index, servers = self.ctx.replica_index, self.ctx.num_servers
        rows = shard_rows(spec.num_rows, index, servers)
        capacity.check_fits(
            f"worker 0's {spec} (server {index}'s shard of {rows} rows)",
            rows * spec.dim,
            capacity.sparse_copies(self.ctx.training.optimizer),
            self.held_bytes,
            self.memory_limit,
        )
        shard = TableShard.create(spec, index, servers, self.ctx.training.optimizer, init_scale)
        self.held_bytes += shard.rows.nbytes + sum(t.nbytes for t in shard.optimizer.state.values())
        self.tables[spec.table] = shard
        self.changed.notify_all()

    def _new_dynamic(self, spec: DynamicTableSpec) -> DynamicShard:
        """A dynamic table's empty shard under spec.training's bounds, its growth checked
        against the memory this server may fill."""
        index, servers = self.ctx.replica_index, self.ctx.num_servers
        shard = DynamicShard(
            spec,
            index,
            servers,
            self.ctx.training.optimizer,
            self._job_bounds(),
            self._check_dynamic,
        )
        capacity_rows = shard.options.max_rows_per_server
        if capacity_rows is not None:
            capacity.check_fits(
                f"{spec} at its capacity of {capacity_rows} rows on server {index}",
                capacity_rows * spec.dim,
                capacity.sparse_copies(self.ctx.training.optimizer),
                self.held_bytes,
                self.memory_limit,
            )
        return shard

    def _job_bounds(self) -> DynamicOptions:
        """spec.training.embeddings as options every dynamic table is held to."""
        job = self.ctx.training.embeddings
        if job is None:
            return DynamicOptions()
        return DynamicOptions(job.admit_after or 0, job.ttl_steps, job.max_rows_per_server)

    def _check_dynamic(self, what: str, extra: int) -> None:
        """Refuse to grow a dynamic table by `extra` bytes beyond what this server may fill."""
        tables = list(self.tables.values())
        dynamic = sum(s.held_bytes for s in tables if isinstance(s, DynamicShard))
        if self.held_bytes + dynamic + extra > self.memory_limit:
            raise capacity.CapacityError(
                f"{what} needs {extra / 1e6:.0f} MB more for new rows, beside "
                f"{(self.held_bytes + dynamic) / 1e9:.1f} GB held; this server may use "
                f"{self.memory_limit / 1e9:.1f} GB: bound the table with max_rows_per_server "
                "(or spec.training.embeddings.maxRowsPerServer), add servers or give them memory"
            )

    def _declare(self, link: _Link, spec: TableSpec | DynamicTableSpec, init_scale: float) -> None:
        with self.changed:
            if link.worker == 0 and spec.table not in self.tables:
                if isinstance(spec, DynamicTableSpec):
                    self.tables[spec.table] = self._new_dynamic(spec)
                    self.changed.notify_all()
                else:
                    self._create_table(spec, init_scale)
            timeout = self.ctx.training.timeout_seconds
            if not self.changed.wait_for(lambda: spec.table in self.tables, timeout):
                raise PeerLostError(
                    f"worker 0 did not declare table {spec.table} within {timeout} s "
                    f"({link.peer} declared it)"
                )
            shard = self.tables[spec.table]
            if spec.table in self.options_from_checkpoint and isinstance(shard, DynamicShard):
                # The first declaration after a restore sets a dynamic table's options: the code
                # may change them between attempts (a tighter capacity or TTL trims the rows).
                self.options_from_checkpoint.discard(spec.table)
                if isinstance(spec, DynamicTableSpec):
                    shard.reconfigure(spec, self._job_bounds())
            existing = shard.spec
        if existing != spec:
            where = "the checkpoint" if self.restored is not None else "worker 0"
            if isinstance(existing, DynamicTableSpec) and isinstance(spec, DynamicTableSpec):
                where += " (a dynamic table's dim and init_scale must match, and every worker's "
                where += "options)"
            error = checkpoint.CheckpointMismatchError if self.restored else TableMismatchError
            raise error(f"{link.peer} declares {spec}, but {where} has {existing}")

    def _table(self, link: _Link, header: Header) -> Shard:
        """The declared table a sparse request names, with its id count checked."""
        shard = self.tables.get(header.extra[0])
        if shard is None:
            known = f"0..{len(self.tables) - 1}" if self.tables else "none"
            raise self._bad(link, header, f"extra0 (table) is {header.extra[0]}, declared: {known}")
        if shard.spec.dim != header.extra[1]:
            raise self._bad(link, header, f"extra1 (dim) is {header.extra[1]}, {shard.spec}")
        most = shard.max_request_ids()
        if header.numel > most:
            raise self._bad(
                link,
                header,
                f"numel (ids) is {header.numel}, more than the {most} ids one request may carry "
                f"for {shard.spec} to server {self.ctx.replica_index} (send each id once)",
            )
        return shard

    # --- serving -----------------------------------------------------------------------------

    def _bad(self, link: _Link, header: Header, problem: str) -> ProtocolError:
        return ProtocolError(
            f"server {self.ctx.replica_index}: {link.peer} sent a bad {header.op.name} request: "
            f"{problem}; it is served no more (a peer running the same psjob_runtime never sends "
            "this: a bug, a corrupted message or a hostile process)"
        )

    def _recv_exact(
        self, link: _Link, header: Header, tensor: torch.Tensor, what: str
    ) -> torch.Tensor:
        """Receive `tensor` whole: a message shorter than announced is refused, not half-read.

        Gloo completes a receive with however many bytes arrived, up to the buffer's size, and
        reports no count; so the last element of every chunk starts as a marker no sender can
        write without being refused anyway, and a marker still in place means a short message.
        """
        bits = _bits(tensor.view(-1))
        ends = self._chunk_ends(tensor.numel(), tensor.element_size())
        marker = _SHORT[tensor.dtype]
        bits[ends] = marker
        link.conn.recv(tensor, TAG_PAYLOAD, what, self.chunk_bytes)
        if ends and bool((bits[ends] == marker).any()):
            reserved = (
                f" (or hold the reserved id {RESERVED_ID})" if tensor.dtype == torch.int64 else ""
            )
            raise self._bad(
                link, header, f"its {what} were shorter than the header announced{reserved}"
            )
        return tensor

    def _per_chunk(self, element_size: int) -> int:
        return max(1, self.chunk_bytes // element_size)

    def _chunk_ends(self, numel: int, element_size: int) -> list[int]:
        """The last element of every chunk the transport cuts `numel` elements into."""
        per_chunk = self._per_chunk(element_size)
        return [min(start + per_chunk, numel) - 1 for start in range(0, numel, per_chunk)]

    def _next_header(self, link: _Link) -> Header:
        """Receive one request and check its header; the handlers check the op's own fields.

        The receive is the inbox's first chunk: the whole request unless an inline payload is
        larger than a chunk, whose rest `_inline_payload` receives once the header is checked.
        Before the receive, the header's last field and the last element of each chunk of a
        whole PUSH_PULL get the markers that only a short message leaves in place.
        """
        bare = REQUEST_PAYLOAD_OFFSET + self.block_floats
        if self.gate is not None and link.inbox.numel() == bare:
            link.inbox = new_request_buffer(self.gate.params.numel() + self.block_floats)
        inbox = link.inbox
        raw = request_header(inbox)
        raw[HEADER_LEN - 1] = _SHORT[torch.int64]
        for size in self._request_sizes(link):
            _bits(inbox)[self._chunk_ends(size, 4)] = _SHORT[torch.float32]
        first = inbox[: self._per_chunk(4)]
        link.conn.recv(first, TAG_HEADER, "waiting for its next request", self.chunk_bytes)
        where = f"server {self.ctx.replica_index}: {link.peer}"
        if int(raw[0]) == PROTOCOL_VERSION and int(raw[HEADER_LEN - 1]) == _SHORT[torch.int64]:
            raise ProtocolError(f"{where} sent a header shorter than {HEADER_LEN} int64 values")
        try:
            header = Header.decode(raw)
        except ProtocolVersionError as error:
            raise ProtocolVersionError(f"{where}: {error}") from None
        except ProtocolError as error:
            raise ProtocolError(f"{where} sent a bad header: {error}") from None
        if header.worker != link.worker:
            raise self._bad(
                link, header, f"its worker field is {header.worker}, its connection is {link.peer}"
            )
        if header.step < 0 or header.numel < 0:
            raise self._bad(
                link, header, f"step {header.step} and numel {header.numel} must be >= 0"
            )
        if header.progress and (
            header.progress != progress_block.BYTES
            or self.board is None
            or header.op not in PROGRESS_OPS
        ):
            raise self._bad(
                link,
                header,
                f"its progress field is {header.progress}: a progress block has "
                f"{progress_block.BYTES} bytes and rides on PUSH_PULL, PULL_AFTER_PARTS and DONE "
                "requests to server 0 only",
            )
        expected = expected_payload_bytes(header.op, header.numel, header.extra[1])
        if header.payload != expected:
            raise self._bad(
                link,
                header,
                f"it announces payloads of {header.payload[0]} and {header.payload[1]} bytes, the "
                f"op carries {expected[0]} and {expected[1]} (float32 values, int64 ids)",
            )
        return header

    def _request_sizes(self, link: _Link) -> list[int]:
        """Every length (in float32) that a request longer than its header may have on this
        link: the inline payload, the progress block, or both behind the header's slots."""
        block = self.block_floats
        inline = link.inbox.numel() - REQUEST_PAYLOAD_OFFSET - block
        sizes = {inline, block, inline + block} - {0}
        return sorted(REQUEST_PAYLOAD_OFFSET + size for size in sizes)

    def _receive_whole(self, link: _Link, header: Header, size: int, what: str) -> None:
        """Receive the rest of a request of `size` float32 (beyond the first chunk) and check
        that it filled every chunk."""
        inbox, per_chunk = link.inbox, self._per_chunk(4)
        if size > per_chunk:
            link.conn.recv(inbox[per_chunk:size], TAG_HEADER, what, self.chunk_bytes)
        ends = self._chunk_ends(size, 4)
        if bool((_bits(inbox)[ends] == _SHORT[torch.float32]).any()):
            raise self._bad(link, header, f"its {what} was shorter than the header announced")

    def _inline_payload(self, link: _Link, header: Header, gate: Gate) -> torch.Tensor:
        """The rest of a request whose payload travels behind its header, checked whole; a
        progress block behind it is recorded."""
        inbox, numel = link.inbox, gate.params.numel()
        if inbox.numel() != REQUEST_PAYLOAD_OFFSET + numel + self.block_floats:
            raise self._bad(link, header, "it came before worker 0's initial parameters")
        end = REQUEST_PAYLOAD_OFFSET + numel
        block = progress_block.FLOATS if header.progress else 0
        self._receive_whole(link, header, end + block, f"gradient of step {header.step}")
        if block:
            self._record_progress(link, header, end)
        return request_payload(inbox)[:numel]

    def _record_progress(self, link: _Link, header: Header, start: int) -> None:
        """Keep the worker's report from the block at `start` (float32) of its request."""
        assert self.board is not None
        raw = link.inbox[start : start + progress_block.FLOATS].numpy().tobytes()
        try:
            report = progress_block.decode(raw)
        except BadBlockError as error:
            raise self._bad(link, header, str(error)) from None
        self.board.record(link.worker, report)

    def _serve_worker(self, worker: int, conn: Connection) -> None:
        """Answer one worker's requests on `conn` until it says DONE."""
        rank = self.ctx.worker_rank(worker)
        link = _Link(worker, rank, self.ctx.describe_rank(rank), conn)
        link.inbox = new_request_buffer(self.block_floats)
        finished = False
        while not finished:
            header = self._next_header(link)
            if header.progress and header.op not in INLINE_OPS:
                size = REQUEST_PAYLOAD_OFFSET + progress_block.FLOATS
                self._receive_whole(link, header, size, "progress block")
                self._record_progress(link, header, REQUEST_PAYLOAD_OFFSET)
            finished = self.serving[header.op](link, header)

    def _reply(self, link: _Link, header: Header, reply: torch.Tensor) -> None:
        what = f"parameters after step {header.step}"
        link.conn.send(reply, TAG_REPLY, what, self.chunk_bytes)

    # Each op's handler returns True once the worker has finished.

    def _on_init(self, link: _Link, header: Header) -> bool:
        total, index = header.extra[0], self.ctx.replica_index
        if link.worker != 0:
            raise self._bad(link, header, "only worker 0 sends the initial parameters")
        if total < 1:
            raise self._bad(link, header, f"extra0 (the model's elements) is {total}, not >= 1")
        part = balanced_slices(total, self.ctx.num_servers)[index]
        if header.numel != part.numel:
            raise self._bad(
                link,
                header,
                f"numel is {header.numel}, but a model of {total} elements gives server {index} "
                f"a slice of {part.numel}",
            )
        with self.init_lock:
            if self.ready.is_set():
                # The slice is here already, restored from a checkpoint or adopted from worker
                # 0 (whose replacement, or whose rejoin after this server was replaced, sends
                # INIT again): the sizes must agree, the values go.
                self._check_total(total)
                self._recv_exact(link, header, torch.empty(part.numel), "initial parameters")
                return False
            self._check_fits(total, part.numel)
            initial = self._recv_exact(link, header, torch.empty(part.numel), "initial parameters")
            if self.refuse_non_finite and not _is_finite(initial):
                raise NonFiniteError(
                    f"server {index}: worker 0's initial parameters hold NaN or Inf (in server "
                    f"{index}'s slice of {part.numel} elements): initialise the model with finite "
                    "values (spec.training.refuseNonFinite refuses them)"
                )
            self._adopt_initial(initial, total)
        return False

    def _check_fits(self, total: int, numel: int) -> None:
        """Refuse a slice (values and optimizer state) beyond the memory this server may use."""
        copies = capacity.dense_copies(self.ctx.training.optimizer)
        capacity.check_fits(
            f"worker 0's model of {total} elements (server {self.ctx.replica_index}'s slice of "
            f"{numel})",
            numel,
            copies,
            self.held_bytes,
            self.memory_limit,
        )
        self.held_bytes += 4 * numel * copies

    def _check_total(self, total: int) -> None:
        if total == self.total:
            return
        if self.restored is not None:
            raise checkpoint.CheckpointMismatchError(
                f"the checkpoint in {self.restored.folder} holds a model of {self.total} "
                f"parameter elements, the workers build {total}: point "
                "spec.training.checkpoint.dir at a fresh directory or restore the model"
            )
        raise ModelMismatchError(
            f"worker 0 sends a model of {total} elements to server {self.ctx.replica_index}, "
            f"which holds one of {self.total}: every worker 0 of a job must build the same model"
        )

    def _check_declared_table(self, link: _Link, header: Header, table: int) -> None:
        if not 0 <= table <= min(len(self.tables), MAX_TABLES - 1):
            raise self._bad(
                link,
                header,
                f"extra0 (table) is {table}: tables are declared in order 0, 1, ... (this server "
                f"knows {len(self.tables)}; at most {MAX_TABLES})",
            )

    def _on_declare_table(self, link: _Link, header: Header) -> bool:
        table, dim, rows = header.extra[0], header.extra[1], header.numel
        self._check_declared_table(link, header, table)
        if rows < 1 or dim < 1:
            raise self._bad(
                link, header, f"a table needs rows >= 1 and dim >= 1, got {rows} x {dim}"
            )
        scale = float(self._recv_exact(link, header, torch.empty(1), "table declaration")[0])
        if self.refuse_non_finite and not math.isfinite(scale):
            raise NonFiniteError(
                f"server {self.ctx.replica_index}: {link.peer} declares table {table} with "
                f"init_scale {scale}: pass a finite init_scale to session.embedding() "
                "(spec.training.refuseNonFinite refuses it)"
            )
        self._declare(link, TableSpec(table, rows, dim), scale)
        return False

    def _on_declare_dynamic(self, link: _Link, header: Header) -> bool:
        table, dim = header.extra[0], header.extra[1]
        self._check_declared_table(link, header, table)
        if header.numel != 0 or not 1 <= dim <= MAX_DYNAMIC_DIM:
            raise self._bad(
                link,
                header,
                f"numel {header.numel} and extra1 (dim) {dim}: a dynamic table has numel 0 and "
                f"dim 1..{MAX_DYNAMIC_DIM}",
            )
        scale = float(self._recv_exact(link, header, torch.empty(1), "table declaration")[0])
        raw = torch.empty(DYNAMIC_OPTIONS, dtype=torch.int64)
        values = self._recv_exact(link, header, raw, "table options").tolist()
        if not math.isfinite(scale) and self.refuse_non_finite:
            raise NonFiniteError(
                f"server {self.ctx.replica_index}: {link.peer} declares dynamic table {table} with "
                f"init_scale {scale}: pass a finite init_scale to session.dynamic_embedding() "
                "(spec.training.refuseNonFinite refuses it)"
            )
        try:
            options = DynamicOptions.from_ints(values)
        except ValueError as error:
            raise self._bad(link, header, f"its options {values}: {error}") from None
        self._declare(link, DynamicTableSpec(table, dim, scale, options), scale)
        return False

    def _recv_ids(self, link: _Link, header: Header, shard: Shard) -> torch.Tensor:
        ids = torch.empty(header.numel, dtype=torch.int64)
        self._recv_exact(link, header, ids, "row ids")
        problem = shard.misplaced_ids(ids)
        if problem is not None:
            raise self._bad(link, header, problem)
        return ids

    def _on_sparse_pull(self, link: _Link, header: Header) -> bool:
        shard = self._table(link, header)
        ids = self._recv_ids(link, header, shard)
        rows = shard.gather(ids, torch.empty(header.numel, shard.spec.dim))
        what = f"rows of table {shard.spec.table}"
        link.conn.send(rows, TAG_REPLY, what, self.chunk_bytes)
        return False

    def _on_sparse_push(self, link: _Link, header: Header) -> bool:
        shard = self._table(link, header)
        if shard.spec.table in link.sparse:
            raise self._bad(
                link,
                header,
                f"a second push of table {shard.spec.table} before its PUSH_PULL (one per table "
                "and step)",
            )
        ids = self._recv_ids(link, header, shard)
        grads = torch.empty(header.numel, shard.spec.dim)
        self._recv_exact(link, header, grads, "row gradients")
        link.sparse[shard.spec.table] = (shard, ids, grads)
        if self.refuse_non_finite and not _is_finite(grads):
            link.non_finite = True
        return False

    def _on_pull(self, link: _Link, header: Header) -> bool:
        gate = self._gate(link)
        self._check_size(header, gate)
        self._reply(link, header, gate.current(link.worker))
        return False

    def _on_resume(self, link: _Link, header: Header) -> bool:
        gate = self._gate(link)
        with gate.cond:
            saved = self.restored.step if self.restored else -1
            point = ResumePoint(step=gate.clock[link.worker], checkpoint_step=saved)
        self._reply(link, header, point.encode(link.reply_buf))
        return False

    def _on_rejoin(self, link: _Link, header: Header) -> bool:
        if header.numel != 0 or header.step > MAX_STEP:
            raise self._bad(
                link,
                header,
                f"numel {header.numel} and step {header.step}: expected 0 and a "
                f"step up to {MAX_STEP}",
            )
        gate = self._gate(link)
        before = gate.step
        with self.changed:
            present = set(self.present)
        gate.adopt(link.worker, header.step, present)
        if gate.step != before:
            log(
                f"server {self.ctx.replica_index}: {link.peer} rejoined at step {header.step}; "
                f"this server continues from step {gate.step} (it restored step {before})"
            )
        return False

    def _on_leave(self, link: _Link, header: Header) -> bool:
        if header.numel != 0:
            raise self._bad(link, header, f"numel {header.numel}: expected 0")
        if self.gate is not None:
            self.gate.leave(link.worker)
        raise _LeftError()

    def _refuse_push(self, link: _Link, header: Header, grad: torch.Tensor) -> None:
        """Make a non-finite push count as a zero gradient, so every mode goes on as usual."""
        grad.zero_()
        with self.changed:
            self.refused += 1
            refused = self.refused
        if refused <= LOGGED_REFUSALS or refused % 100 == 0:
            log(
                f"server {self.ctx.replica_index}: refused {link.peer}'s push of step "
                f"{header.step}: it holds NaN or Inf; applied as a zero gradient "
                f"({refused} refused so far; spec.training.refuseNonFinite)"
            )

    def _on_push_pull(self, link: _Link, header: Header) -> bool:
        gate = self._gate(link)
        self._check_size(header, gate)
        grad = self._inline_payload(link, header, gate)
        link.parts_end = None
        self._apply_push(link, header, gate, grad)
        return False

    def _on_push_part(self, link: _Link, header: Header) -> bool:
        gate = self._gate(link)
        self._check_size(header, gate)
        offset, length = header.extra[0], header.extra[1]
        end = header.numel if link.parts_end is None else link.parts_end
        if length < 1 or offset + length != end or offset < 0:
            raise self._bad(
                link,
                header,
                f"extra0 (offset) {offset} and extra1 (length) {length} must end at element "
                f"{end}: a step's parts run from the end of the slice to its start, each ending "
                "where the previous one began",
            )
        if link.parts is None:
            link.parts = torch.empty(header.numel)
        part = link.parts[offset:end]
        self._recv_exact(link, header, part, f"gradient part of step {header.step}")
        link.parts_end = offset
        return False

    def _on_pull_after_parts(self, link: _Link, header: Header) -> bool:
        gate = self._gate(link)
        self._check_size(header, gate)
        if link.parts_end != 0 or link.parts is None:
            covered = "none" if link.parts_end is None else f"{link.parts_end}..{header.numel}"
            raise self._bad(
                link,
                header,
                f"the parts since the last push cover elements {covered}, not the whole slice",
            )
        link.parts_end = None
        self._apply_push(link, header, gate, link.parts)
        return False

    def _apply_push(self, link: _Link, header: Header, gate: Gate, grad: torch.Tensor) -> None:
        """Hand one step's gradient (and the table rows pushed before it) to the gate; reply."""
        sparse: SparseGrads = list(link.sparse.values())
        if self.refuse_non_finite and (link.non_finite or not _is_finite(grad)):
            self._refuse_push(link, header, grad)
            sparse = []
        link.sparse, link.non_finite = {}, False
        reply = gate.push(link.worker, header.step, grad, sparse)
        self._reply(link, header, reply)

    def _on_done(self, link: _Link, header: Header) -> bool:
        stats = self._gate(link).leave(link.worker)
        with self.changed:
            stats = replace(stats, refused_non_finite=self.refused)
        what = "final statistics"
        link.conn.send(stats.encode(link.reply_buf), TAG_REPLY, what, self.chunk_bytes)
        return True

    def _drop(self, worker: int, error: PeerLostError) -> None:
        """async: a worker gone for good leaves; the others finish without it."""
        log(
            f"server {self.ctx.replica_index}: dropped worker {worker} ({error}); "
            "async mode: the other workers go on"
        )
        if self.gate is not None:
            self.gate.leave(worker)
        with self.changed:
            self.dropped.append(worker)
            if len(self.dropped) == len(self.serving_workers):
                self.failure = error  # nobody left who could finish the job
            self.changed.notify_all()

    def _guarded(self, worker: int) -> None:
        """Serve one worker, and each process that takes its place, until it says DONE.

        A lost connection ends that connection only: the others train on without the worker,
        and its replacement (or the same process, reconnecting) is served from where the gate
        has it. A worker not back within
        the timeout, silent on its connection or sending a request no worker of ours sends is
        dropped in async mode and fails the server otherwise (exit 75: the job restarts whole).
        A worker that said LEAVE holds no round or bound, and a process of its index is served
        whenever it connects; the server ends without it once it left timeoutSeconds ago and
        every other worker is done (`_done`)."""
        timeout = self.ctx.training.timeout_seconds
        conn: Connection | None = None
        lost: PeerLostError | None = None
        left = False
        while True:
            conn = self.listener.next_connection(worker, conn, None if left else timeout)
            if conn is None:
                peer = self.ctx.describe_rank(self.ctx.worker_rank(worker))
                error = PeerLostError(
                    f"server {self.ctx.replica_index}: {peer} did not "
                    + (
                        f"come back within {timeout} s after: {lost}"
                        if lost
                        else f"connect within {timeout} s (is it running?)"
                    )
                )
                if self.ctx.training.mode is Mode.ASYNC:
                    self._drop(worker, error)
                else:
                    self._fail(error)
                return
            if lost is not None or left:
                log(f"server {self.ctx.replica_index}: {conn.peer_name} is back")
            lost, left = None, False
            with self.changed:
                self.left.pop(worker, None)
                self.present.add(worker)
            try:
                self._serve_worker(worker, conn)
            except _LeftError:
                log(
                    f"server {self.ctx.replica_index}: {conn.peer_name} left (SIGTERM: scaled "
                    "down or its pod deleted); no round waits for it, and a process of its "
                    f"index may take part again (the servers end without it {timeout} s from "
                    "now once the other workers are done)"
                )
                left = True
                with self.changed:
                    self.left[worker] = time.monotonic()
                    self.changed.notify_all()
                continue
            except ConnectionLostError as error:
                lost = error
                if self.gate is not None:
                    # Until it is back, no round or staleness bound waits for it (`_gate`
                    # admits it again): the others train on while its replacement starts.
                    self.gate.leave(worker)
                log(
                    f"server {self.ctx.replica_index}: {error}; waiting up to {timeout} s for "
                    "the worker to come back, training on without it"
                )
                continue
            except PeerLostError as error:  # silent, or a request no worker of ours sends
                conn.close()
                where = f"server {self.ctx.replica_index}: "
                if not str(error).startswith(where):
                    error = type(error)(where + str(error))
                if self.ctx.training.mode is Mode.ASYNC:
                    self._drop(worker, error)
                else:
                    self._fail(error)
                return
            except BaseException as error:  # handed to the main thread, which ends the process
                self._fail(error)
                return
            finally:
                with self.changed:
                    self.present.discard(worker)
            with self.changed:
                self.finished += 1
                self.changed.notify_all()
            return

    def _start_serving(self, worker: int) -> None:
        """A serving thread for `worker`, once: the job's workers at start, a scaled-up one on
        its first connection."""
        with self.changed:
            if worker in self.serving_workers:
                return
            self.serving_workers.add(worker)
            self.changed.notify_all()
        name = f"worker-{worker}"
        threading.Thread(target=self._guarded, args=(worker,), name=name, daemon=True).start()

    def _fail(self, error: BaseException) -> None:
        with self.changed:
            if self.failure is None:
                self.failure = error
            self.changed.notify_all()

    def _done(self) -> bool:
        """Every worker served so far finished, was dropped, or left at least timeoutSeconds
        ago (call with `changed`).

        A worker leaves on SIGTERM, and that is a scale-down (no process takes its index again)
        or a deleted, drained or evicted pod that the operator recreates. The replacement must
        find the servers still there even when every other worker has finished meanwhile, so a
        left worker is waited for as a lost one is: up to timeoutSeconds."""
        bound = self.ctx.training.timeout_seconds
        now = time.monotonic()
        settled = sum(1 for since in self.left.values() if now - since >= bound)
        return self.finished + len(self.dropped) + settled == len(self.serving_workers)

    def run(self) -> Gate:
        """Serve every worker until all have finished; raise the first failure of any thread."""
        self.listener.on_new_worker = self._start_serving
        with self.listener.changed:
            connected = set(self.listener.joined)
        for worker in sorted(set(range(self.ctx.num_workers)) | connected):
            self._start_serving(worker)
        with self.changed:
            # A timed wait: the SIGTERM handler only sets an event, and the main thread must
            # notice it even while no worker thread changes anything.
            while self.failure is None and not self._done() and not self.terminate.is_set():
                self.changed.wait(0.1)
        if self.terminate.is_set():
            if self.gate is not None and self.checkpoint_root is not None:
                self.gate.settle(SETTLE_QUIET_SECONDS, SETTLE_LIMIT_SECONDS)
            self.final_checkpoint("SIGTERM")
            raise TerminatedError(
                f"server {self.ctx.replica_index}: SIGTERM; "
                + ("final checkpoint written" if self.checkpoint_root else "no checkpoint dir")
            )
        if self.failure is not None:
            if isinstance(self.failure, PeerLostError | ProtocolVersionError):
                self.final_checkpoint("a peer was lost")
            raise self.failure
        self.final_checkpoint("end of training")
        assert self.gate is not None
        return self.gate


def serve(ctx: JobContext) -> None:
    """The server role's whole life: restore, join, serve until every worker is done."""
    torch.set_num_threads(1)
    capacity.return_large_frees()
    # One thread per worker hands the GIL around at every message; the default 5 ms switch
    # interval would add that much latency whenever two of them want it at once.
    sys.setswitchinterval(0.0005)
    started = time.monotonic()
    listener = Listener(ctx)
    listener.start()
    server = ParameterServer(ctx, listener)

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        server.terminate.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    server_endpoints.start(server)
    warm_up(ctx.training.optimizer)  # while the workers start and join
    server.restore()
    gate = server.run()
    listener.close()
    elapsed = time.monotonic() - started
    bound = f" (bound {ctx.training.staleness})" if ctx.training.staleness is not None else ""
    dropped = f"; dropped workers {server.dropped}" if server.dropped else ""
    if server.left:
        dropped += f"; workers {sorted(server.left)} left (SIGTERM) and did not come back"
    refused = f"; refused {server.refused} non-finite pushes" if server.refused else ""
    for shard in server.tables.values():
        if isinstance(shard, DynamicShard):
            print(
                f"server {ctx.replica_index}: {shard.spec}: {shard.held_rows} rows, "
                f"{shard.pending.live} ids awaiting admission, {shard.held_bytes} bytes",
                flush=True,
            )
    print(
        f"server {ctx.replica_index}: all {len(server.serving_workers)} workers finished{dropped}; "
        f"{gate.updates} updates of {gate.params.numel()} parameters and {len(server.tables)} "
        f"tables in {elapsed:.1f} s; mode {ctx.training.mode}; max lead over slowest worker "
        f"{gate.max_lead}{bound}{refused}",
        flush=True,
    )
    sys.stdout.flush()
