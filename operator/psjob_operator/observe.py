"""What the operator needs to know about one pod, read from its API object (pure).

The kopf index keeps one PodView per pod, so the reconciler never lists pods from the API
server: status follows the watch stream, and a 1,000-pod job costs no extra requests.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psjob_operator import contract
from psjob_operator.models import ReplicaPhase, Role
from psjob_operator.render import ATTEMPT_ANNOTATION, INCARNATION_ANNOTATION, SPEC_HASH_ANNOTATION


@dataclass(frozen=True)
class PodView:
    name: str
    role: Role
    index: int
    attempt: int
    spec_hash: str
    phase: str
    """Pending, Running, Succeeded, Failed or Unknown, as the kubelet reports it."""
    deleting: bool
    ready: bool
    exit_code: int | None
    reason: str | None
    message: str | None
    node: str | None
    ip: str | None = None
    """The pod's IP address, once it has one."""
    progress_port: int | None = None
    """The main container's port named `progress` (servers), where the runtime serves progress."""
    incarnation: int = 0
    """How many times its replica was recreated in place in this attempt (0: the original)."""
    created: datetime | None = None
    """metadata.creationTimestamp: how long a replacement lasted (plan/recovery.py)."""
    num_workers: int | None = None
    """The main container's PSJOB_NUM_WORKERS: the worker count the pod was made for, which a
    later `kubectl scale` leaves as it was (plan/snapshot.py); None when absent or not a number."""

    @property
    def finished(self) -> bool:
        return self.phase in (ReplicaPhase.SUCCEEDED, ReplicaPhase.FAILED)


def _main_container_state(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == contract.MAIN_CONTAINER:
            return dict(status)
    return {}


def _progress_port(pod: dict[str, Any]) -> int | None:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") != contract.MAIN_CONTAINER:
            continue
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if port.get("name") == contract.PROGRESS_PORT_NAME and isinstance(number, int):
                return number
    return None


def _num_workers(pod: dict[str, Any]) -> int | None:
    """PSJOB_NUM_WORKERS of the main container; None when absent or not a plain small number."""
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") != contract.MAIN_CONTAINER:
            continue
        for variable in container.get("env") or []:
            if variable.get("name") == contract.ENV_NUM_WORKERS:
                value = variable.get("value")
                if isinstance(value, str) and value.isascii() and value.isdigit():
                    return int(value) if len(value) <= 7 else None
                return None
    return None


def _incarnation(annotations: dict[str, Any]) -> int:
    """The psjob.dev/incarnation annotation; 0 when absent or not a small number."""
    value = annotations.get(INCARNATION_ANNOTATION, "0")
    if not isinstance(value, str) or not value.isdigit() or len(value) > 7:
        return 0
    return int(value)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_view(pod: dict[str, Any]) -> PodView | None:
    """The view of a psjob pod, or None for a pod without the psjob labels."""
    metadata = pod.get("metadata", {})
    labels = metadata.get("labels") or {}
    try:
        role = Role(labels[contract.LABEL_ROLE])
        index = int(labels[contract.LABEL_REPLICA_INDEX])
    except (KeyError, ValueError):
        return None
    annotations = metadata.get("annotations") or {}
    container = _main_container_state(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    status = pod.get("status", {})
    return PodView(
        name=metadata.get("name", ""),
        role=role,
        index=index,
        attempt=int(annotations.get(ATTEMPT_ANNOTATION, "0")),
        spec_hash=annotations.get(SPEC_HASH_ANNOTATION, ""),
        phase=status.get("phase") or ReplicaPhase.PENDING,
        deleting=bool(metadata.get("deletionTimestamp")),
        ready=bool(container.get("ready")),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or status.get("reason"),
        message=(terminated.get("message") or status.get("message") or "").strip() or None,
        node=pod.get("spec", {}).get("nodeName"),
        ip=status.get("podIP") or None,
        progress_port=_progress_port(pod) if role is Role.SERVER and index == 0 else None,
        incarnation=_incarnation(annotations),
        created=_timestamp(metadata.get("creationTimestamp")),
        num_workers=_num_workers(pod),
    )
