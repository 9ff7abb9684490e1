"""The base of every API model: camelCase on the wire, unknown fields refused.

Refusing unknown fields offline matches what the API server does with `kubectl apply`
(server-side field validation is Strict by default), so `psjob validate` and admission agree.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    # allow_inf_nan=False: the API server cannot store Infinity or NaN (JSON has neither; kubectl
    # refuses YAML's .inf and 1e400 overflows), so `psjob validate` refuses them as well.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
        allow_inf_nan=False,
    )


FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""An object kept exactly as the user wrote it (Kubernetes types the operator passes through)."""


class FieldRuleError(ValueError):
    """A cross-field rule broken at `field` (relative to the model that checks the rule).

    pydantic reports a model validator's error at the model itself; carrying the field lets
    `psjob validate` name the field the user must change, as the CRD's CEL rules do.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
