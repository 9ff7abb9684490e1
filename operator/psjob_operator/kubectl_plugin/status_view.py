"""The page `kubectl psjob status` prints: phase, conditions, replicas, progress and its chart.

It reads the PSJob and its pods as plain JSON (camelCase keys) and trusts none of it: a field of
the wrong type, or one this plugin does not know, is left out rather than failing the page, so a
plugin older or newer than the operator still shows what it can.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psjob_operator.kubectl_plugin.chart import BLOCKS, chart_line
from psjob_operator.kubectl_plugin.terminal import (
    Style,
    format_number,
    number,
    parse_time,
    printable,
    relative,
    table,
)
from psjob_operator.models import Role
from psjob_operator.observe import pod_view

READINGS_MAX = 240
"""Progress readings a watch keeps for its chart: its memory does not grow with the watch."""
CHART_WIDTH = 60
PROGRESS_FIELDS_MAX = 32
METRICS_MAX = 16
"""As many metrics as the operator keeps in status.progress (models.progress.MAX_METRICS)."""
METRIC_NAME_MAX = 63

_PROGRESS_ORDER = (
    "step",
    "percentDone",
    "samples",
    "samplesPerSecond",
    "loss",
    "metrics",
    "workersReporting",
    "lastCheckpointStep",
    "lastCheckpointTime",
)
_LABELS = {"samplesPerSecond": "Samples/s", "percentDone": "Done", "readTime": "Read"}
_FOLDED = {"workers", "readTime"}
"""Shown inside another line: workers with workersReporting, readTime in the heading."""
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_ROLE_ORDER = {Role.SERVER: 0, Role.WORKER: 1}


@dataclass(frozen=True)
class Reading:
    """One reading of status.progress, as the chart draws it."""

    read_time: str
    loss: float | None
    samples_per_second: float | None

    @staticmethod
    def of(progress: Any) -> "Reading | None":
        if not isinstance(progress, dict) or not isinstance(progress.get("readTime"), str):
            return None
        return Reading(
            read_time=progress["readTime"],
            loss=number(progress.get("loss")),
            samples_per_second=number(progress.get("samplesPerSecond")),
        )


def record(history: Sequence[Reading], reading: Reading | None) -> tuple[Reading, ...]:
    """The history with `reading` added, unless the operator has not read progress since."""
    if reading is None or (history and history[-1].read_time == reading.read_time):
        return tuple(history)
    return (*history, reading)[-READINGS_MAX:]


def _label(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    words = " ".join(word.lower() for word in _WORDS.findall(key)) or key
    return printable(words[:1].upper() + words[1:], 40)


def _value(key: str, value: Any, progress: dict[str, Any], now: datetime) -> str | None:
    when = parse_time(value)
    if when is not None:
        return f"{relative(when, now)} ({value})"
    amount = number(value)
    if amount is not None:
        if key == "percentDone":
            return f"{amount:.1f}%"
        if key == "workersReporting" and number(progress.get("workers")):
            return f"{format_number(amount)} of {format_number(number(progress['workers']) or 0)}"
        return format_number(amount)
    if isinstance(value, str):
        return printable(value)
    return None


def progress_lines(progress: Any, now: datetime) -> list[tuple[str, str]]:
    """(label, value) for every field of status.progress this plugin can show."""
    if not isinstance(progress, dict):
        return []
    keys = [k for k in _PROGRESS_ORDER if k in progress]
    keys += sorted(k for k in progress if isinstance(k, str) and k not in keys)
    lines: list[tuple[str, str]] = []
    for key in keys[:PROGRESS_FIELDS_MAX]:
        value = progress[key]
        if key in _FOLDED and not (key == "workers" and "workersReporting" not in progress):
            continue
        if key == "metrics":
            if isinstance(value, dict):
                for name in sorted(str(n) for n in value)[:METRICS_MAX]:
                    amount = number(value[name])
                    if amount is not None:
                        lines.append((printable(name, METRIC_NAME_MAX), format_number(amount)))
            continue
        shown = _value(key, value, progress, now)
        if shown is not None:
            lines.append((_label(key), shown))
    return lines


def replica_rows(pods: Sequence[dict[str, Any]]) -> list[list[str]]:
    """NAME ROLE INDEX PHASE EXIT RESTARTS NODE for each psjob pod, servers first, by index."""
    views = [view for view in map(pod_view, pods) if view is not None]
    views.sort(key=lambda v: (_ROLE_ORDER[v.role], v.index, v.name))
    return [
        [
            printable(view.name, 80),
            view.role.value,
            str(view.index),
            "Terminating" if view.deleting and not view.finished else printable(view.phase, 20),
            "-" if view.exit_code is None else printable(view.exit_code, 12),
            str(view.attempt),
            printable(view.node or "-", 80),
        ]
        for view in views
    ]


def condition_rows(conditions: Any, now: datetime) -> list[list[str]]:
    rows = []
    for condition in conditions if isinstance(conditions, list) else []:
        if not isinstance(condition, dict):
            continue
        when = parse_time(condition.get("lastTransitionTime"))
        rows.append(
            [
                printable(condition.get("type", "?"), 40),
                printable(condition.get("status", "?"), 10),
                printable(condition.get("reason", ""), 60),
                relative(when, now).removesuffix(" ago") if when else "-",
                printable(condition.get("message", "")),
            ]
        )
    return rows


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def render_status(
    job: dict[str, Any],
    pods: Sequence[dict[str, Any]],
    history: Sequence[Reading],
    now: datetime,
    style: Style,
    glyphs: str = BLOCKS,
) -> str:
    """The whole page for one reading of the job and its pods."""
    metadata = _mapping(job.get("metadata"))
    status = _mapping(job.get("status"))
    name = printable(metadata.get("name", "?"), 80)
    namespace = printable(metadata.get("namespace", "?"), 80)
    phase = printable(status.get("phase") or "Unknown", 40)
    heading = f"psjob/{name} in namespace {namespace}: {style.phase(phase)}"
    restarts = number(status.get("restartCount"))
    if restarts:
        heading += f", {format_number(restarts)} restart{'s' if restarts != 1 else ''}"
    created = parse_time(metadata.get("creationTimestamp"))
    if created:
        heading += f", age {relative(created, now).removesuffix(' ago')}"
    out = [heading]

    conditions = condition_rows(status.get("conditions"), now)
    if conditions:
        out += ["", style.bold("Conditions")]
        out += table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], conditions)

    replicas = replica_rows(pods)
    out += ["", style.bold("Replicas")]
    if replicas:
        out += table(["NAME", "ROLE", "INDEX", "PHASE", "EXIT", "RESTARTS", "NODE"], replicas)
    else:
        out.append("no pods")

    progress = status.get("progress")
    lines = progress_lines(progress, now)
    if lines:
        read = parse_time(progress.get("readTime")) if isinstance(progress, dict) else None
        out += ["", style.bold("Progress") + (f" (read {relative(read, now)})" if read else "")]
        width = max(len(label) for label, _ in lines)
        out += [f"  {label.ljust(width)}  {value}" for label, value in lines]

    charts = [
        chart_line(label, values, CHART_WIDTH, glyphs)
        for label, values in (
            ("loss     ", [r.loss for r in history]),
            ("samples/s", [r.samples_per_second for r in history]),
        )
    ]
    if len(history) > 1 and any(charts):
        out += ["", style.bold(f"Last {min(len(history), CHART_WIDTH)} readings")]
        out += [f"  {line}" for line in charts if line]
    return "\n".join(out) + "\n"
