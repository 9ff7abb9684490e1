"""A replica's pod template overlay: Kubernetes pod fields passed through to every pod.

The overlay stays free-form (any PodSpec field is kept as written), except the few fields the
environment contract depends on: `containers`, their `name` and their `env` names are typed, in
the model and in the CRD, so that both can refuse a template whose main container redefines a
contract variable. `envFrom` cannot be checked by name, and need not be: Kubernetes lets `env`
win over `envFrom`, and the contract is always in `env`.
"""

from typing import Annotated, Any, NotRequired

from pydantic import (
    ConfigDict,
    Field,
    GetPydanticSchema,
    WithJsonSchema,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic refuses typing's on Python < 3.12

from psjob_operator.contract import MAIN_CONTAINER
from psjob_operator.models import contract_env
from psjob_operator.models.base import ApiModel, FieldRuleError

MAX_TEMPLATE_CONTAINERS = 64
MAX_TEMPLATE_ENV = 1024
"""Bounds that let the API server price the contract rule (CEL needs bounded lists)."""


@with_config(ConfigDict(extra="allow"))
class _EnvVar(TypedDict):
    name: str


@with_config(ConfigDict(extra="allow"))
class _Container(TypedDict):
    name: NotRequired[str]
    env: NotRequired[Annotated[list[_EnvVar], Field(max_length=MAX_TEMPLATE_ENV)]]


@with_config(ConfigDict(extra="allow"))
class _PodSpec(TypedDict):
    containers: NotRequired[Annotated[list[_Container], Field(max_length=MAX_TEMPLATE_CONTAINERS)]]


def _described(description: str, **schema: Any) -> dict[str, Any]:
    return {**schema, "description": description}


_KEPT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

_CONTAINER_SCHEMA = {
    **_KEPT,
    "properties": {
        "name": _described(
            f"Container name; `{MAIN_CONTAINER}` is merged into the main container.",
            type="string",
        ),
        "env": _described(
            "Environment variables (Kubernetes EnvVar objects). The main container's may not "
            "redefine a psjob contract variable.",
            type="array",
            maxItems=MAX_TEMPLATE_ENV,
            items={
                **_KEPT,
                "required": ["name"],
                "properties": {
                    "name": _described("Name of the environment variable.", type="string")
                },
            },
        ),
    },
    "x-kubernetes-validations": [
        {
            **contract_env.cel_rule(
                "self.env",
                contract_env.TEMPLATE_ENV,
                guard=f"!has(self.name) || self.name != '{MAIN_CONTAINER}' || !has(self.env)",
            ),
            "fieldPath": ".env",
        }
    ],
}

PodSpecOverlay = Annotated[
    dict[str, Any],
    GetPydanticSchema(lambda _, handler: handler.generate_schema(_PodSpec)),
    WithJsonSchema(
        {
            **_KEPT,
            "properties": {
                "containers": _described(
                    f"Containers: one named `{MAIN_CONTAINER}` is merged into the main "
                    "container, any other runs beside it.",
                    type="array",
                    maxItems=MAX_TEMPLATE_CONTAINERS,
                    items=_CONTAINER_SCHEMA,
                )
            },
        }
    ),
]
"""A PodSpec as a plain dict, every field kept as written; `containers` is checked."""


class PodTemplateMetadata(ApiModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")


class PodTemplateOverlay(ApiModel):
    metadata: PodTemplateMetadata = Field(
        default_factory=PodTemplateMetadata, description="Labels and annotations for the pods."
    )
    spec: PodSpecOverlay = Field(
        default_factory=dict,
        description="Any Kubernetes PodSpec fields (nodeSelector, tolerations, affinity, volumes, "
        "serviceAccountName, priorityClassName, securityContext, extra containers, ...), merged "
        f"into each pod. A container named `{MAIN_CONTAINER}` here is merged into the main "
        "container; its env may not redefine a psjob contract variable.",
    )

    @model_validator(mode="after")
    def _main_container_leaves_the_contract(self) -> "PodTemplateOverlay":
        for index, container in enumerate(self.spec.get("containers", [])):
            if container.get("name") != MAIN_CONTAINER:
                continue
            if contract_env.sets_contract(e["name"] for e in container.get("env", [])):
                raise FieldRuleError(
                    f"spec.containers[{index}].env", contract_env.refusal(contract_env.TEMPLATE_ENV)
                )
        return self
