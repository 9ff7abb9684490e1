"""The reconcile decision, pure: given a PSJob and its observed pods, what to do and what to report.

Level-based: the decision depends only on the job (spec and the status the operator wrote
before) and the pods as they are now, never on which event arrived. Running it twice on the same
input gives the same answer, so bursts of pod events, retries and operator restarts are safe.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from psjob_operator.conditions import is_true, set_condition
from psjob_operator.models import (
    CleanPodPolicy,
    ConditionType,
    JobStatus,
    Phase,
    PSJob,
    Role,
    SuccessPolicy,
)
from psjob_operator.models.status import ReplicaStatus, RoleStatus
from psjob_operator.names import pod_name, role_labels, selector
from psjob_operator.observe import PodView
from psjob_operator.render import spec_hash

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0

STOPPED = "Stopped"
DELETED = "Deleted"
TERMINATING = "Terminating"
_FINISHED = frozenset({"Succeeded", "Failed", STOPPED})
LOST = frozenset({"Failed", DELETED, TERMINATING})
"""Phases of a replica whose pod will not finish its work in this attempt."""

ReplicaKey = tuple[str, int]
"""(role, index) of a replica."""


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass
class Decision:
    status: JobStatus
    create_pods: list[tuple[Role, int]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_job: bool = False


def _workers(count: int) -> str:
    return "worker" if count == 1 else "workers"


def restart_backoff(restart_count: int) -> float:
    """Seconds to wait before restart number `restart_count` (1-based): 2, 4, 8, ... up to 5 min."""
    return float(min(BACKOFF_BASE_SECONDS * 2 ** (restart_count - 1), BACKOFF_MAX_SECONDS))


@dataclass(frozen=True)
class Failure:
    """The first sign that the current attempt cannot finish."""

    pod: str
    role: Role
    exit_code: int | None
    deleted: bool

    def describe(self) -> str:
        if self.deleted:
            return f"pod {self.pod} was deleted while running (eviction, drain or a user)"
        return f"pod {self.pod} exited with code {self.exit_code}"


class _Reconcile:
    """One decision in the making; each method handles one situation of the job's life."""

    def __init__(
        self,
        job: PSJob,
        pods: Sequence[PodView],
        now: datetime,
        pod_group_crd: bool | None = None,
    ) -> None:
        self.pod_group_crd = pod_group_crd
        self.job = job
        self.spec = job.spec
        self.now = now
        self.generation = job.metadata.generation
        previous = job.status
        self.previous_phase = previous.phase
        self.status = previous.model_copy(deep=True)
        self.status.observed_generation = self.generation or 0
        self.status.worker_selector = selector(role_labels(job.metadata.name, Role.WORKER))
        self.pods = {pod.name: pod for pod in pods}
        self.decision = Decision(status=self.status)
        self.before: dict[tuple[str, int, int], str] = {
            (r.role, r.index, r.restarts): r.phase for r in previous.replicas
        }
        """Each replica's phase as the status last reported it: what changed since."""
        self.tolerated: list[ReplicaStatus] = []
        """Lost workers the job goes on without (runPolicy.maxFailedWorkers)."""

    # --- helpers -------------------------------------------------------------------------

    def condition(self, kind: ConditionType, value: bool, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, kind, value, reason, message, self.now, self.generation
        )

    def event(self, kind: EventType, reason: str, message: str) -> None:
        self.decision.events.append(Event(kind, reason, message))

    def wanted(self) -> list[tuple[Role, int]]:
        return [
            (role, index) for role in Role for index in range(self.spec.replica_spec(role).replicas)
        ]

    def current(self) -> list[PodView]:
        return [p for p in self.pods.values() if p.attempt == self.status.attempt]

    def stale(self) -> list[PodView]:
        return [p for p in self.pods.values() if p.attempt != self.status.attempt]

    def delete(self, pods: Sequence[PodView]) -> None:
        for pod in pods:
            if not pod.deleting and pod.name not in self.decision.delete_pods:
                self.decision.delete_pods.append(pod.name)

    def requeue(self, seconds: float) -> None:
        current = self.decision.requeue_after
        self.decision.requeue_after = seconds if current is None else min(current, seconds)

    # --- replica bookkeeping ----------------------------------------------------------------

    def merge_replicas(self) -> None:
        """Remember every replica of this attempt, also after its pod is gone.

        A worker that succeeded and was then cleaned up must not be created again, and a
        running pod that vanished is a failure: both need a memory kept in the status.
        """
        attempt = self.status.attempt
        known: dict[tuple[str, int], ReplicaStatus] = {
            (r.role, r.index): r for r in self.status.replicas if r.restarts == attempt
        }
        observed = {(p.role.value, p.index): p for p in self.current()}
        for key, pod in observed.items():
            phase = TERMINATING if pod.deleting and not pod.finished else pod.phase
            known[key] = ReplicaStatus(
                role=pod.role.value,
                index=pod.index,
                phase=phase,
                restarts=attempt,
                exit_code=pod.exit_code,
                node=pod.node,
            )
        for key, replica in known.items():
            if key not in observed and replica.phase not in _FINISHED:
                replica.phase = DELETED
        self.status.replicas = sorted(known.values(), key=lambda r: (r.role, r.index))

    def was_lost(self, replica: ReplicaStatus) -> bool:
        return self.before.get((replica.role, replica.index, replica.restarts)) in LOST

    def tolerated_keys(self) -> set[ReplicaKey]:
        return {(r.role, r.index) for r in self.tolerated}

    def count(self) -> None:
        tolerated = self.tolerated_keys()
        for role in Role:
            replicas = [r for r in self.status.replicas if r.role == role.value]
            total = self.spec.replica_spec(role).replicas
            pods = [p for p in self.current() if p.role == role and not p.deleting]
            ready = sum(1 for p in pods if p.phase == "Running" and p.ready)
            counts = RoleStatus(
                active=sum(1 for p in pods if p.phase in ("Pending", "Running")),
                ready=ready,
                succeeded=sum(1 for r in replicas if r.phase == "Succeeded"),
                failed=sum(
                    1 for r in replicas if r.phase == "Failed" or (r.role, r.index) in tolerated
                ),
                summary=f"{ready}/{total}",
            )
            if role == Role.SERVER:
                self.status.servers = counts
            else:
                self.status.workers = counts

    # --- the situations ---------------------------------------------------------------------

    def run(self) -> Decision:
        phase = self.previous_phase
        if phase in (Phase.SUCCEEDED, Phase.FAILED):
            self.finished()
        elif self.spec.run_policy.suspend:
            self.suspend()
        elif self.deadline_passed():
            self.fail(
                "DeadlineExceeded",
                f"the job ran longer than activeDeadlineSeconds="
                f"{self.spec.run_policy.active_deadline_seconds}",
            )
        elif phase == Phase.RESTARTING:
            self.restart_pending()
        else:
            if phase == Phase.SUSPENDED:
                self.resume()
            self.active()
        self.merge_replicas()
        if self.status.phase == Phase.SUCCEEDED:
            self.mark_stopped()
            self.tolerated = [
                r for r in self.status.replicas if r.role == Role.WORKER.value and r.phase in LOST
            ]
        self.count()
        self.ready_condition()
        return self.decision

    def finished(self) -> None:
        """Succeeded or Failed for good: clean up by policy, and honour the TTL."""
        succeeded = self.status.phase == Phase.SUCCEEDED
        running = [p for p in self.pods.values() if not p.finished]
        policy = self.spec.run_policy.clean_pod_policy
        if policy == CleanPodPolicy.ALL:
            self.delete(list(self.pods.values()))
        elif policy == CleanPodPolicy.RUNNING:
            self.delete(running)
        elif succeeded:
            self.delete([p for p in running if p.role == Role.SERVER])
        ttl = self.spec.run_policy.ttl_seconds_after_finished
        if ttl is not None and self.status.completion_time is not None:
            remaining = (
                self.status.completion_time + timedelta(seconds=ttl) - self.now
            ).total_seconds()
            if remaining <= 0:
                self.decision.delete_job = True
            else:
                self.requeue(remaining)

    def suspend(self) -> None:
        self.delete(list(self.pods.values()))
        if self.previous_phase != Phase.SUSPENDED:
            self.event(
                EventType.NORMAL, "Suspended", "spec.runPolicy.suspend is true: pods removed"
            )
        self.status.phase = Phase.SUSPENDED
        self.status.start_time = None
        self.condition(ConditionType.SUSPENDED, True, "Suspended", "the job is suspended")
        self.condition(ConditionType.RUNNING, False, "Suspended", "the job is suspended")

    def resume(self) -> None:
        """A resumed job that had pods starts a new attempt: the runtime resumes its checkpoint."""
        if self.status.replicas:
            self.status.attempt += 1
        self.status.phase = Phase.PENDING
        self.condition(ConditionType.SUSPENDED, False, "Resumed", "the job was resumed")
        self.event(EventType.NORMAL, "Resumed", "spec.runPolicy.suspend is false: creating pods")

    def deadline_passed(self) -> bool:
        deadline = self.spec.run_policy.active_deadline_seconds
        if deadline is None or self.status.start_time is None:
            return False
        remaining = (
            self.status.start_time + timedelta(seconds=deadline) - self.now
        ).total_seconds()
        if remaining > 0:
            self.requeue(remaining)
            return False
        return True

    def restart_pending(self) -> None:
        """Old pods go first (their names are reused), then the back-off, then new pods."""
        leftovers = self.stale()
        self.delete(leftovers)
        if leftovers:
            return
        due = self.status.next_restart_time
        if due is not None and due > self.now:
            self.requeue((due - self.now).total_seconds())
            return
        self.status.next_restart_time = None
        self.condition(
            ConditionType.RESTARTING,
            False,
            "Restarted",
            f"attempt {self.status.attempt} started",
        )
        self.status.phase = Phase.PENDING
        self.active()

    def active(self) -> None:
        leftovers = self.stale()
        if leftovers:
            self.delete(leftovers)
            return
        self.merge_replicas()
        if self.spec_changed():
            self.restart("SpecChanged", "the spec changed: restarting with the new spec", False)
            return
        self.tolerated = self.tolerated_workers()
        self.mark_created()
        succeeded = self.workers_succeeded()
        failure = None if succeeded else self.first_failure()
        if failure is not None:
            self.handle_failure(failure)
            return
        self.report_tolerated()
        if succeeded:
            self.succeed()
            return
        self.create_missing()
        self.progress()

    def spec_changed(self) -> bool:
        digest = spec_hash(self.job)
        return any(p.spec_hash != digest for p in self.current() if not p.finished)

    def tolerated_workers(self) -> list[ReplicaStatus]:
        """The lost workers the job goes on without: at most runPolicy.maxFailedWorkers.

        Only async servers drop a lost worker, which admission ensures for maxFailedWorkers > 0.
        Workers lost earlier keep their place, so the one that goes over the limit is the one
        judged by restartPolicy. Worker 0 decides success under Worker0: never tolerated.
        """
        candidates = [
            r
            for r in self.status.replicas
            if r.role == Role.WORKER.value
            and r.phase in LOST
            and not (r.index == 0 and self.spec.success_policy == SuccessPolicy.WORKER0)
        ]
        candidates.sort(key=lambda r: (not self.was_lost(r), r.index))
        return candidates[: self.spec.run_policy.max_failed_workers]

    def report_tolerated(self) -> None:
        """A Warning event for each worker newly tolerated: the job shrinks, visibly."""
        limit = self.spec.run_policy.max_failed_workers
        for number, replica in enumerate(self.tolerated, start=1):
            if self.was_lost(replica):
                continue
            self.event(
                EventType.WARNING,
                "WorkerFailureTolerated",
                f"{self.failure_of(replica).describe()}; tolerated ({number} of "
                f"maxFailedWorkers {limit}): the job goes on without it",
            )

    def workers_succeeded(self) -> bool:
        """AllWorkers: every worker succeeded or is a tolerated loss. Worker0: worker 0 did."""
        tolerated = self.tolerated_keys()
        workers = {
            r.index: r.phase
            for r in self.status.replicas
            if r.role == Role.WORKER.value and (r.role, r.index) not in tolerated
        }
        if self.spec.success_policy == SuccessPolicy.WORKER0:
            return workers.get(0) == "Succeeded"
        return len(workers) + len(tolerated) == self.spec.workers.replicas and all(
            phase == "Succeeded" for phase in workers.values()
        )

    def failure_of(self, replica: ReplicaStatus) -> Failure:
        role = Role(replica.role)
        name = pod_name(self.job.metadata.name, role, replica.index)
        return Failure(name, role, replica.exit_code, deleted=replica.phase != "Failed")

    def first_failure(self) -> Failure | None:
        tolerated = self.tolerated_keys()
        for replica in self.status.replicas:
            if replica.phase in LOST and (replica.role, replica.index) not in tolerated:
                return self.failure_of(replica)
        return None

    def handle_failure(self, failure: Failure) -> None:
        retryable = failure.deleted or (
            failure.exit_code is not None
            and self.spec.replica_spec(failure.role).is_retryable(failure.exit_code)
        )
        cause = failure.describe() + self.not_tolerated_because(failure)
        self.event(EventType.WARNING, "PodFailed", cause)
        limit = self.spec.run_policy.backoff_limit
        if not retryable:
            self.fail(
                "PodFailed",
                f"{cause}, which restartPolicy "
                f"{self.spec.replica_spec(failure.role).restart_policy.value} does not retry",
            )
        elif self.status.restart_count >= limit:
            self.fail(
                "BackoffLimitExceeded",
                f"{cause}; the job already restarted {self.status.restart_count} "
                f"times (backoffLimit {limit})",
            )
        else:
            self.restart("PodFailed", cause, True)

    def not_tolerated_because(self, failure: Failure) -> str:
        """Why a worker failure restarts or fails a job that tolerates some."""
        limit = self.spec.run_policy.max_failed_workers
        if failure.role != Role.WORKER or limit == 0:
            return ""
        if failure.pod == pod_name(self.job.metadata.name, Role.WORKER, 0) and (
            self.spec.success_policy == SuccessPolicy.WORKER0
        ):
            return " (worker 0 decides success under successPolicy Worker0: never tolerated)"
        return f" (one more than maxFailedWorkers {limit})"

    def restart(self, reason: str, cause: str, counts: bool) -> None:
        """Whole-job restart: a torch.distributed group cannot heal in place."""
        delay = 0.0
        if counts:
            self.status.restart_count += 1
            delay = restart_backoff(self.status.restart_count)
        self.status.attempt += 1
        self.status.phase = Phase.RESTARTING
        self.status.next_restart_time = self.now + timedelta(seconds=delay)
        message = f"{cause}; restarting the whole job in {delay:g}s"
        if counts:
            message += (
                f" (restart {self.status.restart_count} of {self.spec.run_policy.backoff_limit})"
            )
        self.condition(ConditionType.RESTARTING, True, reason, message)
        self.condition(ConditionType.RUNNING, False, reason, message)
        self.event(EventType.NORMAL, "Restarting", message)
        self.delete(list(self.pods.values()))
        self.requeue(delay)

    def succeed(self) -> None:
        self.status.phase = Phase.SUCCEEDED
        self.status.completion_time = self.now
        rule = "worker 0" if self.spec.success_policy == SuccessPolicy.WORKER0 else "all workers"
        message = f"{rule} succeeded"
        if self.tolerated:
            lost = len(self.tolerated)
            message += (
                f"; {lost} {_workers(lost)} failed and {'was' if lost == 1 else 'were'} "
                f"tolerated (maxFailedWorkers {self.spec.run_policy.max_failed_workers})"
            )
        self.condition(ConditionType.SUCCEEDED, True, "WorkersSucceeded", message)
        self.condition(ConditionType.RUNNING, False, "WorkersSucceeded", message)
        self.event(EventType.NORMAL, "Succeeded", message)
        self.finished()

    def fail(self, reason: str, message: str) -> None:
        self.status.phase = Phase.FAILED
        self.status.completion_time = self.now
        self.condition(ConditionType.FAILED, True, reason, message)
        self.condition(ConditionType.RUNNING, False, reason, message)
        self.condition(ConditionType.STALLED, True, reason, message)
        self.event(EventType.WARNING, "Failed", f"{reason}: {message}")
        self.delete([p for p in self.pods.values() if not p.finished])
        self.finished()

    def create_missing(self) -> None:
        seen = {(r.role, r.index) for r in self.status.replicas}
        missing = [
            (role, index)
            for role, index in self.wanted()
            if (role.value, index) not in seen
            and pod_name(self.job.metadata.name, role, index) not in self.pods
        ]
        self.decision.create_pods = missing
        if missing and self.status.start_time is None:
            self.status.start_time = self.now
        if missing and self.pod_group_crd is not None:
            self.pod_group_condition(self.pod_group_crd)

    def pod_group_condition(self, installed: bool) -> None:
        """minAvailable needs a gang scheduler's PodGroup CRD: say plainly when it is missing."""
        if installed:
            self.condition(
                ConditionType.POD_GROUP, True, "PodGroupCreated", "the pods start as one gang"
            )
            return
        message = (
            "spec.runPolicy.schedulingPolicy.minAvailable needs the PodGroup CRD of Volcano "
            "(scheduling.volcano.sh) or scheduler-plugins (scheduling.x-k8s.io), which is not "
            "installed: the pods are created without gang scheduling"
        )
        if is_true(self.status.conditions, ConditionType.POD_GROUP) or not any(
            c.type == ConditionType.POD_GROUP.value for c in self.status.conditions
        ):
            self.event(EventType.WARNING, "PodGroupUnavailable", message)
        self.condition(ConditionType.POD_GROUP, False, "PodGroupCRDMissing", message)

    def expected_pods(self) -> int:
        """Tolerated lost workers are left out: the job runs on without them."""
        return len(self.wanted()) - len(self.tolerated)

    def observed(self) -> list[ReplicaStatus] | None:
        """The replicas of this attempt when every expected pod exists, else None."""
        tolerated = self.tolerated_keys()
        observed = [
            r
            for r in self.status.replicas
            if r.phase != DELETED and (r.role, r.index) not in tolerated
        ]
        return observed if len(observed) >= self.expected_pods() else None

    def mark_created(self) -> None:
        """Created once every pod exists, even when the job ends before it is seen running:
        a short job may succeed or fail between two looks at it."""
        observed = self.observed()
        if observed is None or is_true(self.status.conditions, ConditionType.CREATED):
            return
        total = self.expected_pods()
        self.condition(ConditionType.CREATED, True, "PodsCreated", f"all {total} pods were created")
        self.event(EventType.NORMAL, "Created", f"created {total} pods and 2 services")

    def progress(self) -> None:
        """Pending -> Created (every pod exists) -> Running (every pod runs or is done)."""
        observed = self.observed()
        if observed is None:
            self.status.phase = self.status.phase or Phase.PENDING
            return
        running = all(r.phase in ("Running", "Succeeded") for r in observed)
        if running:
            if self.status.phase != Phase.RUNNING:
                self.event(EventType.NORMAL, "Running", "every pod is running")
            self.status.phase = Phase.RUNNING
            self.condition(ConditionType.RUNNING, True, "PodsRunning", "every pod is running")
        else:
            waiting = sum(1 for r in observed if r.phase == "Pending")
            self.status.phase = Phase.CREATED
            self.condition(
                ConditionType.RUNNING,
                False,
                "PodsPending",
                f"{waiting} of {self.expected_pods()} pods pending",
            )

    def mark_stopped(self) -> None:
        """Pods the operator ends after success are reported Stopped, never failed.

        Servers are a service role; under Worker0 the other workers may still run. A worker
        lost before the success keeps its phase: it is a tolerated failure.
        """
        decided_now = self.previous_phase != Phase.SUCCEEDED
        for replica in self.status.replicas:
            if replica.phase == "Succeeded":
                continue
            before = self.before.get((replica.role, replica.index, replica.restarts))
            if (
                replica.role == Role.SERVER.value
                or before == STOPPED
                or (decided_now and replica.phase not in LOST)
            ):
                replica.phase = STOPPED

    def ready_condition(self) -> None:
        """Ready is always present, True or False, so Flux (kstatus) can judge the job."""
        phase = self.status.phase
        servers, workers = self.status.servers, self.status.workers
        if phase == Phase.SUCCEEDED:
            self.condition(ConditionType.READY, True, "Succeeded", "the job succeeded")
        elif (
            phase == Phase.RUNNING
            and servers.ready == self.spec.servers.replicas
            and workers.ready + workers.succeeded + len(self.tolerated)
            == self.spec.workers.replicas
        ):
            message = "every pod is ready"
            if self.tolerated:
                lost = len(self.tolerated)
                message = f"every remaining pod is ready ({lost} lost {_workers(lost)} tolerated)"
            self.condition(ConditionType.READY, True, "PodsReady", message)
        else:
            reason = phase.value if phase else "Pending"
            self.condition(ConditionType.READY, False, reason, f"the job is {reason.lower()}")


def decide(
    job: PSJob, pods: Sequence[PodView], now: datetime, pod_group_crd: bool | None = None
) -> Decision:
    """`pod_group_crd`: whether the gang scheduler's PodGroup CRD exists; None: no gang asked."""
    return _Reconcile(job, pods, now, pod_group_crd).run()


def fail_now(
    job: PSJob, pods: Sequence[PodView], now: datetime, reason: str, message: str
) -> Decision:
    """Fail the job at once for a cause found while acting, e.g. a pod the API server refused."""
    reconcile = _Reconcile(job, pods, now)
    reconcile.fail(reason, message)
    reconcile.merge_replicas()
    reconcile.count()
    reconcile.ready_condition()
    return reconcile.decision
