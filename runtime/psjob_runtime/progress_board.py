"""Server 0's view of the job's progress: each worker's latest report, and its own checkpoint.

Worker threads record reports as they arrive on requests; the HTTP thread reads a summary. One
lock guards both and is held only to copy a few numbers, so a reader never slows a step. The
summary is what GET /progress returns (progress_http.py) and what the operator copies into
`status.progress`: its keys are a contract with the operator.
"""

import datetime
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psjob_runtime.progress_block import MAX_METRICS, Report

REPORTING_SECONDS = 60.0
"""A worker counts as reporting while its latest report is at most this old."""
RATE_WINDOW_SECONDS = 10.0
"""Samples per second are measured over a worker's reports of about this long."""
_RATE_POINTS = 64
"""Reports kept per worker for its rate: bounds memory whatever the report rate."""


def rfc3339(when: datetime.datetime) -> str:
    """UTC with a Z and whole seconds, as Kubernetes writes times: 2026-12-03T06:10:00Z."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Worker:
    latest: Report
    seen_at: float
    points: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=_RATE_POINTS))

    def rate(self, now: float) -> float:
        """Samples per second over the recent reports; 0 once the worker stopped reporting."""
        if now - self.seen_at > REPORTING_SECONDS or len(self.points) < 2:
            return 0.0
        newest_at, newest = self.points[-1]
        recent = [point for point in self.points if newest_at - point[0] <= RATE_WINDOW_SECONDS]
        oldest_at, oldest = recent[0] if len(recent) >= 2 else self.points[-2]
        elapsed = newest_at - oldest_at
        return max(0, newest - oldest) / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class CheckpointMark:
    step: int
    time: datetime.datetime


class ProgressBoard:
    """Latest reports by worker (server 0 only); thread-safe."""

    def __init__(
        self,
        num_workers: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ):
        self.num_workers = num_workers
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._checkpoint: CheckpointMark | None = None

    def record(self, worker: int, report: Report) -> None:
        now = self._clock()
        with self._lock:
            seen = self._workers.get(worker)
            if seen is None:
                seen = self._workers[worker] = _Worker(report, now)
            else:
                # A report without a finite loss keeps the worker's last one.
                loss = report.loss if report.loss is not None else seen.latest.loss
                seen.latest = Report(report.step, report.samples, loss, report.metrics)
                seen.seen_at = now
            seen.points.append((now, report.samples))

    def checkpoint_written(self, step: int, when: datetime.datetime | None = None) -> None:
        with self._lock:
            self._checkpoint = CheckpointMark(step, when or self._wall())

    def summary(self) -> dict[str, Any]:
        """The job's progress as GET /progress returns it (the operator parses these keys)."""
        now = self._clock()
        with self._lock:
            workers = list(self._workers.values())
            latest = [(w.latest, w.rate(now), now - w.seen_at) for w in workers]
            mark = self._checkpoint
        losses = [report.loss for report, _, _ in latest if report.loss is not None]
        by_name: dict[str, list[float]] = {}
        for report, _, _ in latest:
            for name, value in report.metrics.items():
                by_name.setdefault(name, []).append(value)
        names = sorted(by_name)[:MAX_METRICS]
        return {
            "step": max((report.step for report, _, _ in latest), default=0),
            "samples": sum(report.samples for report, _, _ in latest),
            "samplesPerSecond": float(sum(rate for _, rate, _ in latest)),
            "loss": sum(losses) / len(losses) if losses else None,
            "metrics": {name: sum(by_name[name]) / len(by_name[name]) for name in names},
            "workersReporting": sum(1 for _, _, age in latest if age <= REPORTING_SECONDS),
            "workers": self.num_workers,
            "checkpoint": (
                None if mark is None else {"step": mark.step, "time": rfc3339(mark.time)}
            ),
            "time": rfc3339(self._wall()),
        }
