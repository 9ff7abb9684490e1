"""spec.runPolicy and spec.successPolicy: the job's lifecycle rules."""

from enum import StrEnum

from pydantic import Field

from psjob_operator.models.base import ApiModel


class CleanPodPolicy(StrEnum):
    NONE = "None"
    RUNNING = "Running"
    ALL = "All"


class SuccessPolicy(StrEnum):
    ALL_WORKERS = "AllWorkers"
    WORKER0 = "Worker0"


class SchedulingPolicy(ApiModel):
    scheduler_name: str | None = Field(
        None, description="schedulerName of every pod (e.g. volcano)."
    )
    priority_class_name: str | None = Field(None, description="priorityClassName of every pod.")
    queue: str | None = Field(None, description="Queue of the gang scheduler's PodGroup.")
    min_available: int | None = Field(
        None,
        ge=1,
        description="Gang scheduling: create a PodGroup that starts no pod until this many can "
        "run (needs Volcano or scheduler-plugins).",
    )


class RunPolicy(ApiModel):
    backoff_limit: int = Field(
        3, ge=0, le=1000, description="How many times the whole job may restart before it fails."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job (DeadlineExceeded) after this many seconds running."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the job this many seconds after it succeeded or failed."
    )
    clean_pod_policy: CleanPodPolicy = Field(
        CleanPodPolicy.RUNNING,
        description="Which pods to delete when the job finishes: None, Running (those still "
        "running, e.g. the servers), All.",
    )
    suspend: bool = Field(
        False,
        description="true removes the pods and holds the job (Suspended) without using up "
        "restarts; false (re)creates them. Queueing systems such as Kueue use this.",
    )
    scheduling_policy: SchedulingPolicy = Field(
        default_factory=SchedulingPolicy, description="Scheduler settings of every pod."
    )
    max_failed_workers: int = Field(
        0,
        ge=0,
        le=10000,
        description="async training only: how many worker pods may fail or vanish (preemption, "
        "eviction) while the job goes on without them; they are not recreated. One more "
        "failure restarts or fails the job by restartPolicy. Must be less than "
        "workers.replicas; server failures and, with successPolicy Worker0, a failure of "
        "worker 0 are never tolerated. Counted per attempt.",
    )
