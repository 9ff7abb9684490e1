"""Pod status documents, shaped as the kubelet writes them (strategic-merge patches).

A container's ``state`` always names all three keys, two of them null: a strategic merge patch
merges maps, so without the nulls a container would end up both running and terminated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psjob_localcluster.agent.nodes import now

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
TERMINATION_MESSAGE_MAX_LINES = 80
TERMINATION_MESSAGE_MAX_BYTES = 2048


def running_state(started_at: str) -> dict[str, Any]:
    return {"running": {"startedAt": started_at}, "waiting": None, "terminated": None}


def waiting_state(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}, "running": None, "terminated": None}


def terminated_state(
    exit_code: int, started_at: str, finished_at: str, container_id: str, message: str = ""
) -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message or None,
            "startedAt": started_at,
            "finishedAt": finished_at,
            "containerID": container_id,
        },
        "waiting": None,
        "running": None,
    }


def exit_code_of(returncode: int) -> int:
    """Popen's -N (killed by signal N) becomes 128+N, as container runtimes report it."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail_message(log: bytes) -> str:
    """The kubelet's FallbackToLogsOnError message: the last 80 lines, at most 2 KiB."""
    lines = log.decode(errors="replace").splitlines()[-TERMINATION_MESSAGE_MAX_LINES:]
    text = "\n".join(lines)
    return text.encode()[-TERMINATION_MESSAGE_MAX_BYTES:].decode(errors="ignore")


@dataclass
class ContainerRecord:
    """What the agent knows about one container of a pod."""

    name: str
    image: str
    state: dict[str, Any] = field(default_factory=lambda: waiting_state("ContainerCreating"))
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    container_id: str = ""

    @property
    def running(self) -> bool:
        return self.state.get("running") is not None

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated["exitCode"])

    def as_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "containerID": self.container_id or None,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.running,
            "started": self.running,
            "restartCount": self.restart_count,
        }


class ConditionClock:
    """Remembers when each pod condition last changed, so that ``lastTransitionTime`` moves
    only on a transition, as the kubelet reports it."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[bool, str]] = {}

    def condition(self, kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
        previous = self._seen.get(kind)
        if previous is None or previous[0] != ok:
            previous = (ok, now())
            self._seen[kind] = previous
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason or None,
            "lastTransitionTime": previous[1],
            "lastProbeTime": None,
        }


def pod_status_patch(
    phase: str,
    containers: list[ContainerRecord],
    *,
    pod_ip: str | None,
    start_time: str | None,
    init_containers: list[ContainerRecord] | None = None,
    message: str | None = None,
    reason: str | None = None,
    clock: ConditionClock | None = None,
) -> dict[str, Any]:
    """The status patch for the pod's current state."""
    all_running = bool(containers) and all(c.running for c in containers)
    finished = phase in ("Succeeded", "Failed")
    not_ready = "PodCompleted" if finished else "ContainersNotReady"
    clock = clock or ConditionClock()
    initialized = not init_containers or all(c.exit_code == 0 for c in init_containers)
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "conditions": [
            clock.condition("PodReadyToStartContainers", pod_ip is not None and not finished),
            clock.condition("Initialized", initialized),
            clock.condition("ContainersReady", all_running, "" if all_running else not_ready),
            clock.condition("Ready", all_running, "" if all_running else not_ready),
        ],
        "containerStatuses": [c.as_status() for c in containers],
        "message": message,
        "reason": reason,
    }
    if init_containers:
        status["initContainerStatuses"] = [c.as_status() for c in init_containers]
    if pod_ip is not None:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if start_time is not None:
        status["startTime"] = start_time
    return {"status": status}
