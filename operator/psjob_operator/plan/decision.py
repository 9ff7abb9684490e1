"""What one reconcile hands to the controller: the new status and the actions to take."""

from dataclasses import dataclass, field
from enum import StrEnum

from psjob_operator.models import JobStatus, Role


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
    incarnations: dict[tuple[Role, int], int] = field(default_factory=dict)
    """The psjob.dev/incarnation of each pod in `create_pods` recreated in place (others: 0)."""
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_job: bool = False
