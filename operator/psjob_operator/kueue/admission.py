"""What Kueue says about a queued job, read from its Workload's status."""

from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]

QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
FINISHED = "Finished"
REQUEUED = "Requeued"


def find_condition(workload: Manifest, kind: str) -> Manifest | None:
    conditions = workload.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def is_true(workload: Manifest, kind: str) -> bool:
    condition = find_condition(workload, kind)
    return condition is not None and condition.get("status") == "True"


@dataclass(frozen=True)
class Admission:
    """Whether a queued job may have pods, and why (not)."""

    queue: str
    """The LocalQueue the job names."""
    admitted: bool
    """Kueue admitted the Workload and has not evicted it: the job may run."""
    reason: str
    """One CamelCase word: Kueue's reason when it gave one."""
    message: str
    """For people: the queue and Kueue's own words."""
    evicted: bool = False
    """Kueue evicted the Workload (preemption, reclaimed quota, deactivation)."""
    reserved: bool = False
    """The Workload still holds a quota reservation (status.admission)."""
    finished: bool = False
    flavors: dict[str, list[str]] = field(default_factory=dict)
    """Each pod set's assigned ResourceFlavors, by pod set name."""
    retry_after: float | None = None
    """Seconds until the operator looks again by itself: nothing in the cluster will tell it
    when the problem that keeps the Workload from being created is fixed."""


PROBLEM_RETRY_SECONDS = 30.0


def read_admission(queue: str, workload: Manifest | None, problem: str | None = None) -> Admission:
    """Kueue's answer for a job queued in `queue`; `problem` says why its Workload is missing."""
    if workload is None:
        if problem is None:
            waiting = f"waiting in LocalQueue {queue}: its Workload is being created"
            return Admission(queue, False, "WorkloadCreated", waiting)
        message = f"not queued in LocalQueue {queue} yet: {problem}"
        return Admission(
            queue, False, "WorkloadMissing", message, retry_after=PROBLEM_RETRY_SECONDS
        )
    status = workload.get("status") or {}
    assigned = status.get("admission") or {}
    flavors = {
        str(a["name"]): sorted(set((a.get("flavors") or {}).values()))
        for a in assigned.get("podSetAssignments") or []
    }
    evicted = find_condition(workload, EVICTED)
    pending = find_condition(workload, QUOTA_RESERVED) or find_condition(workload, ADMITTED)
    if evicted is not None and evicted.get("status") == "True":
        why = evicted.get("message") or "no reason given"
        admitted, reason = False, evicted.get("reason") or EVICTED
        message = f"evicted by Kueue from LocalQueue {queue} ({why}): queued again"
    elif is_true(workload, ADMITTED) and assigned:
        cluster_queue = assigned.get("clusterQueue", "?")
        admitted, reason = True, ADMITTED
        message = f"admitted by ClusterQueue {cluster_queue} through LocalQueue {queue}"
    else:
        why = (pending or {}).get("message") or "Kueue has not looked at it yet"
        admitted, reason = False, (pending or {}).get("reason") or "Pending"
        message = f"waiting in LocalQueue {queue}: {why}"
    return Admission(
        queue,
        admitted,
        reason,
        message,
        evicted=evicted is not None and evicted.get("status") == "True",
        reserved=bool(assigned),
        finished=is_true(workload, FINISHED),
        flavors=flavors,
    )
