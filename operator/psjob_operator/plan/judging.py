"""Judging an attempt: has it succeeded, which failure ends it, and does that restart the job.

Under runPolicy.recovery RestartJob a failure the job does not tolerate either restarts every pod
after an exponential back-off (while runPolicy.backoffLimit allows) or ends the job; under
InPlace a retryable one is recovered in place first (recovery.py). The message names the pod,
its exit code and the rule that decided.
"""

from dataclasses import dataclass

from psjob_operator.models import PSJobSpec, ReplicaPhase, Role, SuccessPolicy
from psjob_operator.names import pod_name
from psjob_operator.plan.outcome import Verdict
from psjob_operator.plan.snapshot import Replica, ReplicaKey, Snapshot

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0


def restart_backoff(restart_count: int) -> float:
    """Seconds to wait before restart number `restart_count` (1-based): 2, 4, 8, ... up to 5 min."""
    return float(min(BACKOFF_BASE_SECONDS * 2 ** (restart_count - 1), BACKOFF_MAX_SECONDS))


def succeeded(snapshot: Snapshot, tolerated: frozenset[ReplicaKey]) -> bool:
    """AllWorkers: every worker succeeded or is a tolerated loss. Worker0: worker 0 did."""
    spec = snapshot.job.spec
    phases = {
        r.index: r.phase
        for r in snapshot.replicas
        if r.role is Role.WORKER and r.key not in tolerated
    }
    if spec.success_policy == SuccessPolicy.WORKER0:
        return phases.get(0) == ReplicaPhase.SUCCEEDED
    return len(phases) + len(tolerated) == spec.workers.replicas and all(
        phase == ReplicaPhase.SUCCEEDED for phase in phases.values()
    )


def success_message(spec: PSJobSpec, tolerated: int) -> str:
    rule = "worker 0" if spec.success_policy == SuccessPolicy.WORKER0 else "all workers"
    if not tolerated:
        return f"{rule} succeeded"
    return (
        f"{rule} succeeded; {tolerated} {workers(tolerated)} failed and "
        f"{'was' if tolerated == 1 else 'were'} tolerated "
        f"(maxFailedWorkers {spec.run_policy.max_failed_workers})"
    )


def workers(count: int) -> str:
    return "worker" if count == 1 else "workers"


@dataclass(frozen=True)
class Failure:
    """The first sign that the current attempt cannot finish."""

    pod: str
    role: Role
    index: int
    exit_code: int | None
    deleted: bool

    def describe(self) -> str:
        if self.deleted:
            return f"pod {self.pod} was deleted while running (eviction, drain or a user)"
        return f"pod {self.pod} exited with code {self.exit_code}"


def failure_of(job_name: str, replica: Replica) -> Failure:
    return Failure(
        pod_name(job_name, replica.role, replica.index),
        replica.role,
        replica.index,
        replica.exit_code,
        deleted=replica.phase is not ReplicaPhase.FAILED,
    )


def first_failure(snapshot: Snapshot) -> Failure | None:
    """The lost replica, not tolerated, that tells why the job stopped.

    A replica that lost a peer exits retryable because another one failed; when both are seen
    together the permanent failure is the cause and is judged, or a config error would restart
    the job until backoffLimit instead of failing it at once. Among equals, the first by role
    and index.
    """
    tolerated = snapshot.tolerated_keys
    lost = [
        failure_of(snapshot.job.metadata.name, replica)
        for replica in snapshot.replicas
        if replica.lost and replica.key not in tolerated
    ]
    spec = snapshot.job.spec
    permanent = [failure for failure in lost if not retryable(failure, spec)]
    candidates = permanent or lost
    return candidates[0] if candidates else None


def newly_tolerated(snapshot: Snapshot) -> list[str]:
    """What each worker tolerated since the last look cost: the job shrinks, visibly."""
    limit = snapshot.job.spec.run_policy.max_failed_workers
    job_name = snapshot.job.metadata.name
    return [
        f"{failure_of(job_name, replica).describe()}; tolerated ({number} of "
        f"maxFailedWorkers {limit}): the job goes on without it"
        for number, replica in enumerate(snapshot.tolerated, start=1)
        if not replica.was_lost
    ]


@dataclass(frozen=True)
class Judgement:
    """What a failure does to the job."""

    cause: str
    """The failure as the PodFailed event and the conditions tell it."""
    failed: Verdict | None
    """Why the job fails; None: it restarts."""


def judge(failure: Failure, spec: PSJobSpec, restart_count: int) -> Judgement:
    """A deleted pod is always retryable; an exit code is judged by its role's restartPolicy."""
    replica_spec = spec.replica_spec(failure.role)
    cause = failure.describe() + _not_tolerated_because(failure, spec)
    limit = spec.run_policy.backoff_limit
    if not retryable(failure, spec):
        policy = replica_spec.restart_policy.value
        return Judgement(
            cause, Verdict("PodFailed", f"{cause}, which restartPolicy {policy} does not retry")
        )
    if restart_count >= limit:
        return Judgement(
            cause,
            Verdict(
                "BackoffLimitExceeded",
                f"{cause}; the job already restarted {restart_count} times (backoffLimit {limit})",
            ),
        )
    return Judgement(cause, None)


def retryable(failure: Failure, spec: PSJobSpec) -> bool:
    """A deleted pod is always retryable; an exit code is judged by its role's restartPolicy.
    The same causes restart the whole job under RestartJob and recover one pod under InPlace."""
    if failure.deleted:
        return True
    policy = spec.replica_spec(failure.role)
    return failure.exit_code is not None and policy.is_retryable(failure.exit_code)


def _not_tolerated_because(failure: Failure, spec: PSJobSpec) -> str:
    """Why a worker failure restarts or fails a job that tolerates some."""
    limit = spec.run_policy.max_failed_workers
    if failure.role is not Role.WORKER or limit == 0:
        return ""
    if failure.index == 0 and spec.success_policy == SuccessPolicy.WORKER0:
        return " (worker 0 decides success under successPolicy Worker0: never tolerated)"
    return f" (one more than maxFailedWorkers {limit})"
