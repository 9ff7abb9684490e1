"""Push a blocking step's gradient to the servers while backward still runs; confirm it at step().

Opt-in: `session.optimizer(model, overlap_backward=True)`.

DDP hides its allreduce behind the backward pass by reducing buckets of gradients as autograd
produces them. This does the same for the push to the servers (sync and ssp modes): parameters
are grouped into buckets of about BUCKET_BYTES in reverse order (the order backward produces
their gradients); once autograd has accumulated every gradient of a bucket (post-accumulate-grad
hooks), a sender thread copies the bucket's range of the flat gradient into the per-server
request buffers and sends it as PUSH_PART requests. Buckets go out strictly in order, so each
server gets its parts from the end of its slice to the start, as the protocol requires; a bucket
that is ready early waits for the ones before it.

What was pushed is tentative. Code between backward() and step() may still change the gradient
(clipping, scaling, a second backward() for gradient accumulation, a parameter that got no
gradient), and it must see and decide the whole gradient: `confirm()` compares every pushed range
bit for bit with the gradient as step() finds it. Only when all match does the step send a bare
PULL_AFTER_PARTS header; otherwise step() pushes the whole gradient as before, the server
discards the parts, and this worker stops pushing during backward for the rest of the job (with
one log line), since such code usually changes the gradient at every step.
"""

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from psjob_runtime.errors import PsjobError
from psjob_runtime.log import log
from psjob_runtime.sharding import Slice
from psjob_runtime.transport import Transport
from psjob_runtime.wire import (
    TAG_HEADER,
    TAG_PAYLOAD,
    Header,
    Op,
    new_header_buffer,
    request_payload,
)

BUCKET_BYTES = 1 << 20
"""A bucket closes once it holds this many gradient bytes (DDP's first bucket is as large): large
enough that a part's two messages cost little against its bytes, small enough that the first
bucket leaves while most of backward is still to run."""


@dataclass(frozen=True)
class Bucket:
    start: int
    stop: int
    """The bucket's range of the flat buffers."""
    params: frozenset[int]
    """Indices of its parameters."""


def make_buckets(offsets: Sequence[tuple[int, int]], bucket_bytes: int) -> list[Bucket]:
    """Consecutive parameters from the last to the first, cut after `bucket_bytes` of gradient."""
    buckets: list[Bucket] = []
    members: list[int] = []
    for index in reversed(range(len(offsets))):
        members.append(index)
        size = offsets[members[0]][1] - offsets[index][0]
        if 4 * size >= bucket_bytes or index == 0:
            start, stop = offsets[index][0], offsets[members[0]][1]
            buckets.append(Bucket(start, stop, frozenset(members)))
            members = []
    return buckets


class BackwardPush:
    """A worker's pushes during backward: hooks, buckets, the sender thread, the confirmation."""

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        offsets: Sequence[tuple[int, int]],
        grads: torch.Tensor,
        requests: Sequence[torch.Tensor],
        slices: Sequence[Slice],
        transport: Transport,
        worker: int,
        bind_grad: Callable[[int], None],
        bucket_bytes: int = BUCKET_BYTES,
    ):
        self.grads = grads
        self.requests = requests
        self.slices = slices
        self.transport = transport
        self.worker = worker
        self.bind_grad = bind_grad
        self.buckets = make_buckets(offsets, bucket_bytes)
        self._bucket_of = {i: b for b, bucket in enumerate(self.buckets) for i in bucket.params}
        self._headers = [new_header_buffer() for _ in slices]
        self.step = 0
        self.active = True
        self._reset()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="backward-push", daemon=True)
        self._thread.start()
        # torch leaves register_post_accumulate_grad_hook unannotated.
        self._hooks = [
            param.register_post_accumulate_grad_hook(self._hook(index))  # type: ignore[no-untyped-call]
            for index, param in enumerate(params)
        ]

    def _reset(self) -> None:
        self._seen: set[int] = set()
        self._missing = [len(bucket.params) for bucket in self.buckets]
        self._released = 0

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def on_grad(_param: torch.Tensor) -> None:
            self._on_grad(index)

        return on_grad

    def _on_grad(self, index: int) -> None:
        """Autograd has accumulated parameter `index`'s gradient (called inside backward)."""
        self.bind_grad(index)
        if index in self._seen:
            return  # a second backward() before step(): confirm() sees the change
        self._seen.add(index)
        self._missing[self._bucket_of[index]] -= 1
        while self._released < len(self.buckets) and self._missing[self._released] == 0:
            self._queue.put(self._released)
            self._released += 1

    def _run(self) -> None:
        while (bucket := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._send(self.buckets[bucket])
            except (PsjobError, RuntimeError) as error:  # raised in the step's thread by drain()
                self._error = error
            finally:
                self._queue.task_done()

    def _send(self, bucket: Bucket) -> None:
        for part in self.slices:
            low, high = max(bucket.start, part.start), min(bucket.stop, part.stop)
            if low >= high:
                continue
            where = slice(low - part.start, high - part.start)
            payload = request_payload(self.requests[part.server])[where]
            payload.copy_(self.grads[low:high])
            header = Header(
                Op.PUSH_PART,
                self.worker,
                self.step,
                part.numel,
                (low - part.start, high - low, 0),
                (4 * (high - low), 0),
            )
            what = f"gradient part of step {self.step}"
            buffer = header.encode(self._headers[part.server])
            self.transport.send(buffer, part.server, TAG_HEADER, what).wait()
            self.transport.send(payload, part.server, TAG_PAYLOAD, what).wait()

    def drain(self) -> None:
        """Wait until every released bucket is on the wire; raise what the sender ran into."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def confirm(self) -> bool:
        """After drain(): True when every bucket went out and matches the gradient bit for bit.

        Starts the next step's bookkeeping; on False, ends the pushes during backward."""
        complete = self._released == len(self.buckets)
        unchanged = complete and all(
            torch.equal(
                request_payload(self.requests[part.server]).view(torch.int32),
                self.grads[part.start : part.stop].view(torch.int32),
            )
            for part in self.slices
        )
        self._reset()
        self.step += 1
        if not unchanged:
            why = (
                "the gradient changed between backward() and step() (clipping, scaling, or "
                "several backward() per step)"
                if complete
                else "some parameters got no gradient from backward()"
            )
            log(
                f"worker {self.worker}: step {self.step - 1}: {why}; its gradient went to the "
                "servers whole, and this worker pushes it after backward from now on"
            )
            self.close()
        return unchanged

    def close(self) -> None:
        """Stop pushing during backward: remove the hooks and end the sender thread."""
        if not self.active:
            return
        self.active = False
        for handle in self._hooks:
            handle.remove()
        self._queue.put(None)
