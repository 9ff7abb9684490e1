"""What the transition decided, as the projection reads it: the job's next state and actions.

The transition says what happened and why; it writes no status field. The projection turns
the outcome into the status, so each condition rule is written once, in one place.
"""

from dataclasses import dataclass, field
from datetime import datetime

from psjob_operator.models import Phase, Role
from psjob_operator.models.status import RecoveryEntry
from psjob_operator.plan.decision import Event
from psjob_operator.plan.snapshot import ReplicaKey, Snapshot


@dataclass(frozen=True)
class Verdict:
    """Why the job is in its phase, when this reconcile judged it: what its conditions say."""

    reason: str
    message: str


@dataclass
class Outcome:
    snapshot: Snapshot
    """The attempt the job is in now: a new one after a restart or a resume."""
    phase: Phase | None
    restart_count: int
    start_time: datetime | None
    completion_time: datetime | None
    next_restart_time: datetime | None
    verdict: Verdict | None = None
    """Set when this reconcile judged the phase; None when it only held it."""
    resumed: bool = False
    admitted: str | None = None
    """Kueue's admission message, when Kueue admitted the job in this reconcile."""
    started_attempt: int | None = None
    """The attempt a pending restart began in this reconcile."""
    created_pods: int | None = None
    """How many pods the job has, when every one of them exists for the first time."""
    pod_group_crd: bool | None = None
    """Whether the gang scheduler's PodGroup CRD exists, when pods were created for a gang."""
    tolerated: frozenset[ReplicaKey] = frozenset()
    """Lost workers the job goes on without in this attempt."""
    recovering: list[RecoveryEntry] = field(default_factory=list)
    """Lost pods being recreated in place (runPolicy.recovery InPlace) after this reconcile."""
    recoveries_opened: list[Role] = field(default_factory=list)
    """The role of each pod this reconcile began to recover in place."""
    create_pods: list[tuple[Role, int]] = field(default_factory=list)
    incarnations: dict[ReplicaKey, int] = field(default_factory=dict)
    """The incarnation of each pod in `create_pods` that replaces a lost one."""
    delete_pods: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_job: bool = False

    @property
    def attempt(self) -> int:
        return self.snapshot.attempt
