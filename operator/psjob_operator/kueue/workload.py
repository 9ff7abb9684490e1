"""The Workload of a queued PSJob, and the status changes the job controller owes Kueue."""

from datetime import datetime
from typing import Any

from psjob_operator.kueue.admission import (
    ADMITTED,
    EVICTED,
    FINISHED,
    QUOTA_RESERVED,
    REQUEUED,
    find_condition,
    is_true,
)
from psjob_operator.models import Phase, PSJob, Role
from psjob_operator.names import job_labels
from psjob_operator.render import owner_reference, render_pod

Manifest = dict[str, Any]

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
API_VERSION = f"{GROUP}/{VERSION}"
QUEUE_LABEL = f"{GROUP}/queue-name"
"""On a PSJob: the LocalQueue it waits in. Without it the job is not queued."""
PRIORITY_LABEL = f"{GROUP}/priority-class"
"""On a PSJob: the WorkloadPriorityClass of its Workload."""
REQUEUED_ON = frozenset({"Preempted", "NodeFailures"})
"""Eviction reasons after which Kueue's own job controllers mark the Workload Requeued=True."""
MESSAGE_MAX = 32768
"""metav1.Condition's message limit."""


def queue_name(job: PSJob) -> str | None:
    """The LocalQueue the job asks for; None: the job is not queued."""
    return job.metadata.labels.get(QUEUE_LABEL) or None


def workload_name(job: PSJob) -> str:
    """Unique per job object: a job deleted and created again under its name gets a new one."""
    return f"psjob-{job.metadata.name}-{(job.metadata.uid or '')[:8]}".rstrip("-")


def _pod_set(job: PSJob, role: Role) -> Manifest:
    """A role's pod set: the count and the pod template Kueue computes the quota from.

    The template is the rendered pod of replica 0 without its environment: Kueue needs the
    requests, node selectors, tolerations and affinity, and the contract's server list would
    make the Workload of the largest job too big for etcd.
    """
    pod = render_pod(job, role, 0)
    spec = dict(pod["spec"])
    for key in ("hostname", "subdomain"):
        spec.pop(key, None)
    spec["containers"] = [
        {k: v for k, v in container.items() if k not in ("env", "envFrom")}
        for container in spec["containers"]
    ]
    return {
        "name": role.value,
        "count": job.spec.replica_spec(role).replicas,
        "template": {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": spec},
    }


def render_workload(job: PSJob, priority_class: str | None, priority: int | None) -> Manifest:
    """The job's Workload in its LocalQueue, owned by the job (deleting the job deletes it)."""
    queue = queue_name(job)
    if queue is None:
        raise ValueError(f"psjob {job.metadata.name} has no {QUEUE_LABEL} label: not queued")
    spec: Manifest = {
        "queueName": queue,
        "podSets": [_pod_set(job, role) for role in Role],
    }
    if priority_class is not None:
        spec["priorityClassRef"] = {
            "group": GROUP,
            "kind": "WorkloadPriorityClass",
            "name": priority_class,
        }
    if priority is not None:
        spec["priority"] = priority
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {
            "name": workload_name(job),
            "namespace": job.metadata.namespace or "default",
            "labels": {**job_labels(job.metadata.name), QUEUE_LABEL: queue},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": spec,
    }


def _condition(
    workload: Manifest, kind: str, value: bool, reason: str, message: str, now: datetime
) -> Manifest:
    previous = find_condition(workload, kind)
    status = "True" if value else "False"
    changed = previous is None or previous.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "lastTransitionTime": (
            now.strftime("%Y-%m-%dT%H:%M:%SZ")
            if changed or previous is None
            else previous["lastTransitionTime"]
        ),
        "observedGeneration": workload["metadata"].get("generation", 0),
    }


def _with(workload: Manifest, *updated: Manifest) -> list[Manifest]:
    kinds = {c["type"] for c in updated}
    kept = [c for c in workload.get("status", {}).get("conditions") or [] if c["type"] not in kinds]
    return kept + list(updated)


def release_patch(workload: Manifest, now: datetime) -> Manifest | None:
    """Clear an evicted Workload's quota reservation once the job has no pod left, as Kueue's
    job framework does: Kueue then queues the Workload again. None: nothing to release."""
    evicted = find_condition(workload, EVICTED)
    if evicted is None or evicted.get("status") != "True":
        return None
    if not (workload.get("status") or {}).get("admission"):
        return None
    reason, message = evicted.get("reason") or EVICTED, evicted.get("message") or ""
    conditions = _with(
        workload,
        _condition(workload, REQUEUED, reason in REQUEUED_ON, reason, message, now),
        _condition(workload, QUOTA_RESERVED, False, "Pending", message, now),
        _condition(
            workload, ADMITTED, False, "NoReservation", "The workload has no reservation", now
        ),
    )
    return {"status": {"conditions": conditions, "admission": None}}


def finish_patch(
    workload: Manifest, phase: Phase | None, message: str, now: datetime
) -> Manifest | None:
    """Mark the Workload Finished when the job succeeded or failed: its quota is free at once.
    None: the job is not finished, or the Workload already is."""
    if phase not in (Phase.SUCCEEDED, Phase.FAILED) or is_true(workload, FINISHED):
        return None
    reason = "Succeeded" if phase == Phase.SUCCEEDED else "Failed"
    finished = _condition(workload, FINISHED, True, reason, message or reason, now)
    return {"status": {"conditions": _with(workload, finished)}}
