"""Every runtime benchmark, one after another; all figures as JSON for bench/report.py.

    python -m bench.runtime [--quick]

push_pull (push+pull vs raw gloo), targets (sync vs DDP and async vs one process at batch 32
and 64), scaling (mnist_cnn samples/s by workers, servers and mode,
against DDP and one process), time_to_accuracy (digits, per mode, against one process),
sparse_traffic (table bytes per step vs theory and dense), checkpoint_write (vs a raw write),
ctr_throughput (1 vs 2 servers) and dynamic_tables (a dynamic table against the fixed one:
samples/s, wire bytes, memory per row, RSS under a capacity). They run one at a time: on a
small machine two benchmarks at once would measure each other. `--quick` runs fewer steps,
repeats, modes and sizes (about 4 minutes on 2 quiet cores, more under load, plus 4 for
dynamic_tables); the full run takes 15-20 minutes.
Writes bench/out/runtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.machine import describe
from bench.runtime import (
    checkpoint_write,
    ctr_throughput,
    dynamic_tables,
    push_pull,
    scaling,
    sparse_traffic,
    targets,
    time_to_accuracy,
)
from bench.runtime.jobs import ROOT, log

BENCHMARKS: dict[str, Callable[[bool], Any]] = {
    "push_pull": push_pull.measure,
    "targets": targets.measure,
    "scaling": scaling.measure,
    "time_to_accuracy": time_to_accuracy.measure,
    "sparse_traffic": sparse_traffic.measure,
    "checkpoint_write": checkpoint_write.measure,
    "ctr_throughput": ctr_throughput.measure,
    "dynamic_tables": dynamic_tables.measure,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats and sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "runtime.json")
    args = parser.parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.runtime", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {**describe(), "torch": torch.__version__},
        "load_before": os.getloadavg(),
    }
    result["runs"] = {}
    for name, measure in BENCHMARKS.items():
        began, load = time.monotonic(), os.getloadavg()[0]
        result[name] = measure(args.quick)
        run = {"seconds": time.monotonic() - began, "load_before": load}
        result["runs"][name] = {**run, "load_after": os.getloadavg()[0]}
        log(f"{name}: {run['seconds']:.0f} s, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    result["load_after"] = os.getloadavg()
    result["wall_seconds"] = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {args.out} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
