"""spec.training: how the parameter servers train; handed to the runtime as PSJOB_TRAINING."""

import re
from enum import StrEnum
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.config import JsonDict

from psjob_operator.models.base import ApiModel, FieldRuleError, FreeForm

CHECKPOINT_DIR_PATTERN = "^(/([^/]*[^/.][^/]*|[.][.][.]+))+$"
"""An absolute, normalised path: `/` then segments that are neither empty, `.` nor `..`.

Written without backslashes, so that it goes into the CRD's CEL string literal unescaped. The
runtime checks PSJOB_TRAINING with the same pattern (psjob_runtime.training).
"""
_CHECKPOINT_DIR = re.compile(CHECKPOINT_DIR_PATTERN)
CHECKPOINT_DIR_MESSAGE = (
    "checkpoint.dir must be an absolute, normalised path such as /checkpoints (no relative "
    "path, no '.' or '..' segment, no '//', no trailing '/'): the servers write there"
)
MAX_PATH = 4096

_IMMUTABLE_OPTIMIZER: JsonDict = {
    "rule": "self == oldSelf",
    "message": "spec.training.optimizer.name cannot change on an existing job: its checkpoints "
    "hold the old optimizer's state; create a new job instead",
}
_IMMUTABLE_CHECKPOINT_DIR: JsonDict = {
    "rule": "self == oldSelf",
    "message": "spec.training.checkpoint.dir cannot change on an existing job: restarts resume "
    "from it; create a new job instead",
}


class Mode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"
    SSP = "ssp"


class OptimizerName(StrEnum):
    SGD = "sgd"
    ADAM = "adam"
    ADAGRAD = "adagrad"


class Optimizer(ApiModel):
    name: OptimizerName = Field(
        OptimizerName.SGD,
        description="Server-side optimizer. Fixed once the job exists: its checkpoints hold "
        "this optimizer's state.",
        json_schema_extra={"x-kubernetes-validations": [_IMMUTABLE_OPTIMIZER]},
    )
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum (sgd).")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay.")
    beta1: float = Field(0.9, ge=0, lt=1, description="First-moment decay (adam).")
    beta2: float = Field(0.999, ge=0, lt=1, description="Second-moment decay (adam).")
    eps: float = Field(1e-8, gt=0, description="Numerical stabiliser (adam, adagrad).")


class Checkpoint(ApiModel):
    dir: str = Field(
        min_length=1,
        max_length=MAX_PATH,
        description="Absolute path of the directory the servers write checkpoints to, e.g. "
        "/checkpoints; mount a volume there that outlives the pods. Fixed once the job "
        "exists: restarts resume from it.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _IMMUTABLE_CHECKPOINT_DIR,
                {
                    "rule": f"self.matches('{CHECKPOINT_DIR_PATTERN}')",
                    "message": CHECKPOINT_DIR_MESSAGE,
                },
            ]
        },
    )
    every_steps: int = Field(100, ge=1, description="Write a checkpoint every N steps.")

    @field_validator("dir")
    @classmethod
    def _absolute_and_normalised(cls, value: str) -> str:
        if not _CHECKPOINT_DIR.fullmatch(value):
            raise ValueError(CHECKPOINT_DIR_MESSAGE)
        return value


MAX_INT32 = (1 << 31) - 1
"""Servers keep a dynamic table's counts, steps and row slots as int32."""
_SOME_EMBEDDING_BOUND: JsonDict = {
    "rule": "has(self.admitAfter) || has(self.ttlSteps) || has(self.maxRowsPerServer)",
    "message": "spec.training.embeddings sets no bound: set admitAfter, ttlSteps or "
    "maxRowsPerServer, or remove it",
}


class Embeddings(ApiModel):
    """Bounds on every dynamic embedding table of the job, whatever its code declares."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_SOME_EMBEDDING_BOUND]}
    )

    admit_after: int | None = Field(
        None,
        ge=0,
        le=MAX_INT32,
        description="Pushes that must hold an id before its row is created (lookups return "
        "zeros until then). The larger of this and the table's own admit_after applies.",
    )
    ttl_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_INT32,
        description="Remove a row not updated during its table's last ttlSteps steps. The "
        "shorter of this and the table's own ttl_steps applies.",
    )
    max_rows_per_server: int | None = Field(
        None,
        ge=1,
        le=MAX_INT32,
        description="Rows each server keeps of each dynamic table at most, the least recently "
        "updated evicted first. The smaller of this and the table's own max_rows_per_server "
        "applies.",
    )

    @model_validator(mode="after")
    def _sets_some_bound(self) -> "Embeddings":
        if self.admit_after is None and self.ttl_steps is None and self.max_rows_per_server is None:
            raise ValueError(_SOME_EMBEDDING_BOUND["message"])
        return self


class Training(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.mode) || self.mode != 'ssp' || has(self.staleness)",
                    "message": "mode ssp needs staleness: set spec.training.staleness to the "
                    "number of steps a worker may run ahead of the slowest (e.g. 2)",
                    "fieldPath": ".staleness",
                },
                {
                    "rule": "!has(self.staleness) || (has(self.mode) && self.mode == 'ssp')",
                    "message": "staleness only applies to mode ssp: set mode: ssp or remove "
                    "staleness",
                    "fieldPath": ".staleness",
                },
            ]
        }
    )

    mode: Mode = Field(
        Mode.SYNC,
        description="sync: every step averages all workers' gradients; async: each gradient is "
        "applied on arrival; ssp: bounded staleness (see staleness).",
    )
    staleness: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="ssp only: how many steps the fastest worker may run ahead of the slowest.",
    )
    optimizer: Optimizer = Field(default_factory=Optimizer, description="Server-side optimizer.")
    checkpoint: Checkpoint | None = Field(
        None, description="Periodic checkpoints of the servers' parameters and optimizer state."
    )
    timeout_seconds: int = Field(
        300,
        ge=10,
        le=86400,
        description="How long a process waits for a peer before it gives up and exits with the "
        "retryable code 75.",
    )
    refuse_non_finite: bool = Field(
        True,
        description="Servers refuse a gradient or initial value holding NaN or Inf (counted in "
        "their logs and statistics) instead of applying it, and never checkpoint such state. "
        "Set false only to study divergence.",
    )
    embeddings: Embeddings | None = Field(
        None,
        description="Bounds on the servers' memory for every dynamic embedding table "
        "(session.dynamic_embedding), applied whatever the code declares: the stricter of "
        "each bound and the table's own wins.",
    )
    total_steps: int | None = Field(
        None,
        ge=1,
        description="How many steps the training runs, if known: status.progress then shows "
        "percentDone and estimatedCompletionTime. For the operator only: not handed to the "
        "runtime, and changing it restarts nothing.",
    )
    config: FreeForm = Field(
        default_factory=dict, description="Free-form settings handed to the user's training code."
    )

    @model_serializer(mode="wrap")
    def _without_unset_embeddings(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave out `embeddings` when unset: the spec hash of a job that never set it (and the
        PSJOB_TRAINING it gets) stay what they were before the field existed, so an operator
        upgrade restarts no job."""
        data: dict[str, Any] = handler(self)
        if self.embeddings is None:
            data.pop("embeddings", None)
        return data

    @model_validator(mode="after")
    def _staleness_goes_with_ssp(self) -> "Training":
        if self.mode == Mode.SSP and self.staleness is None:
            raise FieldRuleError(
                "staleness",
                "mode ssp needs staleness: set spec.training.staleness to the number of steps a "
                "worker may run ahead of the slowest (e.g. 2)",
            )
        if self.mode != Mode.SSP and self.staleness is not None:
            raise FieldRuleError(
                "staleness", "staleness only applies to mode ssp: set mode: ssp or remove it"
            )
        return self
