"""The third pass: the status users read, written from the snapshot and the transition's outcome.

The only place that writes status fields. Conditions follow from the phase as one table, the
way Kubeflow's status helpers keep Running false beside Failed or Succeeded; Ready is always
present, True or False, so that Flux (kstatus) and Argo CD can judge the job.

Every replica's phase is counted and kept in its role's phase runs; only a bounded few get an
entry of their own (`REPLICA_ENTRIES_MAX`), the ones a user looks for first, so that the status
of the largest job stays far below etcd's request limit.
"""

from datetime import datetime

from psjob_operator.conditions import set_condition
from psjob_operator.models import (
    Condition,
    ConditionType,
    JobStatus,
    Phase,
    PSJob,
    ReplicaPhase,
    ReplicaStatus,
    Role,
    RoleStatus,
)
from psjob_operator.models.status import REPLICA_ENTRIES_MAX
from psjob_operator.names import role_labels, selector
from psjob_operator.observe import PodView
from psjob_operator.plan.judging import workers
from psjob_operator.plan.outcome import Outcome
from psjob_operator.plan.pods import POD_GROUP_MISSING
from psjob_operator.plan.snapshot import LOST, Replica, ReplicaKey
from psjob_operator.progress import Reading, project_progress

C = ConditionType
PHASE_CONDITIONS: dict[Phase, tuple[tuple[ConditionType, bool], ...]] = {
    Phase.CREATED: ((C.RUNNING, False),),
    Phase.RUNNING: ((C.RUNNING, True),),
    Phase.RESTARTING: ((C.RESTARTING, True), (C.RUNNING, False)),
    Phase.SUCCEEDED: ((C.SUCCEEDED, True), (C.RUNNING, False)),
    Phase.FAILED: ((C.FAILED, True), (C.RUNNING, False), (C.STALLED, True)),
    Phase.SUSPENDED: ((C.SUSPENDED, True), (C.RUNNING, False)),
    Phase.QUEUED: ((C.QUEUED, True), (C.RUNNING, False)),
}
"""The conditions a judged phase sets, each with the verdict's reason and message."""

ENTRY_RANKS: dict[ReplicaPhase, int] = {
    ReplicaPhase.FAILED: 0,
    ReplicaPhase.DELETED: 0,
    ReplicaPhase.TERMINATING: 0,
    ReplicaPhase.UNKNOWN: 0,
    ReplicaPhase.PENDING: 1,
    ReplicaPhase.STOPPED: 2,
    ReplicaPhase.SUCCEEDED: 2,
}
"""Which replicas get an entry first: what went wrong, then what waits, then what is done.
Running replicas get none: they are the bulk of a healthy job and tell nothing the counts do not."""

Projected = list[tuple[Replica, ReplicaPhase]]
"""Each replica of the attempt with the phase the status gives it."""


class _Conditions:
    def __init__(self, job: PSJob, now: datetime) -> None:
        self.items: list[Condition] = list(job.status.conditions)
        self.now, self.generation = now, job.metadata.generation

    def set(self, kind: ConditionType, value: bool, reason: str, message: str) -> None:
        self.items = set_condition(
            self.items, kind, value, reason, message, self.now, self.generation
        )


def project(
    job: PSJob, outcome: Outcome, now: datetime, reading: Reading | None = None
) -> JobStatus:
    """The job's new status: every field written here, from the outcome and its snapshot, and
    the progress from server 0's latest `reading` (None: the previous progress stays)."""
    snapshot = outcome.snapshot
    replicas = projected_phases(job, outcome)
    tolerated = outcome.tolerated
    if outcome.phase == Phase.SUCCEEDED:
        # Every worker the job finished without is a tolerated loss, whatever the limit.
        tolerated = frozenset(
            r.key for r, phase in replicas if r.role is Role.WORKER and phase in LOST
        )
    surplus = {p.name for p in snapshot.surplus}
    current = [p for p in snapshot.current() if not p.deleting and p.name not in surplus]
    counts = {role: _role_status(job, role, replicas, current, tolerated, outcome) for role in Role}
    conditions = _conditions(job, outcome, now)
    ready = _recovering(outcome) or _ready(job, outcome.phase, counts, len(tolerated))
    conditions.set(ConditionType.READY, *ready)
    return JobStatus(
        phase=outcome.phase,
        conditions=conditions.items,
        observed_generation=job.metadata.generation or 0,
        servers=counts[Role.SERVER],
        workers=counts[Role.WORKER],
        replicas=replica_entries(replicas, outcome.attempt),
        start_time=outcome.start_time,
        completion_time=outcome.completion_time,
        restart_count=outcome.restart_count,
        recoveries=job.status.recoveries + len(outcome.recoveries_opened),
        recovering=outcome.recovering,
        attempt=outcome.attempt,
        next_restart_time=outcome.next_restart_time,
        worker_selector=selector(role_labels(job.metadata.name, Role.WORKER)),
        progress=project_progress(job.status.progress, reading, job.spec.training.total_steps),
    )


def projected_phases(job: PSJob, outcome: Outcome) -> Projected:
    """Every replica of the attempt with its phase; after success, the pods the operator ends
    are Stopped, never failed.

    Servers are a service role; under Worker0 the other workers may still run. A worker lost
    before the success keeps its phase: it is a tolerated failure.
    """
    decided_now = job.status.phase != Phase.SUCCEEDED
    projected = []
    for replica in outcome.snapshot.replicas:
        phase = replica.phase
        if (
            outcome.phase == Phase.SUCCEEDED
            and phase is not ReplicaPhase.SUCCEEDED
            and (
                replica.role is Role.SERVER
                or replica.reported is ReplicaPhase.STOPPED
                or (decided_now and not replica.lost)
            )
        ):
            phase = ReplicaPhase.STOPPED
        projected.append((replica, phase))
    return projected


def replica_entries(replicas: Projected, attempt: int) -> list[ReplicaStatus]:
    """Entries for at most `REPLICA_ENTRIES_MAX` replicas that are not running, by
    `ENTRY_RANKS`, listed by role and index."""
    worth_a_look = [(r, phase) for r, phase in replicas if phase in ENTRY_RANKS]
    worth_a_look.sort(key=lambda entry: (ENTRY_RANKS[entry[1]], entry[0].key))
    chosen = sorted(worth_a_look[:REPLICA_ENTRIES_MAX], key=lambda entry: entry[0].key)
    return [
        ReplicaStatus(
            role=replica.role,
            index=replica.index,
            phase=phase,
            restarts=attempt,
            exit_code=replica.exit_code,
            node=replica.node,
        )
        for replica, phase in chosen
    ]


def _role_status(
    job: PSJob,
    role: Role,
    replicas: Projected,
    current: list[PodView],
    tolerated: frozenset[ReplicaKey],
    outcome: Outcome,
) -> RoleStatus:
    mine = [(r, phase) for r, phase in replicas if r.role is role]
    pods = [p for p in current if p.role is role]
    ready = sum(1 for p in pods if p.phase == ReplicaPhase.RUNNING and p.ready)
    by_index: list[ReplicaPhase | None] = [None] * (max((r.index for r, _ in mine), default=-1) + 1)
    for replica, phase in mine:
        by_index[replica.index] = phase
    return RoleStatus(
        desired=job.spec.replica_spec(role).replicas,
        active=sum(1 for p in pods if p.phase in (ReplicaPhase.PENDING, ReplicaPhase.RUNNING)),
        ready=ready,
        succeeded=sum(1 for _, phase in mine if phase is ReplicaPhase.SUCCEEDED),
        failed=sum(1 for r, phase in mine if phase is ReplicaPhase.FAILED or r.key in tolerated),
        recoveries=job.status.role_status(role).recoveries + outcome.recoveries_opened.count(role),
        summary=f"{ready}/{job.spec.replica_spec(role).replicas}",
        phases=tuple(by_index),
    )


def _conditions(job: PSJob, outcome: Outcome, now: datetime) -> _Conditions:
    """What this reconcile found, in the order it happened: a later write of a type wins."""
    conditions = _Conditions(job, now)
    if outcome.resumed:
        conditions.set(C.SUSPENDED, False, "Resumed", "the job was resumed")
    if outcome.admitted is not None:
        conditions.set(C.QUEUED, False, "Admitted", outcome.admitted)
    if outcome.started_attempt is not None:
        started = f"attempt {outcome.started_attempt} started"
        conditions.set(C.RESTARTING, False, "Restarted", started)
    if outcome.created_pods is not None:
        created = f"all {outcome.created_pods} pods were created"
        conditions.set(C.CREATED, True, "PodsCreated", created)
    if outcome.pod_group_crd is True:
        conditions.set(C.POD_GROUP, True, "PodGroupCreated", "the pods start as one gang")
    elif outcome.pod_group_crd is False:
        conditions.set(C.POD_GROUP, False, "PodGroupCRDMissing", POD_GROUP_MISSING)
    verdict = outcome.verdict
    if verdict is not None and outcome.phase is not None:
        for kind, value in PHASE_CONDITIONS.get(outcome.phase, ()):
            conditions.set(kind, value, verdict.reason, verdict.message)
    return conditions


RECOVERING_NAMED = 5
"""Replicas the Ready message names while they are recovered in place; the rest are counted."""


def _recovering(outcome: Outcome) -> tuple[bool, str, str] | None:
    """Ready is False while pods are recreated in place: the job runs on, but not whole. The
    phase is held (Running stays Running), so GitOps tools read it as progressing, not failed."""
    entries = outcome.recovering
    if not entries:
        return None
    named = ", ".join(
        f"{e.replica} (incarnation {e.incarnation}, since {e.since:%H:%M:%SZ})"
        for e in entries[:RECOVERING_NAMED]
    )
    more = len(entries) - RECOVERING_NAMED
    if more > 0:
        named += f" and {more} more"
    return False, "Recovering", f"recovering in place: {named}"


def _ready(
    job: PSJob, phase: Phase | None, counts: dict[Role, RoleStatus], tolerated: int
) -> tuple[bool, str, str]:
    """Ready: the job succeeded, or it runs and every pod it still has is ready."""
    servers, workers_ = counts[Role.SERVER], counts[Role.WORKER]
    if phase == Phase.SUCCEEDED:
        return True, "Succeeded", "the job succeeded"
    if (
        phase == Phase.RUNNING
        and servers.ready == job.spec.servers.replicas
        and workers_.ready + workers_.succeeded + tolerated == job.spec.workers.replicas
    ):
        if tolerated:
            lost = f"{tolerated} lost {workers(tolerated)} tolerated"
            return True, "PodsReady", f"every remaining pod is ready ({lost})"
        return True, "PodsReady", "every pod is ready"
    reason = phase.value if phase else "Pending"
    return False, reason, f"the job is {reason.lower()}"
