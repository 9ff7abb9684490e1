"""Progress lines from a worker: step, loss, samples/s and any metrics the user reports.

Lines start with `progress ` so that the local launcher can redraw them in place on a terminal;
anywhere else (pod logs, CI) they are plain lines, at most one per `interval` seconds.
"""

import sys
import time
from typing import TextIO

PROGRESS_PREFIX = "progress "


class ProgressReporter:
    def __init__(self, worker: int, interval: float = 1.0, out: TextIO | None = None):
        self.worker = worker
        self.interval = interval
        self.out = out
        self.samples = 0
        self._window_start: float | None = None
        self._window_samples = 0

    def report(self, step: int, loss: float, samples: int, metrics: dict[str, float]) -> None:
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
        print(
            f"{PROGRESS_PREFIX}worker {self.worker}  step {step}  loss {loss:.4f}  "
            f"{rate:,.0f} samples/s{extra}",
            file=self.out or sys.stdout,
            flush=True,
        )
        self._window_start = now
        self._window_samples = 0
