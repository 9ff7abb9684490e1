"""PSJOB_TRAINING: the operator's JSON of spec.training, parsed into typed settings.

This mirrors the operator's model on purpose instead of importing it: the runtime image must not
depend on the operator package. The operator fills every default, so the defaults here matter only
for processes started by hand or by the local launcher.
"""

import re
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

CHECKPOINT_DIR_PATTERN = "^(/([^/]*[^/.][^/]*|[.][.][.]+))+$"
"""An absolute, normalised path: `/` then segments that are neither empty, `.` nor `..`."""
_CHECKPOINT_DIR = re.compile(CHECKPOINT_DIR_PATTERN)
CHECKPOINT_DIR_MESSAGE = (
    "checkpoint.dir must be an absolute, normalised path such as /checkpoints (no relative "
    "path, no '.' or '..' segment, no '//', no trailing '/'): the servers write there"
)


class _Camel(BaseModel):
    # allow_inf_nan=False: an Infinity or NaN setting (`lr: .inf`, 1e400) would only show up as
    # a model that silently diverges, so it is refused where the settings are read.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
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
    dir: str = Field(min_length=1, max_length=4096)
    every_steps: int = Field(100, ge=1)

    @field_validator("dir")
    @classmethod
    def _absolute_and_normalised(cls, value: str) -> str:
        if not _CHECKPOINT_DIR.fullmatch(value):
            raise ValueError(CHECKPOINT_DIR_MESSAGE)
        return value


MAX_INT32 = (1 << 31) - 1
"""Servers keep a dynamic table's counts, steps and row slots as int32."""


class EmbeddingBounds(_Camel):
    """spec.training.embeddings: bounds every dynamic table of the job obeys on every server,
    whatever the code declares (the stricter of the two wins, see dynamic_table.DynamicOptions)."""

    admit_after: int | None = Field(None, ge=0, le=MAX_INT32)
    ttl_steps: int | None = Field(None, ge=1, le=MAX_INT32)
    max_rows_per_server: int | None = Field(None, ge=1, le=MAX_INT32)


class TrainingSettings(_Camel):
    mode: Mode = Mode.SYNC
    staleness: int | None = Field(None, ge=1)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    checkpoint: CheckpointSettings | None = None
    timeout_seconds: int = Field(300, ge=1)
    refuse_non_finite: bool = True
    embeddings: EmbeddingBounds | None = None
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
