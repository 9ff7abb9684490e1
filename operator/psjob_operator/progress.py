"""What server 0's GET /progress says, and what status.progress makes of it (pure).

The body comes from a pod that runs the user's code: it is parsed as hostile input. It is read
to at most `MAX_BODY` bytes, must match the runtime's shape exactly (docs/api.md, progress), and
every number is bounded; a body that breaks any rule is refused whole, so a bad endpoint can
neither grow the status nor write nonsense into it. Only values that training honestly produces
but JSON cannot store in the status (a NaN or infinite loss or metric) are left out one by one.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from psjob_operator.models import Progress
from psjob_operator.models.progress import MAX_METRIC_NAME, MAX_METRICS

MAX_BODY = 64 * 1024
"""Bytes of a /progress body at most; the runtime's is under 2 KiB."""
MAX_COUNT = 2**53
"""Steps and samples at most: every JSON reader still holds the number exactly."""
MAX_WORKERS = 100_000
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_METRIC_NAME)]
MAX_ESTIMATE = timedelta(days=3660)
"""A completion further away than ten years is no estimate worth showing."""


def _finite_or_none(value: Any) -> Any:
    """A NaN or infinite float reads as absent: a diverging loss is real, but not storable."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite_entries(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: v for k, v in value.items() if not (isinstance(v, float) and not math.isfinite(v))
        }
    return value


class _Wire(BaseModel):
    # strict: no "12" for 12, no true for 1; extra fields ignored, so a newer runtime may add some.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, allow_inf_nan=True)


class CheckpointBody(_Wire):
    step: int = Field(ge=0, le=MAX_COUNT)
    time: AwareDatetime


class ProgressBody(_Wire):
    """The JSON body of server 0's GET /progress, as the runtime writes it."""

    step: int = Field(ge=0, le=MAX_COUNT)
    samples: int = Field(ge=0, le=MAX_COUNT)
    samples_per_second: float = Field(alias="samplesPerSecond", ge=0, le=1e15, allow_inf_nan=False)
    loss: Annotated[float | None, BeforeValidator(_finite_or_none)]
    metrics: Annotated[
        dict[MetricName, float], BeforeValidator(_finite_entries), Field(max_length=MAX_METRICS)
    ]
    workers_reporting: int = Field(alias="workersReporting", ge=0, le=MAX_WORKERS)
    workers: int = Field(ge=0, le=MAX_WORKERS)
    checkpoint: CheckpointBody | None
    time: AwareDatetime


class UnreadableProgressError(ValueError):
    """A body that is not the runtime's progress: too long, not JSON, or off the shape."""


def parse_body(body: bytes) -> ProgressBody:
    """The runtime's progress from `body`; UnreadableProgressError says briefly why not."""
    if len(body) > MAX_BODY:
        raise UnreadableProgressError(f"the body is over {MAX_BODY} bytes")
    try:
        return ProgressBody.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        more = exc.error_count() - 1
        raise UnreadableProgressError(
            f"{where}: {first['msg']}" + (f" (and {more} more)" if more else "")
        ) from None


@dataclass(frozen=True)
class Reading:
    """One body read from server 0, and when the operator read it."""

    body: ProgressBody
    read_time: datetime

    def says_anything(self) -> bool:
        """Whether a worker has reported yet: before that the body holds zeros, and a short job
        read only then would end showing step 0 instead of no progress at all."""
        body = self.body
        return body.step > 0 or body.samples > 0 or body.checkpoint is not None

    def same_values(self, other: "Reading | None") -> bool:
        """Whether `other` says the same about the training (its own time aside): a job whose
        numbers did not move costs no status write."""
        if other is None:
            return False
        return self.body.model_copy(update={"time": other.body.time}) == other.body


def percent_done(step: int, total_steps: int | None) -> float | None:
    if total_steps is None:
        return None
    return round(min(100.0, 100.0 * step / total_steps), 1)


def _completion_time(
    previous: Progress | None, reading: Reading, total_steps: int | None
) -> datetime | None:
    """At the speed between the previous reading and this one; None when there is no speed
    (the first reading, a step that did not advance or went back after a restart)."""
    step = reading.body.step
    if total_steps is None or previous is None or step <= previous.step or step >= total_steps:
        return None
    seconds = (reading.read_time - previous.read_time).total_seconds()
    if seconds <= 0:
        return None
    remaining = (total_steps - step) * seconds / (step - previous.step)
    if remaining > MAX_ESTIMATE.total_seconds():
        return None
    return (reading.read_time + timedelta(seconds=round(remaining))).replace(microsecond=0)


def project_progress(
    previous: Progress | None, reading: Reading | None, total_steps: int | None
) -> Progress | None:
    """status.progress from the previous one and the latest reading (None: no reading now).

    Deciding twice on the same reading gives the same progress; without a new reading the
    previous one stays, so a finished job keeps its last progress.
    """
    if reading is None or (previous is not None and reading.read_time <= previous.read_time):
        if previous is None:
            return None
        kept: dict[str, Any] = {"percent_done": percent_done(previous.step, total_steps)}
        if total_steps is None:
            kept["estimated_completion_time"] = None
        return previous.model_copy(update=kept)
    body = reading.body
    checkpoint = body.checkpoint
    return Progress(
        step=body.step,
        samples=body.samples,
        samples_per_second=round(body.samples_per_second, 1),
        loss=body.loss,
        metrics=dict(sorted(body.metrics.items())),
        workers_reporting=body.workers_reporting,
        workers=body.workers,
        last_checkpoint_step=None if checkpoint is None else checkpoint.step,
        last_checkpoint_time=None if checkpoint is None else checkpoint.time,
        read_time=reading.read_time,
        percent_done=percent_done(body.step, total_steps),
        estimated_completion_time=_completion_time(previous, reading, total_steps),
    )
