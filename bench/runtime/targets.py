"""The runtime's throughput targets at batch 32 and 64: psjob sync against DDP, async against one
process, each pair measured side by side in one run.

Every contender is a fresh set of processes training the 1.2M-parameter CNN of PyTorch's
parameter-server tutorial (psjob_runtime.examples.mnist_cnn.Net) on the same MNIST-shaped
batches, one torch thread per process, the same timed steps after the same warm-up:

- `single`: one process, torch.optim.SGD (the limit for one worker);
- `ddp`: DistributedDataParallel over gloo, 2 ranks;
- `sync`: psjob, 1 server + 2 workers, the gradient pushed after backward (the default);
- `sync_overlap`: the same with `overlap_backward=True`, pushing during backward;
- `async`: psjob, 1 server + 1 worker.

Each process also times its `optimizer.step()` calls: for psjob that is the part of the exchange
that backward did not hide (waiting for the other workers, the server's update, the reply).

The contenders of a repeat run one after another, in reverse order on odd repeats, so that drift
in the machine's load hits both sides of a ratio alike; ratios are taken within a repeat and the
report shows their medians. A figure is the sum of every worker's samples/s.

    python -m bench.runtime.targets              # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

from bench.runtime.jobs import (
    ROOT,
    TIMEOUT_SECONDS,
    log,
    mode_settings,
    role_argv,
    run_ddp,
    run_plans,
)

BATCHES = (32, 64)
LR = 0.01
CONTENDERS = ("single", "ddp", "sync", "sync_overlap", "async")
JOBS = {
    "sync": ("sync", 1, 2, False),
    "sync_overlap": ("sync", 1, 2, True),
    "async": ("async", 1, 1, False),
}
"""psjob contenders: mode, servers, workers, overlap_backward."""


def _rate(
    model: torch.nn.Module, optimizer: Any, batch: int, seed: int, steps: int, warmup: int
) -> dict[str, float]:
    """Samples/s over the timed steps, and the mean seconds per step inside optimizer.step()."""
    from psjob_runtime.examples.mnist_cnn import synthetic_batches

    batches = synthetic_batches(batch, seed)
    loss_fn = torch.nn.NLLLoss()
    started, in_step = time.perf_counter(), 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started, in_step = time.perf_counter(), 0.0
        images = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = loss_fn(model(images[:, :-1].view(-1, 1, 28, 28)), images[:, -1].long())
        loss.backward()
        stepping = time.perf_counter()
        optimizer.step()
        in_step += time.perf_counter() - stepping
    elapsed = time.perf_counter() - started
    return {"rate": steps * batch / elapsed, "step_seconds": in_step / steps}


def role_main(role: str, batch: int, steps: int, warmup: int, overlap: bool) -> None:
    """One process of a contender: prints its samples/s as JSON."""
    from psjob_runtime.examples.mnist_cnn import Net

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model: torch.nn.Module = Net()
    if role == "single":
        optimizer: Any = torch.optim.SGD(model.parameters(), lr=LR)
        result = _rate(model, optimizer, batch, 0, steps, warmup)
    elif role == "ddp":
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        dist.init_process_group("gloo")
        model = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        result = _rate(model, optimizer, batch, dist.get_rank(), steps, warmup)
        dist.destroy_process_group()
    else:
        import psjob_runtime

        session = psjob_runtime.init()
        optimizer = session.optimizer(model, overlap_backward=overlap)
        result = _rate(model, optimizer, batch, session.worker_index, steps, warmup)
        session.finish()
    print(json.dumps(result), flush=True)


def _combined(results: list[dict[str, float]]) -> dict[str, float]:
    """Samples/s summed over the workers; seconds in step() averaged over them."""
    return {
        "samples_per_second": sum(r["rate"] for r in results),
        "step_seconds": sum(r["step_seconds"] for r in results) / len(results),
    }


def _single(batch: int, steps: int, warmup: int) -> dict[str, float]:
    done = subprocess.run(
        role_argv("targets", "single", str(batch), str(steps), str(warmup), "1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=True,
    )
    return _combined([json.loads(done.stdout.strip().splitlines()[-1])])


def _ddp(batch: int, steps: int, warmup: int, ranks: int = 2) -> dict[str, float]:
    argv = role_argv("targets", "ddp", str(batch), str(steps), str(warmup), "1")
    return _combined(run_ddp(argv, ranks))


def _psjob(contender: str, batch: int, steps: int, warmup: int) -> dict[str, float]:
    mode, servers, workers, overlap = JOBS[contender]
    training = {**mode_settings(mode), "optimizer": {"lr": LR}, "config": {}}
    argv = role_argv("targets", "psjob", str(batch), str(steps), str(warmup), str(int(overlap)))
    return _combined(run_plans(servers, workers, training, {"worker": argv}))


def _run(contender: str, batch: int, steps: int, warmup: int) -> dict[str, float]:
    if contender == "single":
        return _single(batch, steps, warmup)
    if contender == "ddp":
        return _ddp(batch, steps, warmup)
    return _psjob(contender, batch, steps, warmup)


def measure(quick: bool) -> dict[str, Any]:
    """Every contender's samples/s at every batch size in every repeat."""
    steps, warmup, repeats = (15, 3, 1) if quick else (40, 5, 3)
    records = []
    for repeat in range(repeats):
        for batch in BATCHES:
            order = CONTENDERS if repeat % 2 == 0 else CONTENDERS[::-1]
            for contender in order:
                log(f"targets (repeat {repeat + 1}/{repeats}): {contender}, batch {batch}")
                measured = _run(contender, batch, steps, warmup)
                records.append(
                    {
                        "contender": contender,
                        "batch": batch,
                        "repeat": repeat,
                        **measured,
                        "load": os.getloadavg()[0],
                    }
                )
    return {"steps": steps, "warmup_steps": warmup, "repeats": repeats, "records": records}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--role"]:
        role, batch, steps, warmup, overlap = sys.argv[2:7]
        role_main(role, int(batch), int(steps), int(warmup), overlap == "1")
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
