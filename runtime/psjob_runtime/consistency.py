"""When a server applies gradients and when a worker may have parameters back: sync, async, ssp.

A server runs one thread per worker (see server.py). Each thread hands the gradient it received
to the gate and sends back whatever tensor the gate returns. The gate owns the parameters, the
optimizer and one lock, so updates never interleave and replies never see a half-applied update.

- sync: a round closes when every active worker has pushed; the gradients are averaged in worker
  order (deterministic sums) and applied once; everyone gets the same new parameters.
- async: a gradient is applied the moment it arrives; the worker gets a snapshot right after.
- ssp: as async, but a worker that has pushed `staleness` more steps than the slowest active
  worker waits until the slowest catches up. The gate records the largest lead it ever allowed.
"""

import threading
from abc import ABC, abstractmethod

import torch

from psjob_runtime.training import Mode, TrainingSettings
from psjob_runtime.wire import ServerStats


class Gate(ABC):
    """Shared by the worker threads of one server; every public method is thread-safe."""

    def __init__(self, params: torch.Tensor, optimizer: torch.optim.Optimizer, workers: int):
        self.params = params
        self.optimizer = optimizer
        self.active = set(range(workers))
        self.updates = 0
        self.max_lead = 0
        self.cond = threading.Condition()

    def _apply(self, grad: torch.Tensor) -> None:
        self.params.grad = grad
        self.optimizer.step()
        self.params.grad = None
        self.updates += 1

    @abstractmethod
    def current(self, worker: int) -> torch.Tensor:
        """Parameters for a worker that asks without pushing (its first pull)."""

    @abstractmethod
    def push(self, worker: int, grad: torch.Tensor) -> torch.Tensor:
        """Take `grad` (valid until this returns) and return the parameters to send back."""

    def leave(self, worker: int) -> ServerStats:
        with self.cond:
            self.active.discard(worker)
            self._on_leave()
            self.cond.notify_all()
            return ServerStats(updates=self.updates, max_lead=self.max_lead)

    @abstractmethod
    def _on_leave(self) -> None:
        """Let waiting workers go on now that one has left (called with the lock held)."""


class SyncGate(Gate):
    def __init__(self, params: torch.Tensor, optimizer: torch.optim.Optimizer, workers: int):
        super().__init__(params, optimizer, workers)
        self.pending: dict[int, torch.Tensor] = {}
        self.sum = torch.zeros_like(params)
        self.round = 0

    def current(self, worker: int) -> torch.Tensor:
        # Parameters change only when a round closes, and a round needs this worker's next
        # push, which it sends only after this reply has arrived: no snapshot needed.
        return self.params.detach()

    def push(self, worker: int, grad: torch.Tensor) -> torch.Tensor:
        with self.cond:
            self.pending[worker] = grad
            my_round = self.round
            if len(self.pending) == len(self.active):
                self._close_round()
            else:
                self.cond.wait_for(lambda: self.round != my_round)
            return self.params.detach()

    def _close_round(self) -> None:
        grads = [self.pending[w] for w in sorted(self.pending)]
        if len(grads) == 1:
            average = grads[0]  # one worker left: its gradient is the average, skip a copy
        else:
            average = torch.add(grads[0], grads[1], out=self.sum)
            for grad in grads[2:]:
                average.add_(grad)
            average.div_(len(grads))
        self._apply(average)
        self.pending.clear()
        self.round += 1
        self.cond.notify_all()

    def _on_leave(self) -> None:
        if self.pending and len(self.pending) == len(self.active):
            self._close_round()


class AsyncGate(Gate):
    def __init__(self, params: torch.Tensor, optimizer: torch.optim.Optimizer, workers: int):
        super().__init__(params, optimizer, workers)
        self.replies = [torch.empty_like(params) for _ in range(workers)]

    def _snapshot(self, worker: int) -> torch.Tensor:
        # Another thread may apply an update while this reply is on the wire: send a copy.
        return self.replies[worker].copy_(self.params.detach())

    def current(self, worker: int) -> torch.Tensor:
        with self.cond:
            return self._snapshot(worker)

    def push(self, worker: int, grad: torch.Tensor) -> torch.Tensor:
        with self.cond:
            self._apply(grad)
            return self._snapshot(worker)

    def _on_leave(self) -> None:
        """Nobody waits for anybody in async; ssp's waiters re-check on the notify."""


class StaleSynchronousGate(AsyncGate):
    def __init__(
        self, params: torch.Tensor, optimizer: torch.optim.Optimizer, workers: int, staleness: int
    ):
        super().__init__(params, optimizer, workers)
        self.staleness = staleness
        self.clock = [0] * workers

    def _lead(self, worker: int) -> int:
        return self.clock[worker] - min(self.clock[w] for w in self.active)

    def push(self, worker: int, grad: torch.Tensor) -> torch.Tensor:
        with self.cond:
            self._apply(grad)
            self.clock[worker] += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self._lead(worker) <= self.staleness)
            self.max_lead = max(self.max_lead, self._lead(worker))
            return self._snapshot(worker)


def make_gate(
    training: TrainingSettings,
    params: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    workers: int,
) -> Gate:
    if training.mode is Mode.SYNC:
        return SyncGate(params, optimizer, workers)
    if training.mode is Mode.ASYNC:
        return AsyncGate(params, optimizer, workers)
    assert training.staleness is not None, "TrainingSettings guarantees staleness for ssp"
    return StaleSynchronousGate(params, optimizer, workers, training.staleness)
