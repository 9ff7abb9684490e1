"""spec.runPolicy and spec.successPolicy: the job's lifecycle rules."""

from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from psjob_operator.models.base import ApiModel, FieldRuleError


class CleanPodPolicy(StrEnum):
    NONE = "None"
    RUNNING = "Running"
    ALL = "All"


class SuccessPolicy(StrEnum):
    ALL_WORKERS = "AllWorkers"
    WORKER0 = "Worker0"


class Recovery(StrEnum):
    IN_PLACE = "InPlace"
    RESTART_JOB = "RestartJob"


IN_PLACE_WITH_TOLERANCE = (
    "runPolicy.recovery: InPlace recreates a lost worker, runPolicy.maxFailedWorkers lets the "
    "job go on without it: the two cannot both apply; remove maxFailedWorkers (or set it to 0) "
    "or set recovery: RestartJob"
)


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
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.recovery) || self.recovery != 'InPlace' || "
                    "!has(self.maxFailedWorkers) || self.maxFailedWorkers == 0",
                    "message": IN_PLACE_WITH_TOLERANCE,
                    "fieldPath": ".recovery",
                }
            ]
        }
    )

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
        "worker 0 are never tolerated. Counted per attempt. Above 0, recovery is RestartJob.",
    )
    recovery: Recovery | None = Field(
        None,
        description="What a retryable failure of one pod (exit 75, a signal, OOM, eviction, a "
        "deleted pod, a lost node) costs. InPlace: only that pod is recreated under its name; "
        "the other pods keep running and their state, the job loses the seconds the replacement "
        "takes to start and rejoin (a server's shard goes back to its newest checkpoint), and "
        "restartCount does not grow. It falls back to a whole-job restart when the replacement "
        "does not take. RestartJob: every pod is deleted and created again after a back-off, "
        "and the job resumes from its newest checkpoint (all progress since then is lost); "
        "each restart counts against backoffLimit. It also decides what a change of "
        "workers.replicas alone (kubectl scale) does: InPlace adds or removes those workers "
        "while the servers and the other workers keep running; RestartJob restarts the job "
        "whole with the new count. Default: InPlace, except RestartJob for a job with "
        "maxFailedWorkers above 0 (which cannot be InPlace).",
    )

    @model_validator(mode="after")
    def _in_place_needs_no_tolerance(self) -> "RunPolicy":
        if self.recovery == Recovery.IN_PLACE and self.max_failed_workers > 0:
            raise FieldRuleError("recovery", IN_PLACE_WITH_TOLERANCE)
        return self

    @property
    def effective_recovery(self) -> Recovery:
        """The recovery that applies: `recovery`, or its default for this job (see there)."""
        if self.recovery is not None:
            return self.recovery
        return Recovery.RESTART_JOB if self.max_failed_workers > 0 else Recovery.IN_PLACE
