"""ctr samples/s with 1 and 2 servers (2 workers, 10M x 16 table, sync, Adagrad), alternating.

Each run is the ctr example through the local launcher; every worker prints its samples/s over
the timed steps (after 5 warm-up steps), and a run's figure is the sum over its workers. The
runs alternate 1 and 2 servers; the report shows medians and the median ratio of the pairs. On
a 2-core machine the 4 or 5 processes share the cores, so a second server adds compute
contention as well as bandwidth.

    python -m bench.runtime.ctr_throughput       # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from bench.runtime.jobs import launch, log, rates

TABLE_ROWS, BATCH, WORKERS = 10_000_000, 2048, 2
TRAINING = ["--mode", "sync", "--optimizer", "adagrad", "--lr", "0.05"]


def run(servers: int, steps: int) -> float:
    config = {"tableRows": TABLE_ROWS, "batchSize": BATCH, "steps": steps, "evalSamples": 1000}
    worker = [sys.executable, "-m", "psjob_runtime.examples.ctr"]
    return rates(launch(servers, WORKERS, TRAINING, config, worker), WORKERS)


def measure(quick: bool) -> dict[str, Any]:
    """Samples/s of each (1 server, 2 servers) pair, medians and the median ratio 2 / 1."""
    repeats, steps = (1, 15) if quick else (2, 60)
    pairs = []
    for repeat in range(repeats):
        log(f"ctr_throughput: 1 then 2 servers, {steps} steps (pair {repeat + 1}/{repeats})")
        pairs.append({"one": run(1, steps), "two": run(2, steps)})
    return {
        "table_rows": TABLE_ROWS,
        "batch_per_worker": BATCH,
        "workers": WORKERS,
        "steps": steps,
        "pairs": pairs,
        "one_server": statistics.median(p["one"] for p in pairs),
        "two_servers": statistics.median(p["two"] for p in pairs),
        "ratio": statistics.median(p["two"] / p["one"] for p in pairs),
    }


if __name__ == "__main__":
    print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
