"""ctr samples/s with 1 and 2 servers (2 workers, 10M x 16 table, sync), alternating runs.

Each run is the ctr example through the local launcher; every worker prints its samples/s over
the timed steps (after 5 warm-up steps), and a run's figure is the sum over its workers. The
runs alternate 1 and 2 servers REPEATS times; the table shows medians and the median ratio of
the pairs. On this 2-core machine the 4 or 5 processes share the cores, so a second server adds
compute contention as well as bandwidth.

    python bench/runtime/ctr_throughput.py       # prints a table; no assertions
"""

import json
import re
import statistics
import subprocess
import sys

REPEATS = 2
CONFIG = {"tableRows": 10_000_000, "steps": 80, "evalSamples": 1000}


def run(servers: int) -> float:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "psjob_runtime.launch", "--servers", str(servers)),
            *("--workers", "2", "--optimizer", "adagrad", "--lr", "0.05"),
            *("--config", json.dumps(CONFIG), "--", sys.executable),
            *("-m", "psjob_runtime.examples.ctr"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise SystemExit(f"ctr with {servers} servers failed:\n{done.stdout}{done.stderr}")
    rates = [float(r) for r in re.findall(r"throughput (\d+) samples/s", done.stdout)]
    assert len(rates) == 2, done.stdout
    return sum(rates)


def main() -> None:
    pairs = [(run(1), run(2)) for _ in range(REPEATS)]
    one = statistics.median(p[0] for p in pairs)
    two = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    print(f"ctr, 2 workers x 2048 samples per step, 10M x 16 table, sync, {REPEATS} pairs")
    print(f"{'servers':>8} {'samples/s':>10}")
    print(f"{1:>8} {one:>10,.0f}")
    print(f"{2:>8} {two:>10,.0f}")
    print(f"2 servers / 1 server (median pair): {ratio:.2f}")


if __name__ == "__main__":
    main()
