"""`kubectl psjob status`: the page a user reads, from the PSJob and its pods as JSON."""

from datetime import timedelta
from typing import Any

import pytest
from psjob_operator.kubectl_plugin.chart import ASCII_BLOCKS, BLOCKS, chart_line, sparkline
from psjob_operator.kubectl_plugin.status_view import (
    READINGS_MAX,
    Reading,
    progress_lines,
    record,
    render_status,
)
from psjob_operator.kubectl_plugin.terminal import Style, duration
from psjob_operator.render import render_all

from tests.unit.psjobs import T0, make_job

NOW = T0 + timedelta(minutes=10)
PLAIN = Style(enabled=False)


def pods(phases: dict[str, str], exit_codes: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The job's pods as the operator renders them, with the status the kubelet would report."""
    rendered = [m for m in render_all(make_job(), attempt=1) if m["kind"] == "Pod"]
    for pod in rendered:
        name = pod["metadata"]["name"]
        code = (exit_codes or {}).get(name)
        state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
        pod["spec"]["nodeName"] = f"node-{name[-1]}"
        pod["status"] = {
            "phase": phases.get(name, "Running"),
            "containerStatuses": [{"name": "psjob", "state": state}],
        }
    return rendered


def job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running", **status},
    }


PROGRESS = {
    "step": 120,
    "samples": 7680,
    "samplesPerSecond": 512.25,
    "loss": 0.731,
    "metrics": {"accuracy": 0.81},
    "workersReporting": 2,
    "workers": 2,
    "lastCheckpointStep": 100,
    "lastCheckpointTime": "2026-01-01T00:09:00Z",
    "readTime": "2026-01-01T00:09:58Z",
    "percentDone": 40.0,
    "estimatedCompletionTime": "2026-01-01T00:14:10Z",
}


def test_the_page_names_the_job_its_phase_and_one_line_per_replica_servers_first() -> None:
    page = render_status(
        job(),
        list(reversed(pods({"j-worker-1": "Failed"}, {"j-worker-1": 137}))),
        (),
        NOW,
        PLAIN,
    )
    lines = page.splitlines()
    assert lines[0] == "psjob/j in namespace ns: Running, age 10m"
    table = lines[lines.index("Replicas") + 1 :]
    assert table[0].split() == ["NAME", "ROLE", "INDEX", "PHASE", "EXIT", "RESTARTS", "NODE"]
    assert [row.split() for row in table[1:4]] == [
        ["j-server-0", "server", "0", "Running", "-", "1", "node-0"],
        ["j-worker-0", "worker", "0", "Running", "-", "1", "node-0"],
        ["j-worker-1", "worker", "1", "Failed", "137", "1", "node-1"],
    ]
    assert "\033" not in page


def test_conditions_show_type_status_reason_age_and_message() -> None:
    condition = {
        "type": "Running",
        "status": "True",
        "reason": "AllReplicasRunning",
        "message": "1 server and 2 workers run",
        "lastTransitionTime": "2026-01-01T00:05:00Z",
    }
    lines = render_status(job(conditions=[condition]), [], (), NOW, PLAIN).splitlines()
    header = lines.index("Conditions") + 1
    assert lines[header].split() == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    assert " ".join(lines[header + 1].split()) == (
        "Running True AllReplicasRunning 5m 1 server and 2 workers run"
    )


def test_progress_shows_every_field_it_has_in_words_a_user_reads() -> None:
    page = render_status(job(progress=PROGRESS), [], (), NOW, PLAIN)
    shown = {" ".join(line.split()[:-1]): line.split()[-1] for line in page.splitlines() if line}
    assert "Progress (read 2s ago)" in page
    assert shown["Step"] == "120"
    assert shown["Done"] == "40.0%"
    assert shown["Samples/s"] == "512.2"
    assert shown["Loss"] == "0.731"
    assert shown["accuracy"] == "0.81"
    words = [" ".join(line.split()) for line in page.splitlines()]
    assert "Workers reporting 2 of 2" in words
    assert "Last checkpoint time 1m ago (2026-01-01T00:09:00Z)" in words
    assert "Estimated completion time in 4m10s (2026-01-01T00:14:10Z)" in words


def test_progress_fields_unknown_to_the_plugin_show_and_malformed_ones_are_left_out() -> None:
    progress = {
        "step": "seven",
        "loss": None,
        "samplesPerSecond": float("nan"),
        "metrics": {"accuracy": "high", "f1": 0.5},
        "tokensPerSecond": 12.5,
        "secondsLeft": 250,
        "nested": {"a": 1},
        "readTime": 17,
    }
    labels = [label for label, _ in progress_lines(progress, NOW)]
    assert labels == ["Step", "f1", "Seconds left", "Tokens per second"]


def test_a_job_without_progress_or_pods_still_prints_its_phase() -> None:
    page = render_status(job(phase="Queued"), [], (), NOW, PLAIN)
    assert page.startswith("psjob/j in namespace ns: Queued")
    assert "no pods" in page
    assert "Progress" not in page


def test_text_from_the_cluster_cannot_drive_the_terminal() -> None:
    condition = {"type": "Failed", "status": "True", "message": "boom\n\033[2J\033]0;pwned\a"}
    page = render_status(job(conditions=[condition], phase="Failed"), [], (), NOW, PLAIN)
    assert "\033" not in page and "\a" not in page
    assert "boom" in page


@pytest.mark.parametrize("status", ["not a dict", None, {"conditions": "x", "progress": [1]}])
def test_a_malformed_status_prints_an_unknown_phase_instead_of_failing(status: Any) -> None:
    page = render_status({"metadata": {"name": "j"}, "status": status}, [], (), NOW, PLAIN)
    assert page.startswith("psjob/j in namespace ?: Unknown")


def test_pods_without_the_psjob_labels_are_not_replicas() -> None:
    stray = {"metadata": {"name": "other", "labels": {"psjob.dev/job-name": "j"}}}
    page = render_status(job(), [stray, *pods({})], (), NOW, PLAIN)
    assert "other" not in page
    assert "j-worker-1" in page


def test_the_phase_is_coloured_on_a_terminal_only() -> None:
    assert "\033[32mRunning\033[0m" in render_status(job(), [], (), NOW, Style(enabled=True))
    assert "\033" not in render_status(job(), [], (), NOW, PLAIN)


def readings(losses: list[float | None]) -> tuple[Reading, ...]:
    history: tuple[Reading, ...] = ()
    for i, loss in enumerate(losses):
        progress = {"readTime": f"2026-01-01T00:00:{i:02d}Z", "loss": loss}
        history = record(history, Reading.of({**progress, "samplesPerSecond": 100.0 + i}))
    return history


def test_a_watch_charts_loss_and_speed_over_its_readings() -> None:
    history = readings([2.0, 1.5, 1.0, 0.5])
    page = render_status(job(progress=PROGRESS), [], history, NOW, PLAIN)
    lines = page.splitlines()
    start = lines.index("Last 4 readings")
    assert lines[start + 1].split() == ["loss", "█▆▃▁", "0.5", "..", "2,", "last", "0.5"]
    assert lines[start + 2].split() == ["samples/s", "▁▃▆█", "100", "..", "103,", "last", "103"]


def test_one_reading_draws_no_chart() -> None:
    page = render_status(job(progress=PROGRESS), [], readings([1.0]), NOW, PLAIN)
    assert "readings" not in page


def test_the_same_reading_is_recorded_once_and_the_history_is_bounded() -> None:
    reading = Reading.of(PROGRESS)
    assert record(record((), reading), reading) == (reading,)
    assert len(readings([1.0] * (READINGS_MAX + 20))) == READINGS_MAX
    assert Reading.of({"step": 3}) is None


def test_sparklines_scale_between_min_and_max_and_leave_gaps() -> None:
    assert sparkline([0, 7, None, 3.5]) == "▁█ ▅"
    assert sparkline([2, 2, 2]) == "▄▄▄"
    assert sparkline([0, 1], ASCII_BLOCKS) == "_@"
    assert sparkline([None, None]) == "  "
    assert chart_line("loss", [None, None], 10) is None
    line = chart_line("loss", list(range(100)), 10, BLOCKS)
    assert line == "loss  ▁▂▃▃▄▅▆▆▇█  90 .. 99, last 99"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (192, "3m12s"), (180, "3m"), (7500, "2h5m"), (3 * 86400, "3d")],
)
def test_durations_read_like_kubectl_ages(seconds: int, text: str) -> None:
    assert duration(timedelta(seconds=seconds)) == text
