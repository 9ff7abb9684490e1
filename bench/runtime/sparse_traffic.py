"""Bytes on the wire per step for the ctr model's embedding table, against theory and against a
dense exchange of the whole table.

A job of 2 servers and 2 workers trains the ctr example's model (26 categorical fields in one
10M x 16 table, 2,048 samples per worker per step). Each worker reads the transport's byte
counts (every payload handed to gloo) around each step and subtracts the dense slice exchange,
which is the same every step. Theory for the table: U unique rows -> U x 16 x 4 bytes of rows
each way, plus U x 8 bytes of ids with the pull and again with the push. A dense-equivalent
exchange moves the whole table each way: 10M x 16 x 4 bytes.

    python bench/runtime/sparse_traffic.py       # prints a table; no assertions
"""

import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace

import torch

STEPS, WARMUP = 20, 2
TABLE_ROWS, DIM, BATCH = 10_000_000, 16, 2048


def role_main() -> None:
    """The worker of the benchmark job: train STEPS steps, print per-step byte counts."""
    import psjob_runtime
    from psjob_runtime.examples.ctr import CtrConfig, CtrModel, Synthetic
    from psjob_runtime.wire import TAG_PAYLOAD, TAG_REPLY

    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = CtrConfig(table_rows=TABLE_ROWS, dim=DIM, batch_size=BATCH)
    data = Synthetic(config)
    table = session.embedding(TABLE_ROWS, DIM)
    model = CtrModel(table, DIM)
    optimizer = session.optimizer(model)
    dense = sum(p.numel() for p in model.parameters()) * 4
    counts = session.transport.counts
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps = []
    for step in range(WARMUP + STEPS):
        dense_batch, ids, clicks = data.batch(session.worker_index, step, BATCH)
        sent, received = counts.sent.get(TAG_PAYLOAD, 0), counts.received.get(TAG_REPLY, 0)
        optimizer.zero_grad()
        loss_fn(model(dense_batch, ids), clicks).backward()
        optimizer.step()
        if step >= WARMUP:
            steps.append(
                {
                    "unique": len(torch.unique(ids)),
                    "out": counts.sent[TAG_PAYLOAD] - sent - dense,
                    "in": counts.received[TAG_REPLY] - received - dense,
                }
            )
    session.finish()
    print(json.dumps(steps), flush=True)


def main() -> None:
    from psjob_runtime.launch import plan_job
    from psjob_runtime.training import TrainingSettings

    training = TrainingSettings.model_validate({"optimizer": {"name": "adagrad", "lr": 0.05}})
    me = [sys.executable, os.path.abspath(__file__), "--role"]
    plans = plan_job(2, 2, training, me)
    plans = [replace(p, argv=me) if p.name.startswith("worker") else p for p in plans]
    procs = [subprocess.Popen(p.argv, env=p.env, stdout=subprocess.PIPE, text=True) for p in plans]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"benchmark job failed: {[p.returncode for p in procs]}")
    steps = [s for out in outputs[2:] for s in json.loads(out.strip().splitlines()[-1])]
    unique = statistics.mean(s["unique"] for s in steps)
    out = statistics.mean(s["out"] for s in steps)
    back = statistics.mean(s["in"] for s in steps)
    theory_out, theory_in = unique * (8 + DIM * 4 + 8), unique * DIM * 4
    dense_equivalent = TABLE_ROWS * DIM * 4
    print(
        f"ctr model, {TABLE_ROWS:,} x {DIM} table, 2 servers + 2 workers, {BATCH} samples x 26 "
        f"ids per worker-step; means over {len(steps)} worker-steps"
    )
    print(f"unique rows per worker-step: {unique:,.0f} of {BATCH * 26:,} ids")
    print(
        f"{'direction':>10} {'measured':>12} {'theory':>12} {'measured/theory':>16} "
        f"{'dense-equivalent':>17} {'dense/measured':>15}"
    )
    for name, measured, theory in (
        ("to servers", out, theory_out),
        ("from servers", back, theory_in),
    ):
        print(
            f"{name:>13} {measured / 1e3:>10.1f}kB {theory / 1e3:>10.1f}kB "
            f"{measured / theory:>16.3f} {dense_equivalent / 1e6:>15.0f}MB "
            f"{dense_equivalent / measured:>15,.0f}"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--role"]:
        role_main()
    else:
        main()
