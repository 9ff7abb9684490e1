"""status.progress: server 0's /progress body read as hostile input, and what the status says."""

import json
import math
from datetime import timedelta
from typing import Any

import pytest
from psjob_operator.models import Phase, PSJob
from psjob_operator.plan import decide
from psjob_operator.progress import (
    MAX_BODY,
    Reading,
    UnreadableProgressError,
    parse_body,
    project_progress,
)

from tests.support.pod_views import all_pod_views
from tests.unit.psjobs import T0, make_job


def body(**changes: Any) -> dict[str, Any]:
    """A body as the runtime's server 0 writes it."""
    return {
        "step": 120,
        "samples": 7680,
        "samplesPerSecond": 512.25,
        "loss": 0.731,
        "metrics": {"accuracy": 0.81},
        "workersReporting": 2,
        "workers": 2,
        "checkpoint": {"step": 100, "time": "2026-01-01T00:00:00Z"},
        "time": "2026-01-01T00:00:05Z",
        **changes,
    }


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


def reading(seconds: float, **changes: Any) -> Reading:
    return Reading(parse_body(encoded(body(**changes))), T0 + timedelta(seconds=seconds))


def running_job(**training: Any) -> PSJob:
    job = make_job(training=training)
    return job.model_copy(update={"status": decide(job, all_pod_views(job), T0).status})


def test_the_runtimes_body_is_read_as_it_is_written() -> None:
    parsed = parse_body(encoded(body(futureField={"a": 1})))
    assert (parsed.step, parsed.samples, parsed.samples_per_second) == (120, 7680, 512.25)
    assert (parsed.loss, parsed.metrics, parsed.workers_reporting) == (0.731, {"accuracy": 0.81}, 2)
    assert parsed.checkpoint is not None and parsed.checkpoint.step == 100


def test_a_diverged_loss_or_metric_is_left_out_not_the_whole_reading() -> None:
    text = json.dumps(body(loss=math.nan, metrics={"accuracy": 0.5, "grad": math.inf}))
    assert "NaN" in text and "Infinity" in text  # what Python's json writes
    parsed = parse_body(text.encode())
    assert parsed.loss is None and parsed.metrics == {"accuracy": 0.5}


HOSTILE = {
    "too long": b'{"step": 1, "pad": "' + b"x" * MAX_BODY + b'"}',
    "not JSON": b"<html>nginx</html>",
    "a list": b"[1, 2, 3]",
    "deeply nested": b"[" * 20_000 + b"]" * 20_000,
    "a string for a number": encoded(body(step="120")),
    "a boolean for a number": encoded(body(workers=True)),
    "a float step": encoded(body(step=1.5)),
    "a negative step": encoded(body(step=-1)),
    "a step no JSON reader holds exactly": encoded(body(samples=2**63)),
    "an infinite speed": encoded(body(samplesPerSecond=math.inf)),
    "17 metrics": encoded(body(metrics={f"m{i}": 1.0 for i in range(17)})),
    "a metric name of 64 characters": encoded(body(metrics={"m" * 64: 1.0})),
    "an empty metric name": encoded(body(metrics={"": 1.0})),
    "a metric that is not a number": encoded(body(metrics={"m": "high"})),
    "a missing field": encoded({k: v for k, v in body().items() if k != "workersReporting"}),
    "a time without its zone": encoded(body(time="2026-01-01T00:00:05")),
    "a checkpoint without a time": encoded(body(checkpoint={"step": 3})),
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_body_off_the_runtimes_shape_is_refused_whole(raw: bytes) -> None:
    with pytest.raises(UnreadableProgressError):
        parse_body(raw)


def test_a_running_job_shows_the_reading_and_its_first_reading_has_no_estimate() -> None:
    job = running_job(totalSteps=1000)
    status = decide(job, all_pod_views(job), T0, reading=reading(0)).status
    assert status.phase == Phase.RUNNING
    progress = status.progress
    assert progress is not None
    assert (progress.step, progress.samples_per_second, progress.loss) == (120, 512.2, 0.731)
    assert (progress.last_checkpoint_step, progress.read_time) == (100, T0)
    assert progress.percent_done == 12.0
    assert progress.estimated_completion_time is None


def test_two_readings_estimate_when_the_job_reaches_its_total_steps() -> None:
    job = running_job(totalSteps=1000)
    first = decide(job, all_pod_views(job), T0, reading=reading(0, step=100)).status
    job = job.model_copy(update={"status": first})
    # 200 steps in 10 s: 20 steps/s, so the 700 left take 35 s.
    second = decide(job, all_pod_views(job), T0, reading=reading(10, step=300)).status
    assert second.progress is not None
    assert second.progress.percent_done == 30.0
    assert second.progress.estimated_completion_time == T0 + timedelta(seconds=45)


@pytest.mark.parametrize("step", [100, 40], ids=["stuck", "back after a restart"])
def test_no_estimate_while_the_step_does_not_advance(step: int) -> None:
    job = running_job(totalSteps=1000)
    first = decide(job, all_pod_views(job), T0, reading=reading(0, step=100)).status
    job = job.model_copy(update={"status": first})
    second = decide(job, all_pod_views(job), T0, reading=reading(10, step=step, loss=0.5)).status
    assert second.progress is not None and second.progress.estimated_completion_time is None


def test_without_total_steps_there_is_neither_percent_nor_estimate() -> None:
    job = running_job()
    first = decide(job, all_pod_views(job), T0, reading=reading(0, step=100)).status
    job = job.model_copy(update={"status": first})
    second = decide(job, all_pod_views(job), T0, reading=reading(10, step=300)).status
    assert second.progress is not None and second.progress.step == 300
    assert second.progress.percent_done is None
    assert second.progress.estimated_completion_time is None


def test_deciding_again_on_the_same_reading_changes_nothing() -> None:
    job = running_job(totalSteps=1000)
    first = decide(job, all_pod_views(job), T0, reading=reading(0, step=100)).status
    job = job.model_copy(update={"status": first})
    again = decide(job, all_pod_views(job), T0, reading=reading(0, step=100)).status
    assert again == first


def test_a_finished_job_keeps_its_last_progress() -> None:
    job = running_job(totalSteps=1000)
    status = decide(job, all_pod_views(job), T0, reading=reading(0, step=1000)).status
    job = job.model_copy(update={"status": status})
    done = decide(job, all_pod_views(job, "Succeeded"), T0 + timedelta(seconds=5)).status
    assert done.phase == Phase.SUCCEEDED
    assert done.progress == status.progress
    assert done.progress is not None and done.progress.percent_done == 100.0


def test_an_edited_total_shows_at_once_without_a_new_reading() -> None:
    previous = project_progress(None, reading(0, step=250), 1000)
    assert previous is not None
    assert project_progress(previous, None, 500) == previous.model_copy(
        update={"percent_done": 50.0}
    )
    removed = project_progress(previous, None, None)
    assert removed is not None and removed.percent_done is None


def test_readings_that_differ_only_in_their_time_say_the_same() -> None:
    assert reading(0).same_values(reading(10, time="2026-01-01T00:00:15Z"))
    assert not reading(0).same_values(reading(10, samples=7681))


def test_the_progress_stays_small_whatever_the_job_reports() -> None:
    largest = body(
        step=2**53,
        samples=2**53,
        samplesPerSecond=1e15 - 0.1,
        loss=-1.2345678901234567e-300,
        metrics={f"{i:02d}" + "m" * 61: -1.2345678901234567e-300 for i in range(16)},
    )
    job = running_job(totalSteps=1)
    status = decide(job, all_pod_views(job), T0, reading=Reading(parse_body(encoded(largest)), T0))
    assert status.status.progress is not None
    assert len(status.status.progress.model_dump_json(by_alias=True)) < 2048
