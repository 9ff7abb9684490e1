"""When a server applies gradients and when a worker may have parameters back: sync, async, ssp.

A server runs one thread per worker (see server.py). Each thread hands the gradient it received
(dense, plus the row gradients of any embedding tables) to the gate and sends back whatever
tensor the gate returns. The gate owns the parameters, the optimizer and one lock, so updates
never interleave and replies never see a half-applied update. Sparse rows follow the same rule as
the dense slice: in sync mode they are averaged over the round's workers and applied once.

- sync: a round closes when every active worker has pushed; the gradients are averaged in worker
  order (deterministic sums) and applied once; everyone gets the same new parameters. A worker
  that is lost or left is not active until it (its replacement) is back, so rounds go on with
  the workers that are there.
- async: a gradient is applied the moment it arrives; the worker gets a snapshot right after.
- ssp: as async, but a worker that has pushed `staleness` more steps than the slowest active
  worker waits until the slowest catches up. The gate records the largest lead it ever allowed.

Every push names its step. One the gate has applied already (the worker's clock is past it) is
not applied again: it is a request sent again after a reconnect. A server that replaced a lost
one starts from its checkpoint's counts and adopts the workers' positions as they rejoin
(`adopt`).
"""

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from psjob_runtime.shards import Shard
from psjob_runtime.training import Mode, TrainingSettings
from psjob_runtime.wire import ServerStats

SparseGrads = list[tuple[Shard, torch.Tensor, torch.Tensor]]
"""One worker's row gradients for one step: (shard, global ids, rows x dim gradients)."""


class Gate(ABC):
    """Shared by the worker threads of one server; every public method is thread-safe."""

    def __init__(
        self,
        params: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        workers: int,
        tables: dict[int, Shard],
    ):
        self.params = params
        self.optimizer = optimizer
        self.tables = tables
        """The server's table shards, shared: tables declared later appear here."""
        self.active = set(range(workers))
        self.rejoined = False
        """Whether a worker has rejoined, i.e. this server replaced a lost one (`adopt`)."""
        self.updates = 0
        self.max_lead = 0
        self.clock = [0] * workers
        """Steps of each worker applied so far: its data position in a checkpoint."""
        self.after_update: Callable[[], None] | None = None
        """Called with the lock held after every update (the server's checkpoint trigger)."""
        self.cond = threading.Condition()

    counts_rounds = False
    """True where one update is one step of every worker (sync rounds)."""

    @property
    def step(self) -> int:
        """The job's step as this server sees it: rounds in sync, updates per worker otherwise."""
        return self.updates if self.counts_rounds else self.updates // len(self.clock)

    def restore(self, updates: int, clock: list[int]) -> None:
        """Continue counting from a checkpoint (before any worker is served)."""
        self.updates = updates
        self.clock = list(clock)

    def _apply(self, grad: torch.Tensor, sparse: list[SparseGrads], divisor: int = 1) -> None:
        self.params.grad = grad
        self.optimizer.step()
        self.params.grad = None
        self._apply_sparse(sparse, divisor)
        self.updates += 1
        if self.after_update is not None:
            self.after_update()

    def _apply_sparse(self, parts: list[SparseGrads], divisor: int) -> None:
        """One step of every table, touched or not (lazy Adam counts steps like SparseAdam)."""
        pieces: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for part in parts:
            for shard, ids, grads in part:
                pieces.setdefault(shard.spec.table, []).append((ids, grads))
        for table in sorted(self.tables):
            shard = self.tables[table]
            found = pieces.get(table, [])
            ids = torch.cat([p[0] for p in found]) if found else torch.empty(0, dtype=torch.int64)
            grads = torch.cat([p[1] for p in found]) if found else torch.empty(0, shard.spec.dim)
            shard.apply(ids, grads, divisor)

    @abstractmethod
    def current(self, worker: int) -> torch.Tensor:
        """Parameters for a worker that asks without pushing (its first pull)."""

    @abstractmethod
    def push(self, worker: int, step: int, grad: torch.Tensor, sparse: SparseGrads) -> torch.Tensor:
        """Take `grad` (valid until this returns) and `sparse` of the worker's `step`; return
        the parameters to send. A step already applied is not applied again."""

    def adopt(self, worker: int, step: int, present: set[int]) -> None:
        """The worker rejoined this server (which replaced a lost one) at `step`: count on
        from there; what this server lost since its checkpoint is not redone.

        The first rejoin narrows the active workers to those connected (`present`): a worker
        lost meanwhile must not hold a round or a bound here while its replacement waits for
        another server, which may be waiting for this one (each is admitted when it connects)."""
        with self.cond:
            if not self.rejoined:
                self.rejoined = True
                self.active &= present | {worker}
            self.clock[worker] = max(self.clock[worker], step)
            self._adopted(step)
            self._on_leave()  # sync: a round the narrowing completed closes
            self.cond.notify_all()

    @abstractmethod
    def _adopted(self, step: int) -> None:
        """Count on from a rejoining worker's `step` (called with the lock held)."""

    @abstractmethod
    def settle(self, quiet_seconds: float, limit_seconds: float) -> None:
        """Bring the state to a step every server can agree on before a final checkpoint."""

    def admit(self, worker: int) -> None:
        """Let `worker` take part: one the job did not start with (scaled up) or one that left
        (SIGTERM) and came back starts from the slowest active worker's position (the round in
        sync), so no bound or round waits on a step it never had; the others keep theirs."""
        with self.cond:
            if worker in self.active:
                return
            if worker >= len(self.clock):
                start = min((self.clock[w] for w in self.active), default=max(self.clock))
                self.clock.extend([start] * (worker + 1 - len(self.clock)))
            self.active.add(worker)
            self.cond.notify_all()

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
    counts_rounds = True

    def __init__(
        self,
        params: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        workers: int,
        tables: dict[int, Shard],
    ):
        super().__init__(params, optimizer, workers, tables)
        self.pending: dict[int, torch.Tensor] = {}
        self.pending_sparse: dict[int, SparseGrads] = {}
        self.sum = torch.zeros_like(params)
        self.round = 0
        self.holding = False
        """Set by settle(): replies are withheld from then on, so no worker starts a new step."""

    def restore(self, updates: int, clock: list[int]) -> None:
        super().restore(updates, clock)
        self.round = updates

    def settle(self, quiet_seconds: float, limit_seconds: float) -> None:
        """Withhold replies, then let the round in progress close (or none start).

        At any moment the servers' rounds differ by at most one: a worker pushes step k only
        after every server closed round k. When all servers are stopped at once (the job's pods
        deleted), one that is a round behind has, or is about to get, every worker's push of
        that round; it closes it and catches up. Withholding replies keeps any server from
        moving further. So every server ends on the same round, and the SIGTERM checkpoints form
        a complete one. A round that does not close within `limit_seconds` (a worker is gone)
        is left open: the checkpoint then holds the last closed round.
        """
        deadline = time.monotonic() + limit_seconds
        with self.cond:
            self.holding = True
            start_round, quiet_since = self.round, time.monotonic()
            while self.round == start_round and time.monotonic() < deadline:
                if self.pending:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= quiet_seconds:
                    return
                self.cond.wait(0.05)

    def current(self, worker: int) -> torch.Tensor:
        # Parameters change only when a round closes, and a round needs this worker's next
        # push, which it sends only after this reply has arrived: no snapshot needed.
        return self.params.detach()

    def push(self, worker: int, step: int, grad: torch.Tensor, sparse: SparseGrads) -> torch.Tensor:
        with self.cond:
            if step < self.round:
                # Its round closed already (with this push, or before this server adopted a
                # later step): the parameters cannot change before this worker's next push.
                return self.params.detach()
            self.pending[worker] = grad
            self.pending_sparse[worker] = sparse
            my_round = self.round
            if self.active <= self.pending.keys():
                self._close_round()
            else:
                self.cond.wait_for(lambda: self.round != my_round)
            # Once settle() holds replies, this thread waits until the process exits.
            self.cond.wait_for(lambda: not self.holding)
            return self.params.detach()

    def _close_round(self) -> None:
        workers = sorted(self.pending)
        grads = [self.pending[w] for w in workers]
        for worker in workers:
            self.clock[worker] = self.round + 1
        if len(grads) == 1:
            average = grads[0]  # one worker left: its gradient is the average, skip a copy
        else:
            average = torch.add(grads[0], grads[1], out=self.sum)
            for grad in grads[2:]:
                average.add_(grad)
            average.div_(len(grads))
        self._apply(average, [self.pending_sparse[w] for w in workers], divisor=len(grads))
        self.pending.clear()
        self.pending_sparse.clear()
        self.round += 1
        self.cond.notify_all()

    def _on_leave(self) -> None:
        # A push of the worker that left stays in the round: it is a gradient of this round.
        if self.pending and self.active <= self.pending.keys():
            self._close_round()

    def admit(self, worker: int) -> None:
        with self.cond:
            if worker >= len(self.clock):
                self.clock.extend([self.round] * (worker + 1 - len(self.clock)))
            super().admit(worker)

    def _adopted(self, step: int) -> None:
        """A round the workers are past is given up: the pushes waiting for it get the
        parameters as they are, and push the adopted round's step next."""
        if step > self.round:
            self.pending.clear()
            self.pending_sparse.clear()
            self.round = self.updates = step


class AsyncGate(Gate):
    def __init__(
        self,
        params: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        workers: int,
        tables: dict[int, Shard],
    ):
        super().__init__(params, optimizer, workers, tables)
        self.replies = [torch.empty_like(params) for _ in range(workers)]

    def admit(self, worker: int) -> None:
        with self.cond:
            super().admit(worker)
            self.replies += [torch.empty_like(self.params) for _ in self.clock[len(self.replies) :]]

    def _snapshot(self, worker: int) -> torch.Tensor:
        # Another thread may apply an update while this reply is on the wire: send a copy.
        return self.replies[worker].copy_(self.params.detach())

    def current(self, worker: int) -> torch.Tensor:
        with self.cond:
            return self._snapshot(worker)

    def push(self, worker: int, step: int, grad: torch.Tensor, sparse: SparseGrads) -> torch.Tensor:
        with self.cond:
            if step >= self.clock[worker]:
                self.clock[worker] = step + 1
                self._apply(grad, [sparse])
            return self._snapshot(worker)

    def _adopted(self, step: int) -> None:
        self.updates = max(self.updates, sum(self.clock))

    def _on_leave(self) -> None:
        """Nobody waits for anybody in async; ssp's waiters re-check on the notify."""

    def settle(self, quiet_seconds: float, limit_seconds: float) -> None:
        """Servers' update counts never line up in async and ssp: checkpoint as they are."""


class StaleSynchronousGate(AsyncGate):
    def __init__(
        self,
        params: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        workers: int,
        tables: dict[int, Shard],
        staleness: int,
    ):
        super().__init__(params, optimizer, workers, tables)
        self.staleness = staleness

    def _lead(self, worker: int) -> int:
        return self.clock[worker] - min(self.clock[w] for w in self.active)

    def push(self, worker: int, step: int, grad: torch.Tensor, sparse: SparseGrads) -> torch.Tensor:
        with self.cond:
            if step < self.clock[worker]:
                return self._snapshot(worker)
            self.clock[worker] = step + 1
            self._apply(grad, [sparse])
            self.cond.notify_all()
            self.cond.wait_for(lambda: self._lead(worker) <= self.staleness)
            self.max_lead = max(self.max_lead, self._lead(worker))
            return self._snapshot(worker)


def make_gate(
    training: TrainingSettings,
    params: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    workers: int,
    tables: dict[int, Shard],
) -> Gate:
    if training.mode is Mode.SYNC:
        return SyncGate(params, optimizer, workers, tables)
    if training.mode is Mode.ASYNC:
        return AsyncGate(params, optimizer, workers, tables)
    assert training.staleness is not None, "TrainingSettings guarantees staleness for ssp"
    return StaleSynchronousGate(params, optimizer, workers, tables, training.staleness)
