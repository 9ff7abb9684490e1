"""The worker API: ordinary PyTorch training code, with the optimizer step done by the servers.

    session = psjob_runtime.init()
    optimizer = session.optimizer(model)         # after model.to(session.device)
    for x, y in DataLoader(session.partition(train_set), ...):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()                          # push gradients, pull fresh parameters
        session.report(step=..., loss=loss.item(), samples=len(x))
    session.finish()

The model's parameters and gradients become views into two flat buffers, so a step moves one
contiguous slice per server in each direction with no per-tensor messages: each request is one
message with the header in front of the gradient, and the reply lands in the parameters
themselves (on a GPU, through pinned host buffers). In sync and ssp modes the gradient can leave
in buckets while backward still runs, step() only confirming it (`session.optimizer(model,
overlap_backward=True)`, backward_push.py). Worker 0's
initial parameters are sent to the servers and every worker starts from what the servers hold,
so all workers start identical.

Embedding tables too large for a worker live on the servers (`session.embedding(...)`, see
embedding.py). After a restart the servers restore a checkpoint; `session.start_step` says where
this worker's loop resumes (0 on a fresh start).
"""

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, Self, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ValidationError
from torch.utils.data import Dataset, Subset

from psjob_runtime import progress_block
from psjob_runtime.backward_push import BUCKET_BYTES, BackwardPush
from psjob_runtime.contract import JobContext, Role, describe_validation_error, read_context
from psjob_runtime.dynamic_table import DynamicOptions, DynamicTableSpec
from psjob_runtime.embedding import ShardedEmbedding, TableClient
from psjob_runtime.errors import ContractError, ExitCode, PsjobError, install_exit_hook
from psjob_runtime.log import log
from psjob_runtime.progress import ProgressOutbox, ProgressReporter
from psjob_runtime.sharding import Slice, balanced_slices
from psjob_runtime.table_shard import TableSpec
from psjob_runtime.training import Mode
from psjob_runtime.transport import Transfer, Transport, open_connection, wait_all
from psjob_runtime.wire import (
    HEADER_LEN,
    PROGRESS_OPS,
    REQUEST_PAYLOAD_OFFSET,
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    Header,
    Op,
    ResumePoint,
    ServerStats,
    new_header_buffer,
    new_request_buffer,
    request_header,
    request_payload,
)

SettingsT = TypeVar("SettingsT", bound=BaseModel)

LEAVE_SECONDS = 5.0
"""On SIGTERM: the most a worker spends telling the servers it leaves, well inside the 30 s a
pod gets by default before SIGKILL."""


class FlatParameters:
    """The model's parameters and gradients rebound as views of two flat float32 buffers."""

    def __init__(self, params: Sequence[torch.nn.Parameter]):
        if not params:
            raise ValueError("the model has no trainable parameters to train")
        for index, param in enumerate(params):
            if param.dtype != torch.float32:
                raise ValueError(
                    f"parameter {index} is {param.dtype}: psjob_runtime trains float32 "
                    "parameters; keep the model in float32 (use autocast for lower precision)"
                )
        self.params = list(params)
        self.device = params[0].device
        total = sum(p.numel() for p in params)
        self.values = torch.empty(total, dtype=torch.float32, device=self.device)
        self.grads = torch.zeros(total, dtype=torch.float32, device=self.device)
        self._offsets: list[tuple[int, int]] = []
        offset = 0
        with torch.no_grad():
            for param in self.params:
                stop = offset + param.numel()
                self.values[offset:stop].copy_(param.detach().reshape(-1))
                param.data = self.values[offset:stop].view_as(param)
                self._offsets.append((offset, stop))
                offset = stop
        self.bind_grads()

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Each parameter's [start, stop) range of the flat buffers, in parameter order."""
        return list(self._offsets)

    def bind_grads(self) -> None:
        """Make every .grad a view of the flat buffer again, keeping what it holds.

        Autograd accumulates into an existing .grad in place, so after this a backward pass
        writes straight into the flat buffer. Code that set grads to None (model.zero_grad())
        or replaced them is caught here; a parameter without a gradient counts as zero.
        """
        for index in range(len(self.params)):
            self.bind_grad(index)

    def bind_grad(self, index: int) -> None:
        """`bind_grads` for one parameter (also called as backward produces its gradient)."""
        param, (start, stop) = self.params[index], self._offsets[index]
        view = self.grads[start:stop].view_as(param)
        grad = param.grad
        if grad is not None and grad.data_ptr() == view.data_ptr():
            return
        if grad is None:
            view.zero_()
        else:
            view.copy_(grad)
        param.grad = view

    @property
    def numel(self) -> int:
        return self.values.numel()


class ParameterServerOptimizer:
    """Stands in for a torch optimizer: `step()` pushes gradients and pulls parameters.

    Each request is one message per server: the header in front of that server's slice of the
    gradient, copied into a request buffer (the copy a single-message request costs; it also
    keeps the bytes on the wire apart from the next backward's).

    In sync and ssp modes `step()` returns with the new parameters in place. With
    `overlap_backward`, the gradient leaves in buckets while backward still runs, and `step()`
    checks that it is still what was sent before it only asks for the parameters; any
    difference (clipping, scaling) sends the whole gradient again and ends the overlap
    (backward_push.py). In async mode `step()` overlaps the exchange with the next step's
    compute instead: it completes the previous exchange, installs the parameters it brought,
    hands this step's gradient to the transport and returns at once. A gradient is still applied
    once, on arrival; a worker just computes on parameters one exchange older.
    `synchronize()` (called by `session.finish()`) completes the exchange in flight.
    """

    def __init__(
        self,
        session: "WorkerSession",
        params: Sequence[torch.nn.Parameter],
        overlap_backward: bool = False,
        bucket_bytes: int = BUCKET_BYTES,
    ):
        self.session = session
        self.flat = FlatParameters(params)
        self.slices = balanced_slices(self.flat.numel, session.ctx.num_servers)
        self.overlap = session.ctx.training.mode is Mode.ASYNC
        # Gloo moves host memory: a GPU worker stages both directions through pinned buffers,
        # and an overlapping worker receives into a buffer that the next forward/backward do
        # not read.
        pin = self.flat.device.type == "cuda"
        staged = pin or self.overlap
        self._inbox = torch.empty(self.flat.numel, pin_memory=pin) if staged else self.flat.values
        self._requests = [new_request_buffer(part.numel, pin) for part in self.slices]
        """Per server: the header slots, then the slice of the gradient (of INIT's values)."""
        room = progress_block.FLOATS
        self._to_server0 = new_request_buffer(self.slices[0].numel + room, pin)
        """Server 0's request with room for a progress block behind the gradient."""
        self._requests[0] = self._to_server0[: REQUEST_PAYLOAD_OFFSET + self.slices[0].numel]
        self._bare_to_server0 = new_request_buffer(room)
        """A bare request to server 0 that carries a progress block."""
        self._in_flight: list[Transfer] = []
        self._pushing: int | None = None
        """The step of the push in flight (until its reply), for REJOIN."""
        self._backward: BackwardPush | None = None
        self.steps = 0
        if session.ctx.replica_index == 0:
            self._send_initial()
        self._start(Op.PULL)
        self.synchronize()
        self.resume = self._ask_resume()
        self.steps = self.resume.step
        if overlap_backward and not self.overlap:
            self._backward = BackwardPush(
                self.flat.params,
                self.flat.offsets,
                self.flat.grads,
                self._requests,
                self.slices,
                session.transport,
                session.ctx.replica_index,
                self.flat.bind_grad,
                bucket_bytes,
            )
            self._backward.step = self.steps

    @property
    def overlaps_backward(self) -> bool:
        """Whether the next step's gradient leaves during backward (see backward_push.py)."""
        return self._backward is not None and self._backward.active

    def _ask_resume(self) -> ResumePoint:
        """Where this worker continues: the furthest position any server has for it.

        Not the earliest: a server that replaced a lost one restored its checkpoint's positions
        and learns the others' only as they rejoin, so a replacement of a worker lost meanwhile
        would go back to the checkpoint (and repeat hundreds of steps every server but that one
        has). A step a server missed (pushed to another before the loss) is not pushed again;
        after a whole restart every server restored the same checkpoint and they agree."""
        wait_all(self._requests_out(Op.RESUME))
        buffers = [new_header_buffer() for _ in self.slices]
        wait_all(
            self.session.transport.recv(buffer, part.server, TAG_REPLY, "resume point")
            for buffer, part in zip(buffers, self.slices, strict=True)
        )
        points = [ResumePoint.decode(buffer) for buffer in buffers]
        return max(points, key=lambda point: point.step)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the flat gradient buffer (`set_to_none` is accepted and ignored on purpose)."""
        self.flat.bind_grads()
        self.flat.grads.zero_()
        for table in self.session.tables:
            table.touched.clear()

    def step(self) -> None:
        self.flat.bind_grads()
        self.synchronize()
        backward = self._backward
        confirmed = backward is not None and backward.active and backward.confirm()
        for table in self.session.tables:
            table.push()
        self._pushing = self.steps
        if confirmed:
            self._start(Op.PULL_AFTER_PARTS)
        else:
            for request, part in zip(self._requests, self.slices, strict=True):
                request_payload(request).copy_(self.flat.grads[part.start : part.stop])
            self._start(Op.PUSH_PULL)
        self.steps += 1
        if not self.overlap:
            self.synchronize()

    def synchronize(self) -> None:
        """Complete the exchange in flight, if any, and install the parameters it brought.

        Also waits for the gradient parts still being pushed during backward, so that no other
        message to the servers overtakes them."""
        if self._backward is not None and self._backward.active:
            self._backward.drain()
        if not self._in_flight:
            return
        pending, self._in_flight = self._in_flight, []
        wait_all(pending)
        self._pushing = None
        if self._inbox is not self.flat.values:
            self.flat.values.copy_(self._inbox)

    def initial_values(self, server: int) -> list[tuple[torch.Tensor, int, str]]:
        """Worker 0's INIT to a server that replaced a lost one, with the values it has now:
        a replacement without a checkpoint adopts them, one with a checkpoint checks sizes."""
        part = self.slices[server]
        header = Header(
            Op.INIT, 0, self.steps, part.numel, (self.flat.numel, 0, 0), (4 * part.numel, 0)
        )
        values = self.flat.values[part.start : part.stop].detach().to("cpu", copy=True)
        return [
            (header.encode(new_header_buffer()), TAG_HEADER, "init"),
            (values, TAG_PAYLOAD, "init"),
        ]

    def position(self, server: int) -> tuple[torch.Tensor, int, str]:
        """REJOIN: the step of this worker's next push (the one in flight, if any)."""
        step = self.steps if self._pushing is None else self._pushing
        header = Header(Op.REJOIN, self.session.ctx.replica_index, step, 0)
        return header.encode(new_header_buffer()), TAG_HEADER, f"rejoin at step {step}"

    def _header(self, op: Op, part: Slice, progress: int = 0) -> Header:
        carried = 4 * part.numel if op in (Op.PUSH_PULL, Op.INIT) else 0
        extra = (self.flat.numel, 0, 0)
        worker = self.session.ctx.replica_index
        return Header(op, worker, self.steps, part.numel, extra, (carried, 0), progress)

    def _progress_block(self, op: Op, part: Slice) -> bytes | None:
        """The latest report, when this request may carry it and it is time to send one."""
        if part.server != 0 or op not in PROGRESS_OPS:
            return None
        return self.session.outbox.take(time.monotonic(), force=op is Op.DONE)

    def _requests_out(self, op: Op) -> list[Transfer]:
        """One request per server: the header alone, or (PUSH_PULL) with the gradient behind it;
        server 0's may carry the latest report behind that (progress_block).

        An inline payload counts as payload bytes in the transport's counts, like a separate
        one; a progress block as header bytes."""
        transport = self.session.transport
        sends = []
        for request, part in zip(self._requests, self.slices, strict=True):
            block = self._progress_block(op, part)
            header = self._header(op, part, len(block) if block else 0)
            if op is Op.PUSH_PULL:
                header_bytes = 4 * REQUEST_PAYLOAD_OFFSET
                count = [(TAG_HEADER, header_bytes), (TAG_PAYLOAD, 4 * part.numel)]
                message, what = request, f"gradient of step {self.steps}"
                if block:
                    message = self._to_server0[: request.numel() + progress_block.FLOATS]
            elif block:
                message, count = self._bare_to_server0, None
                what = f"{op.name} request"
            else:
                message, what, count = request[: 2 * HEADER_LEN], f"{op.name} request", None
            header.encode(request_header(message))
            if block:
                message[-progress_block.FLOATS :].numpy().view(np.uint8)[:] = np.frombuffer(
                    block, dtype=np.uint8
                )
                if count is not None:
                    count.append((TAG_HEADER, len(block)))
            sends.append(transport.send(message, part.server, TAG_HEADER, what, count))
        return sends

    def _send_initial(self) -> None:
        """Worker 0's INIT: the header, then the slice's values as their own message (the
        server sizes its buffers from this request, so it cannot have posted room for it)."""
        transport = self.session.transport
        wait_all(self._requests_out(Op.INIT))
        payloads = []
        for request, part in zip(self._requests, self.slices, strict=True):
            payload = request_payload(request)
            payload.copy_(self.flat.values[part.start : part.stop])
            payloads.append(transport.send(payload, part.server, TAG_PAYLOAD, "init"))
        wait_all(payloads)

    def _start(self, op: Op) -> None:
        """Send one request to every server at once and post the receipt of every reply slice."""
        transport = self.session.transport
        sends = self._requests_out(op)
        replies = [
            transport.recv(
                self._inbox[part.start : part.stop],
                part.server,
                TAG_REPLY,
                f"parameters after step {self.steps}",
            )
            for part in self.slices
        ]
        self._in_flight = sends + replies

    def close(self) -> list[ServerStats]:
        """Say DONE to every server and collect each one's statistics."""
        self.synchronize()
        if self._backward is not None:
            self._backward.close()
        wait_all(self._requests_out(Op.DONE))
        buffers = [new_header_buffer() for _ in self.slices]
        wait_all(
            self.session.transport.recv(buffer, part.server, TAG_REPLY, "final statistics")
            for buffer, part in zip(buffers, self.slices, strict=True)
        )
        return [ServerStats.decode(buffer) for buffer in buffers]


class WorkerSession:
    """A worker's membership in the job: its context, transport, optimizer and progress."""

    def __init__(self, ctx: JobContext, report_interval: float = 1.0):
        self.ctx = ctx
        self.transport = Transport(ctx, rejoin=self._rejoin)
        self.transport.connect()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._leave)
        self.reporter = ProgressReporter(ctx.replica_index, report_interval)
        self.outbox = ProgressOutbox(ctx.replica_index)
        """The latest report, until a request to server 0 carries it."""
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._optimizer: ParameterServerOptimizer | None = None
        self.server_stats: list[ServerStats] = []
        self.tables: list[TableClient] = []
        self._start_step: int | None = None

    @property
    def config(self) -> dict[str, Any]:
        """spec.training.config: the user's own free-form settings."""
        return self.ctx.training.config

    def config_as(self, schema: type[SettingsT]) -> SettingsT:
        """spec.training.config validated by the user's pydantic model (exit 78 when wrong)."""
        try:
            return schema.model_validate(self.config)
        except ValidationError as error:
            problems = describe_validation_error(error, prefix="spec.training.config.")
            raise ContractError(f"PSJOB_TRAINING config does not fit: {problems}") from None

    @property
    def worker_index(self) -> int:
        return self.ctx.replica_index

    @property
    def num_workers(self) -> int:
        return self.ctx.num_workers

    def optimizer(
        self,
        model: torch.nn.Module,
        overlap_backward: bool = False,
        bucket_bytes: int = BUCKET_BYTES,
    ) -> ParameterServerOptimizer:
        """Attach the model's trainable parameters to the servers; call once, after .to(device).

        `overlap_backward` (sync and ssp modes): push the gradient in buckets of about
        `bucket_bytes` while backward runs. It is exact whatever runs between backward() and
        step() (a changed gradient is sent again whole, and the overlap ends). Off by default:
        it pays where workers have cores to spare while backward runs; where every core is busy
        (more processes than cores) it measured slower (docs/runtime.md, Performance).
        """
        if bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
        if self._optimizer is not None:
            raise RuntimeError("session.optimizer() was already called: attach one model per job")
        params = [p for p in model.parameters() if p.requires_grad]
        self._optimizer = ParameterServerOptimizer(self, params, overlap_backward, bucket_bytes)
        self._start_step = self._optimizer.resume.step
        return self._optimizer

    @property
    def start_step(self) -> int:
        """The step this worker resumes from: 0 on a fresh start, else its checkpointed position.

        Valid after `optimizer()`. Skip the data of steps before it, e.g. start a step loop there.
        """
        if self._start_step is None:
            raise RuntimeError("session.start_step is known once session.optimizer() has run")
        return self._start_step

    def embedding(self, num_rows: int, dim: int, init_scale: float = 0.01) -> ShardedEmbedding:
        """Declare an embedding table held by the servers (rows split by id % servers).

        Every worker declares the same tables in the same order, before training. Rows start
        uniform in [-init_scale, init_scale], the same whatever the server count.
        """
        if num_rows < 1 or dim < 1:
            raise ValueError(
                f"an embedding table needs num_rows >= 1 and dim >= 1, got {num_rows} x {dim}"
            )
        self.quiesce()
        client = TableClient(self, TableSpec(len(self.tables), num_rows, dim))
        client.declare(init_scale)
        self.tables.append(client)
        return ShardedEmbedding(client)

    def dynamic_embedding(
        self,
        dim: int,
        *,
        init_scale: float = 0.01,
        admit_after: int = 0,
        ttl_steps: int | None = None,
        max_rows_per_server: int | None = None,
    ) -> ShardedEmbedding:
        """Declare a dynamic embedding table: any int64 id but -2**63, a row per distinct id.

        Ids reach servers by a mixing hash (even for consecutive or skewed ids). A row starts
        uniform in [-init_scale, init_scale] (a hash of its id) when a push first holds its id,
        or with `admit_after` k >= 2, at the k-th push (lookups return zeros until then). Rows
        not updated for `ttl_steps` of the table's steps are removed; a server keeps at most
        `max_rows_per_server`, evicting the least recently updated. spec.training.embeddings
        may tighten each bound (see docs/runtime.md, Dynamic tables).
        """
        if dim < 1:
            raise ValueError(f"a dynamic table needs dim >= 1, got {dim}")
        options = DynamicOptions(admit_after, ttl_steps, max_rows_per_server)
        self.quiesce()
        spec = DynamicTableSpec(len(self.tables), dim, float(init_scale), options)
        client = TableClient(self, spec)
        client.declare(init_scale)
        self.tables.append(client)
        return ShardedEmbedding(client)

    def _leave(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGTERM (the pod deleted: a scale-down, a drain): tell every server, each on a new
        connection (the current one may be mid-message), that this worker leaves, so no round
        or staleness bound waits for it; then exit 143, as the signal would have."""
        deadline = time.monotonic() + LEAVE_SECONDS
        header = Header(Op.LEAVE, self.ctx.replica_index, 0, 0).encode(new_header_buffer())
        for server in range(self.ctx.num_servers):
            try:
                open_connection(self.ctx, server, deadline).send_frame(header, TAG_HEADER, "leave")
            except PsjobError as error:
                log(f"worker {self.ctx.replica_index}: could not tell server {server}: {error}")
        sys.stdout.flush()
        os._exit(ExitCode.TERMINATED)

    def _rejoin(self, server: int) -> list[tuple[torch.Tensor, int, str]]:
        """What a server that replaced a lost one learns first from this worker: worker 0's
        values, every table's declaration, this worker's position; then the transport sends
        again what the lost server had not answered."""
        optimizer = self._optimizer
        frames = []
        if optimizer is not None and self.ctx.replica_index == 0:
            frames += optimizer.initial_values(server)
        for table in self.tables:
            frames += table.declaration
        if optimizer is not None:
            frames.append(optimizer.position(server))
        return frames

    def quiesce(self) -> None:
        """Complete any exchange in flight (async overlap) before another message goes out."""
        if self._optimizer is not None:
            self._optimizer.synchronize()

    def partition(self, dataset: Dataset[Any]) -> Subset[Any]:
        """This worker's share of `dataset`: every W-th item from its index (sizes differ by 1)."""
        size = len(dataset)  # type: ignore[arg-type]
        return Subset(dataset, range(self.worker_index, size, self.num_workers))

    def report(self, step: int, loss: float, samples: int = 0, **metrics: float) -> None:
        """Report this worker's progress: step, loss, samples since the last report, metrics.

        Prints a progress line (at most once a second) and hands the report to server 0 on the
        next request sent anyway, for GET /progress and `status.progress`. At most 16 metrics
        named [A-Za-z_][A-Za-z0-9_]{0,62} with finite values; what breaks these rules (or a
        negative step or samples, a NaN loss) is left out with a warning, never an error.
        """
        report = self.outbox.put(step, loss, samples, metrics)
        if report is not None:
            self.reporter.report(report.step, report.loss, samples, report.metrics)

    def finish(self) -> list[ServerStats]:
        """Tell every server this worker is done; they exit once all workers are."""
        if self._optimizer is None:
            return []
        optimizer, self._optimizer = self._optimizer, None
        self.server_stats = optimizer.close()
        return self.server_stats

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.finish()


def init(env: dict[str, str] | None = None) -> WorkerSession:
    """Join the job as a worker: read the environment contract and connect to the servers."""
    install_exit_hook()
    ctx = read_context(os.environ if env is None else env)
    if ctx.role is not Role.WORKER:
        raise ContractError(
            "PSJOB_ROLE=server but psjob_runtime.init() is the worker API: servers run "
            "`python -m psjob_runtime server`"
        )
    return WorkerSession(ctx)
