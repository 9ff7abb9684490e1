"""PSJob status: what `kubectl get/describe/wait`, Flux (kstatus) and Argo CD read."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, WithJsonSchema

from psjob_operator.models.base import ApiModel
from psjob_operator.models.role import Role


class Phase(StrEnum):
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


class Condition(ApiModel):
    type: str = Field(description="Condition type: " + ", ".join(ConditionType) + ".")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="One CamelCase word for machines.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: datetime | None = Field(None, description="When the status last changed.")
    observed_generation: int | None = Field(
        None, description="The metadata.generation this condition was computed from."
    )


class RoleStatus(ApiModel):
    active: int = Field(0, description="Pods running or about to run.")
    ready: int = Field(0, description="Pods whose main container is running and ready.")
    succeeded: int = Field(0, description="Pods that exited 0.")
    failed: int = Field(
        0,
        description="Pods that failed; for workers also those lost and tolerated "
        "(runPolicy.maxFailedWorkers), whether they failed or vanished.",
    )
    summary: str = Field("", description="ready/total, for `kubectl get`.")


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


class JobStatus(ApiModel):
    phase: Phase | None = Field(None, description="Where the job is in its life.")
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
    replicas: list[ReplicaStatus] = Field(default_factory=list, description="One entry per pod.")
    start_time: datetime | None = Field(None, description="When the pods were first created.")
    completion_time: datetime | None = Field(None, description="When the job finished.")
    restart_count: int = Field(
        0, description="How many times a failure restarted the whole job (see backoffLimit)."
    )
    attempt: int = Field(
        0,
        description="The pods' generation: grows with every whole-job restart, whether after a "
        "failure, a resize or a resume; the runtime sees it as PSJOB_RESTART_COUNT.",
    )
    next_restart_time: datetime | None = Field(
        None, description="When a pending restart happens (exponential back-off)."
    )
    worker_selector: str | None = Field(
        None, description="Label selector of the worker pods (for the scale subresource)."
    )
