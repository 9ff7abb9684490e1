"""The first pass: the attempt as observed, frozen, so every later rule reads the same facts.

A replica is remembered after its pod is gone: a worker that succeeded and was then cleaned up
must not be created again, and a running pod that vanished is a failure. Both need the memory
that the previous status keeps, which is why the snapshot is taken from the job and the pods:
each role's phase runs hold every replica's phase (one character each), and the few
per-replica entries add what else a gone pod showed (exit code, node).

Replicas are those the spec asks for now: after a `kubectl scale` down, the pods beyond the new
count are surplus, to be deleted and never judged (they leave the servers on SIGTERM); the status
forgets them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psjob_operator.models import JobStatus, PSJob, Recovery, ReplicaPhase, Role, SuccessPolicy
from psjob_operator.observe import PodView
from psjob_operator.render import spec_hash

FINISHED = frozenset({ReplicaPhase.SUCCEEDED, ReplicaPhase.FAILED, ReplicaPhase.STOPPED})
"""Phases a replica keeps once its pod is gone."""

LOST = frozenset({ReplicaPhase.FAILED, ReplicaPhase.DELETED, ReplicaPhase.TERMINATING})
"""Phases of a replica whose pod will not finish its work in this attempt."""

ReplicaKey = tuple[Role, int]
"""(role, index) of a replica."""


@dataclass(frozen=True)
class Replica:
    """One replica of the attempt: what its pod shows now, and what the status said before."""

    role: Role
    index: int
    phase: ReplicaPhase
    exit_code: int | None
    node: str | None
    reported: ReplicaPhase | None
    """The phase the previous status gave it in this attempt; None when it is new."""
    incarnation: int = 0
    """Its pod's psjob.dev/incarnation (recreated in place that many times); 0 with no pod."""
    created: datetime | None = None
    """When its pod was created; None with no pod."""

    @property
    def key(self) -> ReplicaKey:
        return self.role, self.index

    @property
    def lost(self) -> bool:
        return self.phase in LOST

    @property
    def was_lost(self) -> bool:
        return self.reported in LOST


@dataclass(frozen=True)
class Snapshot:
    job: PSJob
    attempt: int
    pods: tuple[PodView, ...]
    """Every pod of the job, of any attempt."""
    replicas: tuple[Replica, ...]
    """This attempt's replicas the spec asks for, by role and index."""
    surplus: tuple[PodView, ...]
    """Pods of this attempt beyond their role's replicas: a `kubectl scale` took them away."""
    tolerated: tuple[Replica, ...]
    """Lost workers the job may go on without (runPolicy.maxFailedWorkers), earliest first."""
    outdated: bool
    """A pod of this attempt that is still running was made from an older spec (under
    recovery InPlace, one that differs only in workers.replicas is not: `_outdated`)."""

    @property
    def tolerated_keys(self) -> frozenset[ReplicaKey]:
        return frozenset(r.key for r in self.tolerated)

    def current(self) -> list[PodView]:
        return [p for p in self.pods if p.attempt == self.attempt]

    def stale(self) -> list[PodView]:
        """Pods of an older attempt: their names are reused, so they must go first."""
        return [p for p in self.pods if p.attempt != self.attempt]

    def next_attempt(self) -> "Snapshot":
        """The same observation, seen from the attempt a restart or a resume begins."""
        return take_snapshot(self.job, self.pods, self.attempt + 1)


def take_snapshot(job: PSJob, pods: Sequence[PodView], attempt: int | None = None) -> Snapshot:
    """The job's attempt (its status' by default) as `pods` show it."""
    attempt = job.status.attempt if attempt is None else attempt
    replicas = _replicas(job, pods, attempt)
    return Snapshot(
        job=job,
        attempt=attempt,
        pods=tuple(pods),
        replicas=replicas,
        surplus=tuple(
            p for p in pods if p.attempt == attempt and not _wanted(job, p.role, p.index)
        ),
        tolerated=_tolerated(job, replicas),
        outdated=_outdated(job, pods, attempt),
    )


def _wanted(job: PSJob, role: Role, index: int) -> bool:
    return index < job.spec.replica_spec(role).replicas


def _outdated(job: PSJob, pods: Sequence[PodView], attempt: int) -> bool:
    """Whether a running pod of `attempt` was made from another spec than the job's.

    Under recovery InPlace a pod made before a `kubectl scale` is not: its digest is the one this
    spec has with the worker count in its PSJOB_NUM_WORKERS, so only workers.replicas changed,
    which scales the job in place. Under RestartJob any difference restarts the job, as does
    any other change under InPlace. Digests are computed once per worker count seen.
    """
    digest = spec_hash(job)
    in_place = job.spec.run_policy.effective_recovery is Recovery.IN_PLACE
    scaled: dict[int, str] = {}
    for pod in pods:
        if pod.attempt != attempt or pod.finished or pod.spec_hash == digest:
            continue
        if not in_place or pod.num_workers is None:
            return True
        if pod.num_workers not in scaled:
            scaled[pod.num_workers] = spec_hash(job, pod.num_workers)
        if pod.spec_hash != scaled[pod.num_workers]:
            return True
    return False


def _observed_phase(pod: PodView) -> ReplicaPhase:
    if pod.deleting and not pod.finished:
        return ReplicaPhase.TERMINATING
    try:
        return ReplicaPhase(pod.phase)
    except ValueError:
        return ReplicaPhase.UNKNOWN


def _replicas(job: PSJob, pods: Sequence[PodView], attempt: int) -> tuple[Replica, ...]:
    reported = _reported_phases(job.status, attempt)
    entries = {(r.role, r.index): r for r in job.status.replicas if r.restarts == attempt}
    observed = {(p.role, p.index): p for p in pods if p.attempt == attempt}
    replicas = []
    for key in sorted(reported.keys() | observed.keys()):
        if not _wanted(job, *key):
            continue
        before = reported.get(key)
        pod = observed.get(key)
        if pod is not None:
            phase, exit_code, node = _observed_phase(pod), pod.exit_code, pod.node
            replicas.append(
                Replica(*key, phase, exit_code, node, before, pod.incarnation, pod.created)
            )
            continue
        assert before is not None
        phase = before if before in FINISHED else ReplicaPhase.DELETED
        entry = entries.get(key)
        exit_code, node = (None, None) if entry is None else (entry.exit_code, entry.node)
        replicas.append(Replica(key[0], key[1], phase, exit_code, node, before))
    return tuple(replicas)


def _reported_phases(status: JobStatus, attempt: int) -> dict[ReplicaKey, ReplicaPhase]:
    """The phase the status gave each replica of `attempt`: its role's phase runs, and the
    entries, which were the only memory of operators before the runs and say the same since."""
    reported: dict[ReplicaKey, ReplicaPhase] = {}
    if status.attempt == attempt:
        for role in Role:
            for index, phase in enumerate(status.role_status(role).phases):
                if phase is not None:
                    reported[role, index] = phase
    reported.update({(r.role, r.index): r.phase for r in status.replicas if r.restarts == attempt})
    return reported


def _tolerated(job: PSJob, replicas: tuple[Replica, ...]) -> tuple[Replica, ...]:
    """The lost workers the job goes on without: at most runPolicy.maxFailedWorkers.

    Only async servers drop a lost worker, which admission ensures for maxFailedWorkers > 0.
    Workers lost earlier keep their place, so the one that goes over the limit is the one
    judged by restartPolicy. Worker 0 decides success under Worker0: never tolerated.
    """
    worker0_decides = job.spec.success_policy == SuccessPolicy.WORKER0
    candidates = [
        r
        for r in replicas
        if r.role is Role.WORKER and r.lost and not (r.index == 0 and worker0_decides)
    ]
    candidates.sort(key=lambda r: (not r.was_lost, r.index))
    return tuple(candidates[: job.spec.run_policy.max_failed_workers])
