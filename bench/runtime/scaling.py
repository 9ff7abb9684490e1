"""mnist_cnn samples/s with 1, 2, 4 workers x 1, 2 servers per mode, against DDP and one process.

Every contender trains the same 1.2M-parameter CNN (psjob_runtime.examples.mnist_cnn.Net) on
the same MNIST-shaped batches, with the same per-worker batch, one torch thread per training
process, and the same number of timed steps after the same warm-up. psjob runs go through the
real launcher (`python -m psjob_runtime.launch ... -- python -m psjob_runtime.examples.mnist_cnn`);
DDP runs the same loop over gloo with as many ranks as psjob has workers; the single process runs
it with torch.optim.SGD, with 1 thread and with as many threads as the machine has cores. A
figure is the sum of every worker's samples/s over the timed steps. The contenders of a repeat
run one after another, in reverse order on odd repeats, so that drift in the machine's load hits
both sides of a ratio alike; the report takes ratios within a repeat and medians over repeats.

`--quick` leaves out ssp, 2 servers and 4 workers, and runs fewer steps once.

On a machine with C cores no contender can exceed about C single-threaded processes' worth of
samples/s: beyond that, more workers only share the same cores (the report says so).

    python -m bench.runtime.scaling              # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial
from typing import Any

import torch

from bench.runtime.jobs import (
    MODES,
    SSP_STALENESS,
    launch,
    log,
    mode_args,
    rates,
    role_argv,
    run_ddp,
)

BATCH = 64
LR = 0.01
WORKERS = (1, 2, 4)
QUICK_WORKERS = (1, 2)


def _train_loop(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int, steps: int, warmup: int
) -> float:
    from psjob_runtime.examples.mnist_cnn import synthetic_batches

    batches = synthetic_batches(BATCH, seed)
    loss_fn = torch.nn.NLLLoss()
    started = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        loss_fn(model(batch[:, :-1].view(-1, 1, 28, 28)), batch[:, -1].long()).backward()
        optimizer.step()
    return steps * BATCH / (time.perf_counter() - started)


def single_process(threads: int, steps: int, warmup: int) -> float:
    """The same loop in this process with torch.optim.SGD: the machine's single-process speed."""
    from psjob_runtime.examples.mnist_cnn import Net

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = Net()
        return _train_loop(model, torch.optim.SGD(model.parameters(), lr=LR), 0, steps, warmup)
    finally:
        torch.set_num_threads(before)


def ddp_rank(steps: int, warmup: int) -> None:
    """One rank of the DDP contender (started by `ddp`): prints its samples/s as JSON."""
    import torch.distributed as dist
    from psjob_runtime.examples.mnist_cnn import Net
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = DistributedDataParallel(Net())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    print(json.dumps(_train_loop(model, optimizer, dist.get_rank(), steps, warmup)), flush=True)
    dist.destroy_process_group()


def ddp(ranks: int, steps: int, warmup: int) -> float:
    return sum(
        float(rate) for rate in run_ddp(role_argv("scaling", str(steps), str(warmup)), ranks)
    )


def psjob(mode: str, servers: int, workers: int, steps: int, warmup: int) -> float:
    training = [*mode_args(mode), "--lr", str(LR)]
    config = {"steps": steps, "batchSize": BATCH, "warmupSteps": warmup}
    worker = [sys.executable, "-m", "psjob_runtime.examples.mnist_cnn"]
    return rates(launch(servers, workers, training, config, worker), workers)


def _contenders(
    modes: tuple[str, ...],
    servers: tuple[int, ...],
    worker_counts: tuple[int, ...],
    steps: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """Every run of one repeat, in order: what it is and how to run it (key 'run')."""
    cores = os.cpu_count() or 1
    runs: list[dict[str, Any]] = [
        {
            "contender": "single",
            "workers": 1,
            "threads": threads,
            "run": partial(single_process, threads, steps, warmup),
        }
        for threads in sorted({1, cores})
    ]
    for workers in worker_counts:
        runs.append(
            {"contender": "ddp", "workers": workers, "run": partial(ddp, workers, steps, warmup)}
        )
        for mode in modes:
            for count in servers:
                run = partial(psjob, mode, count, workers, steps, warmup)
                runs.append(
                    {
                        "contender": "psjob",
                        "mode": mode,
                        "servers": count,
                        "workers": workers,
                        "run": run,
                    }
                )
    return runs


def measure(quick: bool) -> dict[str, Any]:
    """Every contender's samples/s in every repeat (records), with the settings they ran with."""
    modes, servers, worker_counts, steps, warmup, repeats = (
        (MODES[:2], (1,), QUICK_WORKERS, 8, 2, 1) if quick else (MODES, (1, 2), WORKERS, 16, 4, 2)
    )
    records = []
    for repeat in range(repeats):
        runs = _contenders(modes, servers, worker_counts, steps, warmup)
        for run in runs if repeat % 2 == 0 else runs[::-1]:
            what = {k: v for k, v in run.items() if k != "run"}
            log(f"scaling (repeat {repeat + 1}/{repeats}): {what}")
            records.append({**what, "repeat": repeat, "samples_per_second": run["run"]()})
    return {
        "batch_per_worker": BATCH,
        "steps": steps,
        "warmup_steps": warmup,
        "repeats": repeats,
        "ssp_staleness": SSP_STALENESS,
        "records": records,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--role"]:
        ddp_rank(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
