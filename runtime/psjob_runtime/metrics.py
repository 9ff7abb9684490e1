"""A server's numbers in the Prometheus text format (0.0.4), written by hand: no dependency.

Every sample carries the labels job, namespace, role and index, so one scrape config serves every
job. Server 0 adds the job's gauges from its progress board. docs/runtime.md lists every name; a
dashboard is tested against those names.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class ServerReading:
    """What one server exports, read without stopping its worker threads."""

    updates: int
    received_bytes: int
    sent_bytes: int
    table_rows: int
    table_bytes: int
    checkpoint_seconds: float | None
    """How long the last checkpoint write took (None: none written by this process)."""
    staleness: int | None
    """async/ssp: the fastest active worker's lead over the slowest, in steps (None: sync)."""
    max_staleness: int | None
    """ssp: the largest lead any worker was allowed (None: other modes)."""


_SERVER = [
    # (name, type, ServerReading attribute, help)
    ("psjob_server_updates_total", "counter", "updates",
     "Gradients applied to this server's slice (sync: averaged rounds)."),
    ("psjob_server_received_bytes_total", "counter", "received_bytes",
     "Bytes this server received from workers."),
    ("psjob_server_sent_bytes_total", "counter", "sent_bytes",
     "Bytes this server sent to workers."),
    ("psjob_server_table_rows", "gauge", "table_rows",
     "Embedding table rows this server holds."),
    ("psjob_server_table_bytes", "gauge", "table_bytes",
     "Bytes of this server's table rows and their optimizer state."),
    ("psjob_server_checkpoint_duration_seconds", "gauge", "checkpoint_seconds",
     "Seconds the last checkpoint write of this server took."),
    ("psjob_server_staleness_steps", "gauge", "staleness",
     "async/ssp: steps the fastest active worker is ahead of the slowest."),
    ("psjob_server_max_staleness_steps", "gauge", "max_staleness",
     "ssp: the most steps any worker was allowed ahead of the slowest."),
]  # fmt: skip

_JOB = [
    # (name, key of the progress summary, help); gauges, on server 0 only
    ("psjob_job_step", "step", "The highest step any worker reported."),
    ("psjob_job_samples_per_second", "samplesPerSecond",
     "The workers' recent samples per second, summed."),
    ("psjob_job_loss", "loss", "The mean of the workers' latest losses."),
    ("psjob_job_workers_reporting", "workersReporting",
     "Workers that reported in the last 60 s."),
]  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(
    labels: Mapping[str, str], reading: ServerReading, progress: Mapping[str, Any] | None
) -> str:
    """The text of GET /metrics: the server's numbers, and the job's where `progress` is given."""
    label_text = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
    lines = []

    def sample(name: str, kind: str, help_text: str, value: float | None) -> None:
        if value is None:
            return
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{{{label_text}}} {_number(value)}")

    for name, kind, attribute, help_text in _SERVER:
        sample(name, kind, help_text, getattr(reading, attribute))
    if progress is not None:
        for name, key, help_text in _JOB:
            sample(name, "gauge", help_text, progress[key])
    return "\n".join(lines) + "\n"
