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
"""

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from psjob_runtime import checkpoint
from psjob_runtime.auth import join_job
from psjob_runtime.consistency import Gate, SparseGrads, make_gate
from psjob_runtime.contract import JobContext
from psjob_runtime.errors import ExitCode, PeerLostError, PsjobError
from psjob_runtime.log import log
from psjob_runtime.reslice import dense_share, table_share
from psjob_runtime.server_optimizer import build_optimizer
from psjob_runtime.sharding import balanced_slices
from psjob_runtime.sparse_optimizer import build_sparse_optimizer
from psjob_runtime.table_shard import TableMismatchError, TableShard, TableSpec
from psjob_runtime.training import Mode
from psjob_runtime.transport import Transport
from psjob_runtime.wire import (
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    Header,
    Op,
    ProtocolError,
    ResumePoint,
    new_header_buffer,
)

SETTLE_QUIET_SECONDS = 1.0
"""On SIGTERM in sync mode: how long no push may arrive before the round counts as settled."""
SETTLE_LIMIT_SECONDS = 10.0
"""On SIGTERM: the most the server waits for the round in progress; well inside the default
30 s grace period, leaving the rest for writing the checkpoint."""


class ModelMismatchError(PsjobError):
    """Workers disagree about the model; a restart would not fix that (exit code 1)."""


class TerminatedError(PsjobError):
    """SIGTERM arrived; the final checkpoint (if configured) is written."""

    exit_code = ExitCode.TERMINATED


@dataclass
class _Link:
    """One worker as its serving thread sees it: who it is, and buffers reused every step."""

    worker: int
    rank: int
    header_buf: torch.Tensor
    grad: torch.Tensor | None = None
    sparse: SparseGrads = field(default_factory=list)
    """Row gradients of SPARSE_PUSH, held until the worker's next PUSH_PULL applies them."""


class ParameterServer:
    """One server's state and threads; `run()` returns the gate once every worker said DONE."""

    def __init__(self, ctx: JobContext, transport: Transport):
        self.ctx = ctx
        self.transport = transport
        self.gate: Gate | None = None
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.finished = 0
        self.dropped: list[int] = []
        self.changed = threading.Condition()
        self.tables: dict[int, TableShard] = {}
        self.terminate = threading.Event()
        settings = ctx.training.checkpoint
        self.checkpoint_root = Path(settings.dir) if settings else None
        self.every = settings.every_steps if settings else 0
        self.restored: checkpoint.Checkpoint | None = None
        self.last_checkpoint = -1
        self.total = 0
        self.serving: dict[Op, Callable[[_Link, Header], bool]] = {
            Op.INIT: self._on_init,
            Op.DECLARE_TABLE: self._on_declare_table,
            Op.SPARSE_PULL: self._on_sparse_pull,
            Op.SPARSE_PUSH: self._on_sparse_push,
            Op.PULL: self._on_pull,
            Op.RESUME: self._on_resume,
            Op.PUSH_PULL: self._on_push_pull,
            Op.DONE: self._on_done,
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
            spec = TableSpec(int(saved["table"]), int(saved["num_rows"]), int(saved["dim"]))
            entries = [f["tables"][len(self.tables)] for f in found.files]
            rows, state = table_share(entries, index, servers)
            optimizer = build_sparse_optimizer(self.ctx.training.optimizer, rows.shape)
            optimizer.state.update(state)
            optimizer.step = int(saved["step"])
            self.tables[spec.table] = TableShard(spec, index, servers, rows, optimizer)
        self.restored = found
        self.last_checkpoint = found.step
        print(
            f"server {index}: restored checkpoint step {found.step} from {found.folder} "
            f"({found.num_servers} -> {servers} servers) in {time.monotonic() - started:.1f} s",
            flush=True,
        )

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
            "tables": [
                {
                    "table": shard.spec.table,
                    "num_rows": shard.spec.num_rows,
                    "dim": shard.spec.dim,
                    "rows": shard.rows,
                    "state": shard.optimizer.state,
                    "step": shard.optimizer.step,
                }
                for _, shard in sorted(self.tables.items())
            ],
        }

    def write_checkpoint(self, gate: Gate, why: str) -> None:
        """Write this server's file for the gate's step (call with the gate's lock held)."""
        if self.checkpoint_root is None or gate.step == self.last_checkpoint:
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
        print(
            f"server {self.ctx.replica_index}: checkpoint step {gate.step} ({why}) "
            f"{size / 1e6:.1f} MB in {elapsed:.2f} s -> {path}",
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
        self.total = total
        optimizer_state: dict[str, Any] | None = None
        if self.restored is not None:
            saved_total = int(self.restored.files[0]["dense"]["total"])
            if saved_total != total:
                raise checkpoint.CheckpointMismatchError(
                    f"the checkpoint in {self.restored.folder} holds a model of {saved_total} "
                    f"parameter elements, the workers build {total}: point "
                    "spec.training.checkpoint.dir at a fresh directory or restore the model"
                )
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

    def _wait_ready(self, worker: int) -> Gate:
        timeout = self.ctx.training.timeout_seconds
        if not self.ready.wait(timeout):
            raise PeerLostError(
                f"worker 0 did not send the initial parameters within {timeout} s "
                f"(worker {worker} is waiting for them)"
            )
        assert self.gate is not None
        return self.gate

    def _check_size(self, header: Header, gate: Gate) -> None:
        if header.numel != gate.params.numel():
            raise ModelMismatchError(
                f"worker {header.worker} sent {header.numel} elements for server "
                f"{self.ctx.replica_index}'s slice, but worker 0's model gives it "
                f"{gate.params.numel()}: every worker must build the same model"
            )

    # --- tables ------------------------------------------------------------------------------

    def _declare(self, header: Header, init_scale: float) -> None:
        spec = TableSpec(header.extra[0], header.numel, header.extra[1])
        with self.changed:
            if header.worker == 0 and spec.table not in self.tables:
                self.tables[spec.table] = TableShard.create(
                    spec,
                    self.ctx.replica_index,
                    self.ctx.num_servers,
                    self.ctx.training.optimizer,
                    init_scale,
                )
                self.changed.notify_all()
            timeout = self.ctx.training.timeout_seconds
            if not self.changed.wait_for(lambda: spec.table in self.tables, timeout):
                raise PeerLostError(
                    f"worker 0 did not declare table {spec.table} within {timeout} s "
                    f"(worker {header.worker} declared it)"
                )
            existing = self.tables[spec.table].spec
        if existing != spec:
            where = "the checkpoint" if self.restored is not None else "worker 0"
            error = checkpoint.CheckpointMismatchError if self.restored else TableMismatchError
            raise error(f"worker {header.worker} declares {spec}, but {where} has {existing}")

    def _table(self, header: Header) -> TableShard:
        shard = self.tables.get(header.extra[0])
        if shard is None or shard.spec.dim != header.extra[1]:
            raise ProtocolError(f"worker {header.worker} used undeclared table {header.extra[0]}")
        return shard

    # --- serving -----------------------------------------------------------------------------

    def _recv(self, tensor: torch.Tensor, rank: int, what: str) -> torch.Tensor:
        self.transport.recv(tensor, rank, TAG_PAYLOAD, what).wait()
        return tensor

    def _serve_worker(self, worker: int) -> None:
        """Answer one worker's requests until it says DONE."""
        link = _Link(worker, self.ctx.worker_rank(worker), new_header_buffer())
        finished = False
        while not finished:
            waiting = "waiting for its next request"
            self.transport.recv(link.header_buf, link.rank, TAG_HEADER, waiting).wait()
            header = Header.decode(link.header_buf)
            serve = self.serving.get(header.op)
            if serve is None:
                raise ProtocolError(f"worker {worker} sent op {header.op.name}, not served here")
            finished = serve(link, header)

    def _reply(self, link: _Link, header: Header, reply: torch.Tensor) -> None:
        what = f"parameters after step {header.step}"
        self.transport.send(reply, link.rank, TAG_REPLY, what).wait()

    # Each op's handler returns True once the worker has finished.

    def _on_init(self, link: _Link, header: Header) -> bool:
        initial = self._recv(torch.empty(header.numel), link.rank, "initial parameters")
        if not self.ready.is_set():
            self._adopt_initial(initial, header.extra[0])
        return False

    def _on_declare_table(self, link: _Link, header: Header) -> bool:
        scale = self._recv(torch.empty(1), link.rank, "table declaration")
        self._declare(header, float(scale[0]))
        return False

    def _on_sparse_pull(self, link: _Link, header: Header) -> bool:
        shard = self._table(header)
        ids = self._recv(torch.empty(header.numel, dtype=torch.int64), link.rank, "row ids")
        rows = shard.gather(ids, torch.empty(header.numel, shard.spec.dim))
        what = f"rows of table {shard.spec.table}"
        self.transport.send(rows, link.rank, TAG_REPLY, what).wait()
        return False

    def _on_sparse_push(self, link: _Link, header: Header) -> bool:
        shard = self._table(header)
        ids = self._recv(torch.empty(header.numel, dtype=torch.int64), link.rank, "row ids")
        rows = torch.empty(header.numel, shard.spec.dim)
        link.sparse.append((shard, ids, self._recv(rows, link.rank, "row gradients")))
        return False

    def _on_pull(self, link: _Link, header: Header) -> bool:
        gate = self._wait_ready(link.worker)
        self._check_size(header, gate)
        self._reply(link, header, gate.current(link.worker))
        return False

    def _on_resume(self, link: _Link, header: Header) -> bool:
        gate = self._wait_ready(link.worker)
        with gate.cond:
            saved = self.restored.step if self.restored else -1
            point = ResumePoint(step=gate.clock[link.worker], checkpoint_step=saved)
        self._reply(link, header, point.encode(link.header_buf))
        return False

    def _on_push_pull(self, link: _Link, header: Header) -> bool:
        gate = self._wait_ready(link.worker)
        self._check_size(header, gate)
        if link.grad is None:
            link.grad = torch.empty_like(gate.params.detach())
        what = f"gradient of step {header.step}"
        self.transport.recv(link.grad, link.rank, TAG_PAYLOAD, what).wait()
        reply = gate.push(link.worker, link.grad, link.sparse)
        link.sparse = []
        self._reply(link, header, reply)
        return False

    def _on_done(self, link: _Link, header: Header) -> bool:
        stats = self._wait_ready(link.worker).leave(link.worker)
        what = "final statistics"
        self.transport.send(stats.encode(link.header_buf), link.rank, TAG_REPLY, what).wait()
        return True

    def _drop(self, worker: int, error: PeerLostError) -> None:
        """async: a lost worker leaves; the others finish without it."""
        log(
            f"server {self.ctx.replica_index}: dropped worker {worker} ({error}); "
            "async mode: the other workers go on"
        )
        if self.gate is not None:
            self.gate.leave(worker)

    def _guarded(self, worker: int) -> None:
        try:
            self._serve_worker(worker)
        except PeerLostError as error:
            if self.ctx.training.mode is Mode.ASYNC:
                self._drop(worker, error)
                with self.changed:
                    self.dropped.append(worker)
                    if len(self.dropped) == self.ctx.num_workers:
                        self.failure = error  # nobody left who could finish the job
                    self.changed.notify_all()
                return
            self._fail(error)
            return
        except BaseException as error:  # handed to the main thread, which ends the process
            self._fail(error)
            return
        with self.changed:
            self.finished += 1
            self.changed.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self.changed:
            if self.failure is None:
                self.failure = error
            self.changed.notify_all()

    def _done(self) -> bool:
        return self.finished + len(self.dropped) == self.ctx.num_workers

    def run(self) -> Gate:
        """Serve every worker until all have finished; raise the first failure of any thread."""
        threads = [
            threading.Thread(target=self._guarded, args=(w,), name=f"worker-{w}", daemon=True)
            for w in range(self.ctx.num_workers)
        ]
        for thread in threads:
            thread.start()
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
            if isinstance(self.failure, PeerLostError):
                self.final_checkpoint("a peer was lost")
            raise self.failure
        self.final_checkpoint("end of training")
        assert self.gate is not None
        return self.gate


def serve(ctx: JobContext) -> None:
    """The server role's whole life: restore, join, serve until every worker is done."""
    torch.set_num_threads(1)
    # One thread per worker hands the GIL around at every message; the default 5 ms switch
    # interval would add that much latency whenever two of them want it at once.
    sys.setswitchinterval(0.0005)
    started = time.monotonic()
    server = ParameterServer(ctx, Transport(ctx))

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        server.terminate.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    server.restore()
    join_job(ctx)
    gate = server.run()
    elapsed = time.monotonic() - started
    bound = f" (bound {ctx.training.staleness})" if ctx.training.staleness is not None else ""
    dropped = f"; dropped workers {server.dropped}" if server.dropped else ""
    print(
        f"server {ctx.replica_index}: all {ctx.num_workers} workers finished{dropped}; "
        f"{gate.updates} updates of {gate.params.numel()} parameters and {len(server.tables)} "
        f"tables in {elapsed:.1f} s; mode {ctx.training.mode}; max lead over slowest worker "
        f"{gate.max_lead}{bound}",
        flush=True,
    )
    sys.stdout.flush()
