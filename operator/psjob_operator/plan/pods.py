"""The attempt's pods: which are missing, how far they came, which go when the job ends, and
what a `kubectl scale` adds or removes.

Tolerated lost workers are left out throughout: the job runs on without them.
"""

from psjob_operator.conditions import is_true
from psjob_operator.models import (
    CleanPodPolicy,
    Condition,
    ConditionType,
    Phase,
    PSJobSpec,
    ReplicaPhase,
    Role,
)
from psjob_operator.names import pod_name
from psjob_operator.observe import PodView
from psjob_operator.plan.outcome import Verdict
from psjob_operator.plan.snapshot import ReplicaKey, Snapshot

POD_GROUP_MISSING = (
    "spec.runPolicy.schedulingPolicy.minAvailable needs the PodGroup CRD of Volcano "
    "(scheduling.volcano.sh) or scheduler-plugins (scheduling.x-k8s.io), which is not "
    "installed: the pods are created without gang scheduling"
)

UP = frozenset({ReplicaPhase.RUNNING, ReplicaPhase.SUCCEEDED})
"""A pod that runs or already did its work."""


def missing_pods(snapshot: Snapshot) -> list[tuple[Role, int]]:
    """Replicas never seen in this attempt whose name no pod holds (of any attempt)."""
    spec, job_name = snapshot.job.spec, snapshot.job.metadata.name
    seen = {r.key for r in snapshot.replicas}
    names = {p.name for p in snapshot.pods}
    return [
        (role, index)
        for role in Role
        for index in range(spec.replica_spec(role).replicas)
        if (role, index) not in seen and pod_name(job_name, role, index) not in names
    ]


def scaled_message(job_name: str, before: int, after: int) -> str:
    """The Scaled event: the worker counts and the pods a `kubectl scale` adds or removes."""
    low, high = sorted((before, after))
    first = pod_name(job_name, Role.WORKER, low)
    pods = first if high - low == 1 else f"{first} to {pod_name(job_name, Role.WORKER, high - 1)}"
    verb = "is" if high - low == 1 else "are"
    change = "added" if after > before else "removed (they leave the servers)"
    return (
        f"workers scaled from {before} to {after} in place: {pods} {verb} {change}; the servers "
        "and the other workers keep running"
    )


def expected_pods(snapshot: Snapshot, tolerated: frozenset[ReplicaKey]) -> int:
    spec = snapshot.job.spec
    return spec.servers.replicas + spec.workers.replicas - len(tolerated)


def every_pod_phase(
    snapshot: Snapshot, tolerated: frozenset[ReplicaKey]
) -> list[ReplicaPhase] | None:
    """The phases of the attempt's pods once every expected pod exists, else None."""
    phases: list[ReplicaPhase] = [
        r.phase
        for r in snapshot.replicas
        if r.phase is not ReplicaPhase.DELETED and r.key not in tolerated
    ]
    return phases if len(phases) >= expected_pods(snapshot, tolerated) else None


def all_created(snapshot: Snapshot, tolerated: frozenset[ReplicaKey]) -> int | None:
    """How many pods the attempt has, once every expected one exists; None: not yet."""
    if every_pod_phase(snapshot, tolerated) is None:
        return None
    return expected_pods(snapshot, tolerated)


def progress(snapshot: Snapshot, tolerated: frozenset[ReplicaKey]) -> tuple[Phase, Verdict] | None:
    """Created (every pod exists) or Running (every pod runs or is done); None: not yet."""
    phases = every_pod_phase(snapshot, tolerated)
    if phases is None:
        return None
    if all(phase in UP for phase in phases):
        return Phase.RUNNING, Verdict("PodsRunning", "every pod is running")
    waiting = sum(1 for phase in phases if phase is ReplicaPhase.PENDING)
    expected = expected_pods(snapshot, tolerated)
    return Phase.CREATED, Verdict("PodsPending", f"{waiting} of {expected} pods pending")


def pod_group_was_fine(conditions: list[Condition]) -> bool:
    """No PodGroup condition yet, or a True one: the CRD going missing is news worth a Warning."""
    return is_true(conditions, ConditionType.POD_GROUP) or not any(
        c.type == ConditionType.POD_GROUP.value for c in conditions
    )


def pods_to_clean(spec: PSJobSpec, pods: tuple[PodView, ...], succeeded: bool) -> list[PodView]:
    """cleanPodPolicy of a finished job; under None a success still stops the servers."""
    running = [p for p in pods if not p.finished]
    policy = spec.run_policy.clean_pod_policy
    if policy == CleanPodPolicy.ALL:
        return list(pods)
    if policy == CleanPodPolicy.RUNNING:
        return running
    return [p for p in running if p.role is Role.SERVER] if succeeded else []
