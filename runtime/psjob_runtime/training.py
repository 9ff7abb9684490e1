"""PSJOB_TRAINING: the operator's JSON of spec.training, parsed into typed settings.

This mirrors the operator's model on purpose instead of importing it: the runtime image must not
depend on the operator package. The operator fills every default, so the defaults here matter only
for processes started by hand or by the local launcher.
"""

from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Mode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"
    SSP = "ssp"


class OptimizerName(StrEnum):
    SGD = "sgd"
    ADAM = "adam"
    ADAGRAD = "adagrad"


class OptimizerSettings(_Camel):
    name: OptimizerName = OptimizerName.SGD
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class CheckpointSettings(_Camel):
    dir: str = Field(min_length=1)
    every_steps: int = Field(100, ge=1)


class TrainingSettings(_Camel):
    mode: Mode = Mode.SYNC
    staleness: int | None = Field(None, ge=1)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    checkpoint: CheckpointSettings | None = None
    timeout_seconds: int = Field(300, ge=1)
    refuse_non_finite: bool = True
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _staleness_goes_with_ssp(self) -> Self:
        if self.mode is Mode.SSP and self.staleness is None:
            raise ValueError("mode ssp needs staleness >= 1 (how many steps a worker may lead)")
        if self.mode is not Mode.SSP and self.staleness is not None:
            raise ValueError("staleness only applies to mode ssp: set mode ssp or drop staleness")
        return self

    def to_json(self) -> str:
        """The camelCase JSON the operator renders, for the local launcher to hand on."""
        return self.model_dump_json(by_alias=True)
