"""The PSJob API as pydantic models: the one source of truth for the CRD and for validation."""

from psjob_operator.models.job import PSJob, PSJobSpec
from psjob_operator.models.progress import Progress
from psjob_operator.models.replica import ReplicaSpec, RestartPolicy
from psjob_operator.models.role import Role
from psjob_operator.models.run_policy import CleanPodPolicy, Recovery, RunPolicy, SuccessPolicy
from psjob_operator.models.status import (
    Condition,
    ConditionType,
    JobStatus,
    Phase,
    ReplicaPhase,
    ReplicaStatus,
    RoleStatus,
)
from psjob_operator.models.training import Mode, Training

__all__ = [
    "CleanPodPolicy",
    "Condition",
    "ConditionType",
    "JobStatus",
    "Mode",
    "PSJob",
    "PSJobSpec",
    "Phase",
    "Progress",
    "Recovery",
    "ReplicaPhase",
    "ReplicaSpec",
    "ReplicaStatus",
    "RestartPolicy",
    "Role",
    "RoleStatus",
    "RunPolicy",
    "SuccessPolicy",
    "Training",
]
