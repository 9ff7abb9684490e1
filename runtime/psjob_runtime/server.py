"""A parameter server: holds one slice of the flat parameters and its optimizer state.

Servers run no user code: `python -m psjob_runtime server`. They learn the slice's size from
worker 0's INIT, so the same server image serves any model. One thread per worker waits on that
worker alone; a wait on one known peer fails at once when that peer's connection drops (a
receive from any source would only time out), so a dead worker is named within moments. The
first failure in any thread ends the server with that failure's exit code.
"""

import sys
import threading
import time

import torch

from psjob_runtime.consistency import Gate, make_gate
from psjob_runtime.contract import JobContext
from psjob_runtime.errors import PeerLostError, PsjobError
from psjob_runtime.server_optimizer import build_optimizer
from psjob_runtime.transport import Transport, join_group
from psjob_runtime.wire import (
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    Header,
    Op,
    ProtocolError,
    new_header_buffer,
)


class ModelMismatchError(PsjobError):
    """Workers disagree about the model; a restart would not fix that (exit code 1)."""


class ParameterServer:
    """One server's state and threads; `run()` returns the gate once every worker said DONE."""

    def __init__(self, ctx: JobContext, transport: Transport):
        self.ctx = ctx
        self.transport = transport
        self.gate: Gate | None = None
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.finished = 0
        self.changed = threading.Condition()

    def _adopt_initial(self, initial: torch.Tensor) -> None:
        param = torch.nn.Parameter(initial, requires_grad=False)
        optimizer = build_optimizer(self.ctx.training.optimizer, param)
        self.gate = make_gate(self.ctx.training, param, optimizer, self.ctx.num_workers)
        self.ready.set()

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

    def _serve_worker(self, worker: int) -> None:
        """Answer one worker's requests until it says DONE."""
        rank = self.ctx.worker_rank(worker)
        header_buf = new_header_buffer()
        grad: torch.Tensor | None = None
        while True:
            self.transport.recv(header_buf, rank, TAG_HEADER, "waiting for its next request").wait()
            header = Header.decode(header_buf)
            if header.op is Op.INIT:
                initial = torch.empty(header.numel, dtype=torch.float32)
                self.transport.recv(initial, rank, TAG_PAYLOAD, "initial parameters").wait()
                if not self.ready.is_set():
                    self._adopt_initial(initial)
                continue
            gate = self._wait_ready(worker)
            if header.op is Op.PULL:
                self._check_size(header, gate)
                reply = gate.current(worker)
            elif header.op is Op.PUSH_PULL:
                self._check_size(header, gate)
                if grad is None:
                    grad = torch.empty_like(gate.params.detach())
                what = f"gradient of step {header.step}"
                self.transport.recv(grad, rank, TAG_PAYLOAD, what).wait()
                reply = gate.push(worker, grad)
            elif header.op is Op.DONE:
                stats = gate.leave(worker)
                self.transport.send(
                    stats.encode(header_buf), rank, TAG_REPLY, "final statistics"
                ).wait()
                return
            else:
                raise ProtocolError(f"worker {worker} sent op {header.op.name}, not served here")
            self.transport.send(
                reply, rank, TAG_REPLY, f"parameters after step {header.step}"
            ).wait()

    def _guarded(self, worker: int) -> None:
        try:
            self._serve_worker(worker)
        except BaseException as error:  # handed to the main thread, which ends the process
            with self.changed:
                if self.failure is None:
                    self.failure = error
                self.changed.notify_all()
            return
        with self.changed:
            self.finished += 1
            self.changed.notify_all()

    def run(self) -> Gate:
        """Serve every worker until all have finished; raise the first failure of any thread."""
        threads = [
            threading.Thread(target=self._guarded, args=(w,), name=f"worker-{w}", daemon=True)
            for w in range(self.ctx.num_workers)
        ]
        for thread in threads:
            thread.start()
        with self.changed:
            self.changed.wait_for(lambda: self.failure is not None or self.finished == len(threads))
        if self.failure is not None:
            raise self.failure
        assert self.gate is not None
        return self.gate


def serve(ctx: JobContext) -> None:
    """The server role's whole life: join, serve until every worker is done, summarise."""
    torch.set_num_threads(1)
    # One thread per worker hands the GIL around at every message; the default 5 ms switch
    # interval would add that much latency whenever two of them want it at once.
    sys.setswitchinterval(0.0005)
    started = time.monotonic()
    join_group(ctx)
    gate = ParameterServer(ctx, Transport(ctx)).run()
    elapsed = time.monotonic() - started
    bound = f" (bound {ctx.training.staleness})" if ctx.training.staleness is not None else ""
    print(
        f"server {ctx.replica_index}: all {ctx.num_workers} workers finished; "
        f"{gate.updates} updates of {gate.params.numel()} parameters in {elapsed:.1f} s; "
        f"mode {ctx.training.mode}; max lead over slowest worker {gate.max_lead}{bound}",
        flush=True,
    )
    sys.stdout.flush()
