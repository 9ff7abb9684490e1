"""Dynamic tables against the fixed 10M-row table: samples/s, wire bytes, memory, capacity.

Four measurements, in one run:
- throughput: the ctr example (2 servers, 2 workers x 2048 samples, sync, Adagrad, dim 16) with
  the fixed 10M x 16 table and with a dynamic table on the 64-bit hashes of the same ids, so
  both see the same batches and the same unique rows per step; the runs alternate fixed,
  dynamic; the ratio is dynamic / fixed (target >= 0.8).
- wire: bytes per step of a dynamic table against theory (unique ids x (8 + 64 + 8) out,
  unique x 64 in), as sparse_traffic measures the fixed table.
- memory: one server's shard fed the ctr stream in this process (2 servers' routing), its
  resident memory (RSS) growth per stored row against the row and its Adagrad state (128 bytes
  at dim 16; target <= 1.5x), and the shard's own count of its bytes.
- capacity: the dynamic ctr job with maxRowsPerServer far below the distinct ids it sees (at
  least 10x more per server), the servers' RSS sampled through the run, and its test AUC next
  to the same job without a bound.

    python -m bench.runtime.dynamic_tables      # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import torch

from bench.runtime.jobs import ROOT, TIMEOUT_SECONDS, log, rates, role_argv, run_plans

TABLE_ROWS, DIM, BATCH, WORKERS, SERVERS = 10_000_000, 16, 2048, 2, 2
TRAINING = ["--mode", "sync", "--optimizer", "adagrad", "--lr", "0.05"]
ROW_AND_STATE = DIM * 4 * 2
"""Bytes of a row and its Adagrad sum at dim 16."""
ID_BYTES = 8


def _launch_sampled(config: dict[str, Any]) -> tuple[str, list[list[tuple[float, int]]]]:
    """Run the ctr example through the launcher; its stdout and each server's RSS samples
    (seconds since start, bytes), taken every 0.2 s from /proc."""
    argv = [
        *(sys.executable, "-m", "psjob_runtime.launch"),
        *("--servers", str(SERVERS), "--workers", str(WORKERS), *TRAINING),
        *("--config", json.dumps(config), "--", sys.executable, "-m"),
        "psjob_runtime.examples.ctr",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    pids: dict[int, int] = {}
    samples: list[list[tuple[float, int]]] = [[] for _ in range(SERVERS)]
    started, done = time.monotonic(), threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for server, pid in list(pids.items()):
                rss = _rss(pid)
                if rss:
                    samples[server].append((time.monotonic() - started, rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for raw in proc.stdout:
        line = raw.decode(errors="replace")
        lines.append(line)
        if found := re.search(r"started server-(\d+) \(rank \d+\) pid (\d+)", line):
            pids[int(found.group(1))] = int(found.group(2))
    code = proc.wait(TIMEOUT_SECONDS)
    done.set()
    sampler.join()
    out = "".join(lines)
    if code:
        raise RuntimeError(f"ctr job failed ({code}):\n{out}")
    return out, samples


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _auc(stdout: str) -> tuple[float, float]:
    found = re.search(r"test AUC ([\d.]+), hidden model's AUC ([\d.]+)", stdout)
    if not found:
        raise RuntimeError(f"no AUC line:\n{stdout}")
    return float(found.group(1)), float(found.group(2))


def _table_lines(stdout: str) -> list[dict[str, int]]:
    return [
        {"rows": int(rows), "waiting": int(waiting), "bytes": int(size)}
        for rows, waiting, size in re.findall(
            r"dynamic table 0 \(dim \d+\): (\d+) rows, (\d+) ids awaiting admission, (\d+) bytes",
            stdout,
        )
    ]


def throughput(quick: bool) -> dict[str, Any]:
    """Samples/s of (fixed, dynamic) pairs on the same batches; medians and the median ratio."""
    repeats, steps = (1, 25) if quick else (3, 50)
    base = {"tableRows": TABLE_ROWS, "batchSize": BATCH, "steps": steps, "evalSamples": 1000}
    pairs: list[dict[str, Any]] = []
    for repeat in range(repeats):
        log(f"dynamic_tables: fixed then dynamic ctr, {steps} steps (pair {repeat + 1}/{repeats})")
        fixed, _ = _launch_sampled(base)
        dynamic, samples = _launch_sampled({**base, "dynamic": True})
        pairs.append(
            {
                "fixed": rates(fixed, WORKERS),
                "dynamic": rates(dynamic, WORKERS),
                "servers_at_end": _table_lines(dynamic),
                "peak_rss_mb": [max(r for _, r in s) / 1e6 for s in samples if s],
            }
        )
    return {
        "steps": steps,
        "pairs": pairs,
        "fixed": statistics.median(p["fixed"] for p in pairs),
        "dynamic": statistics.median(p["dynamic"] for p in pairs),
        "ratio": statistics.median(p["dynamic"] / p["fixed"] for p in pairs),
    }


def role_main() -> None:
    """A worker of the wire measurement: per-step payload bytes of a dynamic table, as JSON."""
    import psjob_runtime
    from psjob_runtime.examples.ctr import CtrConfig, CtrModel, Synthetic
    from psjob_runtime.wire import TAG_PAYLOAD, TAG_REPLY

    torch.set_num_threads(1)
    session = psjob_runtime.init()
    data = Synthetic(CtrConfig(table_rows=TABLE_ROWS, dim=DIM))
    model = CtrModel(session.dynamic_embedding(DIM), DIM, hashed=True)
    optimizer = session.optimizer(model)
    dense = sum(p.numel() for p in model.parameters()) * 4
    counts, loss_fn = session.transport.counts, torch.nn.BCEWithLogitsLoss()
    steps = []
    for step in range(int(session.config["steps"])):
        dense_batch, ids, clicks = data.batch(session.worker_index, step, BATCH)
        sent, received = counts.sent.get(TAG_PAYLOAD, 0), counts.received.get(TAG_REPLY, 0)
        optimizer.zero_grad()
        loss_fn(model(dense_batch, ids), clicks).backward()
        optimizer.step()
        steps.append(
            {
                "unique": len(torch.unique(ids)),
                "out": counts.sent[TAG_PAYLOAD] - sent - dense,
                "in": counts.received[TAG_REPLY] - received - dense,
            }
        )
    session.finish()
    print(json.dumps(steps), flush=True)


def wire(quick: bool) -> dict[str, Any]:
    steps = 3 if quick else 6
    log(f"dynamic_tables: wire bytes of a dynamic table, {steps} steps per worker")
    training = {"optimizer": {"name": "adagrad", "lr": 0.05}, "config": {"steps": steps}}
    workers = run_plans(SERVERS, WORKERS, training, {"worker": role_argv("dynamic_tables")})
    every = [s for steps_of in workers for s in steps_of]
    unique = statistics.mean(s["unique"] for s in every)
    return {
        "worker_steps": len(every),
        "unique_rows": unique,
        "to_servers": statistics.mean(s["out"] for s in every),
        "from_servers": statistics.mean(s["in"] for s in every),
        "theory_to_servers": unique * (ID_BYTES + DIM * 4 + ID_BYTES),
        "theory_from_servers": unique * DIM * 4,
    }


def memory(quick: bool) -> dict[str, Any]:
    """One server's shard fed the ctr stream here: RSS growth and own bytes per stored row."""
    from psjob_runtime.capacity import return_large_frees
    from psjob_runtime.dynamic_shard import DynamicShard
    from psjob_runtime.dynamic_table import DynamicOptions, DynamicTableSpec, route
    from psjob_runtime.examples.ctr import CtrConfig, Synthetic, hashed_ids
    from psjob_runtime.training import OptimizerSettings

    torch.set_num_threads(1)
    return_large_frees()  # as a server does
    steps = 150 if quick else 300
    log(f"dynamic_tables: memory of one shard over {steps} steps of the ctr stream")
    data = Synthetic(CtrConfig(table_rows=TABLE_ROWS, dim=DIM))
    pushes = []
    for step in range(steps):
        for worker in range(WORKERS):
            ids = torch.unique(hashed_ids(data.batch(worker, step, BATCH)[1]))
            mine = ids[route(ids, SERVERS) == 0]
            pushes.append((mine, torch.randn(len(mine), DIM)))
    settings = OptimizerSettings(name="adagrad", lr=0.05)
    spec = DynamicTableSpec(0, DIM, 0.01, DynamicOptions())
    shard = DynamicShard(spec, 0, SERVERS, settings, DynamicOptions())
    before = _rss_self()
    started = time.monotonic()
    for ids, grads in pushes:
        shard.apply(ids, grads)
    seconds = time.monotonic() - started
    grown = _rss_self() - before
    rows = shard.held_rows
    return {
        "steps": steps,
        "rows": rows,
        "rss_growth_bytes": grown,
        "rss_per_row": grown / rows,
        "own_bytes_per_row": shard.held_bytes / rows,
        "row_and_state_bytes": ROW_AND_STATE,
        "ratio": grown / rows / ROW_AND_STATE,
        "apply_ms_per_push": seconds / len(pushes) * 1e3,
    }


def _rss_self() -> int:
    import os

    return _rss(os.getpid())


def capacity(quick: bool) -> dict[str, Any]:
    """The dynamic ctr job bounded far below its distinct ids, beside the unbounded one."""
    from psjob_runtime.dynamic_table import route
    from psjob_runtime.examples.ctr import CtrConfig, Synthetic, hashed_ids

    steps, bound = (100, 20_000) if quick else (200, 30_000)
    data = Synthetic(CtrConfig(table_rows=TABLE_ROWS, dim=DIM))
    seen = torch.unique(
        torch.cat(
            [
                hashed_ids(torch.unique(data.batch(w, s, BATCH)[1]))
                for s in range(steps)
                for w in range(WORKERS)
            ]
        )
    )
    per_server = torch.bincount(route(seen, SERVERS), minlength=SERVERS).tolist()
    base = {"tableRows": TABLE_ROWS, "batchSize": BATCH, "steps": steps, "evalSamples": 20_000}
    runs = {}
    for name, extra in (("unbounded", {}), ("bounded", {"maxRowsPerServer": bound})):
        log(f"dynamic_tables: {name} dynamic ctr, {steps} steps")
        out, samples = _launch_sampled({**base, "dynamic": True, **extra})
        trained, hidden = _auc(out)
        runs[name] = {
            "test_auc": trained,
            "hidden_auc": hidden,
            "servers_at_end": _table_lines(out),
            "rss_mb_by_quarter": [_quarters(s) for s in samples],
        }
    return {
        "steps": steps,
        "max_rows_per_server": bound,
        "distinct_ids_per_server": per_server,
        "distinct_over_capacity": min(per_server) / bound,
        **runs,
    }


def _quarters(samples: list[tuple[float, int]]) -> list[float]:
    """RSS (MB) at 25, 50, 75 and 100 % of a server's run."""
    if not samples:
        return []
    end = samples[-1][0]
    return [
        next(rss for at, rss in samples if at >= end * quarter / 4) / 1e6
        for quarter in (1, 2, 3, 4)
    ]


def measure(quick: bool) -> dict[str, Any]:
    return {
        "table_rows": TABLE_ROWS,
        "dim": DIM,
        "batch_per_worker": BATCH,
        "workers": WORKERS,
        "servers": SERVERS,
        "memory": memory(quick),
        "wire": wire(quick),
        "throughput": throughput(quick),
        "capacity": capacity(quick),
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["--role"]:
        role_main()
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
