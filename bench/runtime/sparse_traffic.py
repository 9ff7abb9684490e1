"""Bytes on the wire per step for the ctr model's embedding table, against theory and against a
dense exchange of the whole table, across batch sizes.

A job of 2 servers and 2 workers trains the ctr example's model (26 categorical fields in one
10M x 16 table, sync, Adagrad). Each worker cycles through the batch sizes step by step, reads
the transport's byte counts (every payload handed to gloo) around each step and subtracts the
dense slice exchange, which is the same every step. Theory for the table: U unique rows -> U x 16
x 4 bytes of rows each way, plus U x 8 bytes of ids with the pull and again with the push. A
dense exchange moves the whole table each way: 10M x 16 x 4 bytes whatever the batch, while the
sparse traffic follows the unique rows.

    python -m bench.runtime.sparse_traffic       # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

import torch

from bench.runtime.jobs import log, role_argv, run_plans

TABLE_ROWS, DIM = 10_000_000, 16
BATCHES = (128, 512, 2048, 8192)
WARMUP = 1
ID_BYTES = 8


def role_main() -> None:
    """A worker of the benchmark job: per-step byte counts for each batch size, as JSON."""
    import psjob_runtime
    from psjob_runtime.examples.ctr import CtrConfig, CtrModel, Synthetic
    from psjob_runtime.wire import TAG_PAYLOAD, TAG_REPLY

    torch.set_num_threads(1)
    session = psjob_runtime.init()
    rounds = int(session.config["rounds"])
    data = Synthetic(CtrConfig(table_rows=TABLE_ROWS, dim=DIM))
    table = session.embedding(TABLE_ROWS, DIM)
    model = CtrModel(table, DIM)
    optimizer = session.optimizer(model)
    dense = sum(p.numel() for p in model.parameters()) * 4
    counts = session.transport.counts
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps = []
    sizes = [BATCHES[0]] * WARMUP + [b for _ in range(rounds) for b in BATCHES]
    for step, batch in enumerate(sizes):
        dense_batch, ids, clicks = data.batch(session.worker_index, step, batch)
        sent, received = counts.sent.get(TAG_PAYLOAD, 0), counts.received.get(TAG_REPLY, 0)
        optimizer.zero_grad()
        loss_fn(model(dense_batch, ids), clicks).backward()
        optimizer.step()
        if step >= WARMUP:
            steps.append(
                {
                    "batch": batch,
                    "ids": ids.numel(),
                    "unique": len(torch.unique(ids)),
                    "out": counts.sent[TAG_PAYLOAD] - sent - dense,
                    "in": counts.received[TAG_REPLY] - received - dense,
                }
            )
    session.finish()
    print(json.dumps(steps), flush=True)


def measure(quick: bool) -> dict[str, Any]:
    """Means per batch size over every worker-step: unique rows, bytes each way, theory, dense."""
    rounds = 2 if quick else 5
    log(f"sparse_traffic: batches {BATCHES}, {rounds} steps each per worker")
    training = {"optimizer": {"name": "adagrad", "lr": 0.05}, "config": {"rounds": rounds}}
    workers = run_plans(2, 2, training, {"worker": role_argv("sparse_traffic")})
    by_batch: dict[int, list[dict[str, int]]] = defaultdict(list)
    for step in (s for steps in workers for s in steps):
        by_batch[step["batch"]].append(step)
    row_bytes = DIM * 4
    records = []
    for batch, steps in sorted(by_batch.items()):
        unique = statistics.mean(s["unique"] for s in steps)
        records.append(
            {
                "batch": batch,
                "worker_steps": len(steps),
                "ids": statistics.mean(s["ids"] for s in steps),
                "unique_rows": unique,
                "to_servers": statistics.mean(s["out"] for s in steps),
                "from_servers": statistics.mean(s["in"] for s in steps),
                "theory_to_servers": unique * (ID_BYTES + row_bytes + ID_BYTES),
                "theory_from_servers": unique * row_bytes,
            }
        )
    return {
        "table_rows": TABLE_ROWS,
        "dim": DIM,
        "servers": 2,
        "workers": 2,
        "dense_bytes_each_way": TABLE_ROWS * row_bytes,
        "records": records,
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["--role"]:
        role_main()
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
