"""A worker's progress: the lines it prints, and its latest report for server 0.

Lines start with `progress ` so that the local launcher can redraw them in place on a terminal;
anywhere else (pod logs, CI) they are plain lines, at most one per `interval` seconds.

The latest report travels to server 0 inside a request the worker sends anyway (progress_block),
at most once per `SEND_INTERVAL_SECONDS`: server 0 computes rates from the cumulative sample count,
so a report left out loses nothing but its freshness.
"""

import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TextIO

from psjob_runtime import progress_block
from psjob_runtime.log import log
from psjob_runtime.progress_block import Report

PROGRESS_PREFIX = "progress "
SEND_INTERVAL_SECONDS = 0.5
"""The least time between two reports carried to server 0; the operator reads every few seconds."""


class ProgressReporter:
    def __init__(self, worker: int, interval: float = 1.0, out: TextIO | None = None):
        self.worker = worker
        self.interval = interval
        self.out = out
        self.samples = 0
        self._window_start: float | None = None
        self._window_samples = 0

    def report(
        self, step: int, loss: float | None, samples: int, metrics: dict[str, float]
    ) -> None:
        now = time.monotonic()
        self.samples += samples
        if self._window_start is None:
            # The first report only starts the clock: the samples before it include start-up.
            self._window_start = now
            self._window_samples = 0
            return
        self._window_samples += samples
        elapsed = now - self._window_start
        if elapsed < self.interval:
            return
        rate = self._window_samples / elapsed
        extra = "".join(f"  {name} {value:.4g}" for name, value in metrics.items())
        shown = "n/a" if loss is None else f"{loss:.4f}"
        print(
            f"{PROGRESS_PREFIX}worker {self.worker}  step {step}  loss {shown}  "
            f"{rate:,.0f} samples/s{extra}",
            file=self.out or sys.stdout,
            flush=True,
        )
        self._window_start = now
        self._window_samples = 0


class ProgressOutbox:
    """The newest report not yet sent to server 0, and when the last one left."""

    def __init__(self, worker: int, interval: float = SEND_INTERVAL_SECONDS):
        self.worker = worker
        self.interval = interval
        self.samples = 0
        self._pending: Report | None = None
        self._sent_at: float | None = None
        self._warned: set[str] = set()

    def put(
        self, step: object, loss: object, samples: object, metrics: Mapping[str, object]
    ) -> Report | None:
        """Keep what can be sent of one `session.report(...)`; warn once per kind of problem."""
        report, problems = progress_block.clean(step, loss, samples, metrics)
        for kind, problem in problems:
            if kind not in self._warned:
                self._warned.add(kind)
                log(f"worker {self.worker}: session.report(): {problem} (warned once)")
        if report is None:
            return None
        self.samples += report.samples
        self._pending = replace(report, samples=self.samples)
        return self._pending

    def take(self, now: float, force: bool = False) -> bytes | None:
        """The pending report's block, when one is pending and it is time (or `force`)."""
        if self._pending is None:
            return None
        if not force and self._sent_at is not None and now - self._sent_at < self.interval:
            return None
        block, self._pending, self._sent_at = progress_block.encode(self._pending), None, now
        return block
