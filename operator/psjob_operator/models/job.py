"""The PSJob resource: metadata, spec and status together."""

import re
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from psjob_operator.contract import DNS_LABEL_MAX, ROLE_INFIX_LENGTH
from psjob_operator.models.base import ApiModel, FieldRuleError
from psjob_operator.models.isolation import (
    IMMUTABLE_NETWORK_POLICY,
    NETWORK_POLICY_UNCHANGED,
    NetworkPolicySpec,
)
from psjob_operator.models.replica import ReplicaSpec
from psjob_operator.models.role import Role
from psjob_operator.models.run_policy import RunPolicy, SuccessPolicy
from psjob_operator.models.status import JobStatus
from psjob_operator.models.training import Mode, Training

JOB_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_JOB_NAME = re.compile(JOB_NAME_PATTERN)


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ObjectMeta(ApiModel):
    """The metadata fields the operator reads; everything else the API server keeps is allowed."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Job name; prefixes every pod and service name.")
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


_ASYNC_ONLY = (
    "runPolicy.maxFailedWorkers only applies to training mode async (in sync and ssp mode a "
    "lost worker stops the servers): set spec.training.mode: async or remove maxFailedWorkers"
)
_ONE_WORKER_LEFT = (
    "runPolicy.maxFailedWorkers must be less than spec.workers.replicas (at least one worker "
    "has to finish the training): lower maxFailedWorkers or add workers"
)


class PSJobSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.runPolicy) || !has(self.runPolicy.maxFailedWorkers) || "
                    "self.runPolicy.maxFailedWorkers == 0 || (has(self.training) && "
                    "has(self.training.mode) && self.training.mode == 'async')",
                    "message": _ASYNC_ONLY,
                    "fieldPath": ".runPolicy.maxFailedWorkers",
                },
                {
                    "rule": "!has(self.runPolicy) || !has(self.runPolicy.maxFailedWorkers) || "
                    "self.runPolicy.maxFailedWorkers < (has(self.workers) && "
                    "has(self.workers.replicas) ? self.workers.replicas : 1)",
                    "message": _ONE_WORKER_LEFT,
                    "fieldPath": ".runPolicy.maxFailedWorkers",
                },
                {
                    "rule": NETWORK_POLICY_UNCHANGED,
                    "message": IMMUTABLE_NETWORK_POLICY,
                    "fieldPath": ".networkPolicy.enabled",
                },
            ]
        }
    )

    image: str = Field(
        min_length=1,
        description="Container image of the servers and workers (the psjob runtime image, or "
        "your own image with psjob-runtime installed).",
    )
    image_pull_policy: PullPolicy | None = Field(
        None, description="Always, IfNotPresent or Never; Kubernetes' default when unset."
    )
    servers: ReplicaSpec = Field(
        default_factory=ReplicaSpec,
        description="Parameter servers: hold the parameters and apply the optimizer.",
    )
    workers: ReplicaSpec = Field(
        default_factory=ReplicaSpec,
        description="Workers: run the user's training code, push gradients, pull parameters.",
    )
    training: Training = Field(default_factory=Training, description="How to train.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Lifecycle rules.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec,
        description="Network isolation of the job's pods (on unless turned off here or for the "
        "whole operator).",
    )
    success_policy: SuccessPolicy = Field(
        SuccessPolicy.ALL_WORKERS,
        description="AllWorkers: the job succeeds when every worker succeeded. Worker0: when "
        "worker 0 succeeded.",
    )

    @model_validator(mode="after")
    def _tolerated_failures_fit(self) -> "PSJobSpec":
        """Only async servers drop a lost worker, and someone must be left to finish."""
        tolerated = self.run_policy.max_failed_workers
        if tolerated > 0 and self.training.mode != Mode.ASYNC:
            raise FieldRuleError("runPolicy.maxFailedWorkers", _ASYNC_ONLY)
        if tolerated >= self.workers.replicas:
            raise FieldRuleError("runPolicy.maxFailedWorkers", _ONE_WORKER_LEFT)
        return self

    def replica_spec(self, role: Role) -> ReplicaSpec:
        return self.servers if role == Role.SERVER else self.workers


class PSJob(ApiModel):
    api_version: Literal["psjob.dev/v1alpha1"] = Field("psjob.dev/v1alpha1", alias="apiVersion")
    kind: Literal["PSJob"] = "PSJob"
    metadata: ObjectMeta
    spec: PSJobSpec
    status: JobStatus = Field(
        default_factory=JobStatus,
        description="Written by the operator; the API server defaults it on every read.",
    )

    @model_validator(mode="after")
    def _name_fits_dns(self) -> "PSJob":
        name = self.metadata.name
        if not _JOB_NAME.match(name):
            raise FieldRuleError(
                "metadata.name",
                f"metadata.name {name!r} must be a DNS label: lower-case letters, digits and "
                "'-', starting with a letter and ending with a letter or digit",
            )
        longest = max_name_length(self.spec.servers.replicas, self.spec.workers.replicas)
        if len(name) > longest:
            raise FieldRuleError(
                "metadata.name",
                f"metadata.name {name!r} is too long ({len(name)} characters): pod names such as "
                f"{name}-worker-{self.spec.workers.replicas - 1} must fit a {DNS_LABEL_MAX}-"
                f"character DNS label, so use at most {longest} characters",
            )
        return self


def max_name_length(servers: int, workers: int) -> int:
    """The longest job name whose pods `<name>-<role>-<index>` stay valid DNS labels."""
    widest_index = len(str(max(servers, workers) - 1))
    return DNS_LABEL_MAX - ROLE_INFIX_LENGTH - widest_index
