"""One replica set of a PSJob: the servers or the workers."""

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from psjob_operator.contract import DEFAULT_SERVER_PORT, EXIT_RETRYABLE
from psjob_operator.models import contract_env
from psjob_operator.models.base import ApiModel, FieldRuleError, FreeForm
from psjob_operator.models.quantity import Quantity, is_extended_resource
from psjob_operator.models.template import PodTemplateOverlay

ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MAX_ENV = 128
MAX_EXIT_CODES = 255


class RestartPolicy(StrEnum):
    ON_FAILURE = "OnFailure"
    NEVER = "Never"
    EXIT_CODE = "ExitCode"


class EnvVar(ApiModel):
    name: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=256)] = Field(
        description="Name of the environment variable."
    )
    value: str | None = Field(None, description="Literal value; `$(VAR)` references expand.")
    value_from: FreeForm | None = Field(
        None,
        description="A Kubernetes EnvVarSource (fieldRef, resourceFieldRef, configMapKeyRef, "
        "secretKeyRef), passed to the pod unchanged.",
    )


class VolumeMount(ApiModel):
    name: str = Field(description="Name of a volume declared in `template.spec.volumes`.")
    mount_path: str = Field(min_length=1, description="Path inside the container.")
    read_only: bool = Field(False, description="Mount read-only.")
    sub_path: str | None = Field(None, description="Sub-path of the volume to mount.")


class Resources(ApiModel):
    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Minimum resources, e.g. `cpu: 500m`, `memory: 2Gi`. Extended resources "
        "such as `nvidia.com/gpu` are copied into limits, as Kubernetes requires.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Maximum resources, e.g. `memory: 4Gi`, `nvidia.com/gpu: 1`.",
    )

    def rendered(self) -> dict[str, dict[str, int | str]]:
        """Requests and limits as the pod needs them: extended resources also in limits."""
        limits = dict(self.limits)
        for name, quantity in self.requests.items():
            if is_extended_resource(name):
                limits.setdefault(name, quantity)
        out: dict[str, dict[str, int | str]] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if limits:
            out["limits"] = limits
        return out


class ReplicaSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.retryableExitCodes) || self.restartPolicy == 'ExitCode'",
                    "message": "retryableExitCodes only applies with restartPolicy: ExitCode; "
                    "set restartPolicy: ExitCode or remove retryableExitCodes",
                    "fieldPath": ".retryableExitCodes",
                }
            ]
        }
    )

    replicas: int = Field(1, ge=1, le=10000, description="Number of pods of this role.")
    resources: Resources = Field(
        default_factory=Resources, description="Compute resources of each pod's main container."
    )
    command: list[str] | None = Field(
        None,
        description="Entrypoint of the main container. Servers default to "
        "`python -m psjob_runtime server`; workers default to the image's entrypoint.",
    )
    args: list[str] | None = Field(None, description="Arguments to the entrypoint.")
    env: Annotated[list[EnvVar], Field(max_length=MAX_ENV)] = Field(
        default_factory=list,
        description="Extra environment variables of the main container. The psjob contract "
        "variables (PSJOB_*, MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK) are set by the "
        "operator and cannot be redefined.",
        json_schema_extra={
            "x-kubernetes-validations": [
                contract_env.cel_rule("self", contract_env.REPLICA_ENV),
            ]
        },
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, description="Volumes mounted into the main container."
    )
    port: int = Field(
        DEFAULT_SERVER_PORT,
        ge=1,
        le=65535,
        description="Port of the torch.distributed rendezvous on server 0 (servers only).",
    )
    restart_policy: RestartPolicy = Field(
        RestartPolicy.ON_FAILURE,
        description="What a failed pod of this role does to the job. OnFailure: retry it (the "
        "pod is recovered in place or the whole job restarts, by runPolicy.recovery; whole "
        "restarts up to runPolicy.backoffLimit). Never: fail the job. ExitCode: retry when the "
        "exit code is in retryableExitCodes, otherwise fail the job.",
    )
    retryable_exit_codes: (
        Annotated[list[Annotated[int, Field(ge=1, le=255)]], Field(max_length=MAX_EXIT_CODES)]
        | None
    ) = Field(
        None,
        description=f"Exit codes that are retried under restartPolicy ExitCode. Default: "
        f"{EXIT_RETRYABLE} (the runtime's retryable failure: a peer lost or a timeout) and "
        "128-255 (killed by a signal, e.g. 137 for OOM or SIGKILL, 143 for SIGTERM).",
    )
    template: PodTemplateOverlay = Field(
        default_factory=PodTemplateOverlay,
        description="Pod template overlay merged into every pod of this role.",
    )

    @field_validator("env")
    @classmethod
    def _no_contract_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        if contract_env.sets_contract(e.name for e in env):
            raise ValueError(contract_env.refusal(contract_env.REPLICA_ENV))
        return env

    @model_validator(mode="after")
    def _exit_codes_need_policy(self) -> "ReplicaSpec":
        if self.retryable_exit_codes is not None and self.restart_policy != RestartPolicy.EXIT_CODE:
            raise FieldRuleError(
                "retryableExitCodes",
                "retryableExitCodes only applies with restartPolicy: ExitCode; "
                "set restartPolicy: ExitCode or remove retryableExitCodes",
            )
        return self

    def is_retryable(self, exit_code: int) -> bool:
        """Whether a pod of this role exiting with `exit_code` is retried or fails the job."""
        if self.restart_policy == RestartPolicy.ON_FAILURE:
            return True
        if self.restart_policy == RestartPolicy.NEVER:
            return False
        if self.retryable_exit_codes is not None:
            return exit_code in self.retryable_exit_codes
        return exit_code == EXIT_RETRYABLE or exit_code >= 128
