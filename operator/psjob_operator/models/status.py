"""PSJob status: what `kubectl get/describe/wait`, Flux (kstatus) and Argo CD read.

It stays small whatever the job's size: etcd refuses a write over 1.5 MiB, and the status is
written before any pod is created, so a status that grew with pods would stall the largest
jobs. Each role keeps one character per replica at most (its phase runs); per-replica entries
are only written for the few replicas worth a look.
"""

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from itertools import groupby
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

from psjob_operator.models.base import ApiModel
from psjob_operator.models.progress import Progress
from psjob_operator.models.role import Role


class Phase(StrEnum):
    QUEUED = "Queued"
    """Waiting for Kueue to admit it (docs/kueue.md): no pod exists."""
    PENDING = "Pending"
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ReplicaPhase(StrEnum):
    """A replica's phase in `status.replicas`: its pod's phase, or what became of the pod."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"
    """The kubelet's own phase for a pod whose node stopped reporting."""
    TERMINATING = "Terminating"
    """Being deleted before it finished."""
    STOPPED = "Stopped"
    """Ended by the operator after the job succeeded: never a failure."""
    DELETED = "Deleted"
    """Gone before it finished (eviction, drain or a user)."""


OpenString = WithJsonSchema({"type": "string"})
"""Published as a plain string: Helm never upgrades an installed CRD (crds/), so a phase added
later must not be refused by the schema of an older install."""


class ConditionType(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    READY = "Ready"
    STALLED = "Stalled"
    POD_GROUP = "PodGroup"
    QUEUED = "Queued"


class Condition(ApiModel):
    type: str = Field(description="Condition type: " + ", ".join(ConditionType) + ".")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="One CamelCase word for machines.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: datetime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, description="The metadata.generation this condition was computed from."
    )


PHASE_LETTERS: dict[ReplicaPhase, str] = {
    ReplicaPhase.PENDING: "P",
    ReplicaPhase.RUNNING: "R",
    ReplicaPhase.SUCCEEDED: "S",
    ReplicaPhase.FAILED: "F",
    ReplicaPhase.UNKNOWN: "U",
    ReplicaPhase.TERMINATING: "T",
    ReplicaPhase.STOPPED: "X",
    ReplicaPhase.DELETED: "D",
}
NOT_SEEN = "-"
"""The letter of a replica that has had no pod yet in this attempt."""
_PHASES_BY_LETTER = {letter: phase for phase, letter in PHASE_LETTERS.items()}
_RUN = re.compile(r"([0-9]*)([A-Z-])")
RUNS_PATTERN = r"^([0-9]*[A-Z-])*$"
"""Any capital letter: a phase letter added later must not be refused by an older install."""
RUNS_MAX_REPLICAS = 100_000
"""Ten times the schema's maximum of replicas per role: a corrupt status cannot make the
operator allocate without bound."""


def _letter(phase: ReplicaPhase | None) -> str:
    return NOT_SEEN if phase is None else PHASE_LETTERS[phase]


def encode_runs(phases: Sequence[ReplicaPhase | None]) -> str:
    """'3RP' for Running, Running, Running, Pending: a count only before a run longer than one,
    so the text is never longer than one character per replica."""
    runs = []
    for letter, run in groupby(map(_letter, phases)):
        count = sum(1 for _ in run)
        runs.append(f"{count if count > 1 else ''}{letter}")
    return "".join(runs)


def decode_runs(value: Any) -> Any:
    """The phases of '3RP'; a letter this operator does not know reads as Unknown."""
    if not isinstance(value, str):
        return value
    phases: list[ReplicaPhase | None] = []
    position = 0
    for run in _RUN.finditer(value):
        if run.start() != position:
            break
        count, letter = run.groups()
        if len(phases) + int(count or 1) > RUNS_MAX_REPLICAS:
            raise ValueError(f"phase runs count more than {RUNS_MAX_REPLICAS} replicas")
        phase = None if letter == NOT_SEEN else _PHASES_BY_LETTER.get(letter, ReplicaPhase.UNKNOWN)
        phases.extend([phase] * int(count or 1))
        position = run.end()
    if position != len(value):
        raise ValueError(
            f"phase runs {value[:40]!r} are not counts and phase letters ('3RP'): "
            f"unexpected {value[position : position + 1]!r} at character {position}"
        )
    return tuple(phases)


PhaseRuns = Annotated[
    tuple[ReplicaPhase | None, ...],
    BeforeValidator(decode_runs),
    PlainSerializer(encode_runs, return_type=str),
    WithJsonSchema({"type": "string", "pattern": RUNS_PATTERN}),
]
"""Each replica's phase by index (None: not seen yet), stored as run-length text."""


class RoleStatus(ApiModel):
    desired: int = Field(
        0,
        description="The pods the spec asked for when the operator last acted on it (its "
        "replicas, e.g. after `kubectl scale`); 0 until it first did.",
    )
    active: int = Field(0, description="Pods running or about to run.")
    ready: int = Field(0, description="Pods whose main container is running and ready.")
    succeeded: int = Field(0, description="Pods that exited 0.")
    failed: int = Field(
        0,
        description="Pods that failed; for workers also those lost and tolerated "
        "(runPolicy.maxFailedWorkers), whether they failed or vanished.",
    )
    recoveries: int = Field(
        0,
        description="In-place recoveries of this role's pods since the job began (every "
        "attempt): each lost pod recreated alone under runPolicy.recovery InPlace.",
    )
    summary: str = Field("", description="ready/total, for `kubectl get`.")
    phases: PhaseRuns = Field(
        default_factory=tuple,
        description="Each replica's phase in the current attempt, by index, run-length "
        "encoded: '3RP' is replicas 0-2 Running and 3 Pending. Letters: "
        + ", ".join(f"{letter} {phase.value}" for phase, letter in PHASE_LETTERS.items())
        + f", {NOT_SEEN} no pod yet. At most one character per replica.",
    )


class ReplicaStatus(ApiModel):
    role: Role = Field(description="server or worker.")
    index: int = Field(description="Replica index within the role.")
    phase: Annotated[ReplicaPhase, OpenString] = Field(
        description="Pod phase; Terminating while it stops; Stopped for pods the operator "
        "ended after the job succeeded (servers; under Worker0 the other workers); Deleted when "
        "the pod vanished."
    )
    restarts: int = Field(0, description="Job restarts this replica went through (its attempt).")
    exit_code: int | None = Field(None, description="Last exit code of the main container.")
    node: str | None = Field(None, description="Node the pod runs on.")


REPLICA_ENTRIES_MAX = 50
"""Entries in `status.replicas` at most: the status must not grow with the job."""

RECOVERING_MAX = 50
"""Entries in `status.recovering` at most: more lost pods at once fall back to a whole-job
restart (plan/recovery.py), so the status stays small however many pods a zone outage takes."""

REPLICA_NAME_PATTERN = r"^(server|worker)-(0|[1-9][0-9]{0,4})$"


class RecoveryEntry(ApiModel):
    """A lost pod being recreated in place; in the status, so a restarted operator carries on."""

    replica: str = Field(
        pattern=REPLICA_NAME_PATTERN, description="The replica, `<role>-<index>`: server-1."
    )
    since: datetime = Field(description="When the operator saw its pod lost.")
    incarnation: int = Field(
        ge=1,
        le=1_000_000,
        description="The replacement's psjob.dev/incarnation: 1 for the replica's first.",
    )

    @property
    def key(self) -> tuple[Role, int]:
        role, index = self.replica.rsplit("-", 1)
        return Role(role), int(index)


def replica_name(role: Role, index: int) -> str:
    """`server-1`: how status.recovering and the recovery Events name a replica."""
    return f"{role.value}-{index}"


class JobStatus(ApiModel):
    phase: Annotated[Phase, OpenString] | None = Field(
        None, description="Where the job is in its life: " + ", ".join(Phase) + "."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Latest observations of the job's state."
    )
    observed_generation: int = Field(
        0,
        description="The metadata.generation the operator last acted on; 0 until it first "
        "does, so that kstatus (Flux) reads a brand-new job as InProgress, not Current.",
    )
    servers: RoleStatus = Field(default_factory=RoleStatus, description="Server pod counts.")
    workers: RoleStatus = Field(default_factory=RoleStatus, description="Worker pod counts.")
    replicas: list[ReplicaStatus] = Field(
        default_factory=list,
        description="The replicas whose pod is not simply running, by role and index: at most "
        f"{REPLICA_ENTRIES_MAX}, chosen lost ones first (Failed, Deleted, Terminating, Unknown, "
        "tolerated ones among them), then Pending, then Stopped and Succeeded. Running ones are "
        "counted in servers and workers, and every replica's phase is in their phases.",
    )
    start_time: datetime | None = Field(None, description="When the pods were first created.")
    completion_time: datetime | None = Field(None, description="When the job finished.")
    restart_count: int = Field(
        0, description="How many times a failure restarted the whole job (see backoffLimit)."
    )
    recoveries: int = Field(
        0,
        description="In-place recoveries since the job began: lost pods recreated alone under "
        "runPolicy.recovery InPlace (each role's share is in servers and workers).",
    )
    recovering: Annotated[list[RecoveryEntry], Field(max_length=RECOVERING_MAX)] = Field(
        default_factory=list,
        description="The lost pods being recreated in place now, by role and index: until the "
        "replacement runs or the operator falls back to a whole-job restart.",
    )
    attempt: int = Field(
        0,
        description="The pods' generation: grows with every whole-job restart, whether after a "
        "failure, a resize under recovery RestartJob or a resume; the runtime sees it as "
        "PSJOB_RESTART_COUNT.",
    )
    next_restart_time: datetime | None = Field(
        None, description="When a pending restart happens (exponential back-off)."
    )
    worker_selector: str | None = Field(
        None, description="Label selector of the worker pods (for the scale subresource)."
    )
    progress: Progress | None = Field(
        None,
        description="The training's progress as server 0 last reported it while the job ran; "
        "kept when the job ends.",
    )

    def role_status(self, role: Role) -> RoleStatus:
        return self.servers if role is Role.SERVER else self.workers
