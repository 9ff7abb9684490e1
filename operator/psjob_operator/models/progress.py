"""status.progress: how far the training is, as the operator last read it from server 0.

Its size is fixed whatever the job: a handful of numbers and at most `MAX_METRICS` named
metrics with names of at most `MAX_METRIC_NAME` characters.
"""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from psjob_operator.models.base import ApiModel

MAX_METRICS = 16
MAX_METRIC_NAME = 63
"""Characters of a metric's name at most (checked where the operator reads them: a CRD schema
cannot bound the keys of a map)."""


class Progress(ApiModel):
    step: int = Field(ge=0, description="The training step the workers reached.")
    samples: int = Field(ge=0, description="Samples trained on since the job started.")
    samples_per_second: float = Field(
        ge=0, description="Samples per second over the workers' last reports."
    )
    loss: float | None = Field(
        None, description="The latest loss reported; absent when none was, or it was not finite."
    )
    metrics: Annotated[dict[str, float], Field(max_length=MAX_METRICS)] = Field(
        default_factory=dict,
        description=f"The latest value of each metric the workers report, at most "
        f"{MAX_METRICS}; values that are not finite are left out.",
    )
    workers_reporting: int = Field(0, ge=0, description="Workers whose reports reached server 0.")
    workers: int = Field(0, ge=0, description="Workers of the job, as server 0 counts them.")
    last_checkpoint_step: int | None = Field(
        None, ge=0, description="The step of the last checkpoint the servers wrote."
    )
    last_checkpoint_time: datetime | None = Field(
        None, description="When the servers wrote the last checkpoint."
    )
    read_time: datetime = Field(description="When the operator first read these values.")
    percent_done: float | None = Field(
        None,
        ge=0,
        le=100,
        description="step / spec.training.totalSteps in percent; absent without totalSteps.",
    )
    estimated_completion_time: datetime | None = Field(
        None,
        description="When the job reaches spec.training.totalSteps at the speed of the last two "
        "readings; absent without totalSteps or while the step does not advance.",
    )
