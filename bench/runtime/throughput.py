"""mnist_cnn samples/s: psjob sync and async (1 server, 2 workers) against DDP and one process.

Every contender trains the same 1.2M-parameter CNN (psjob_runtime.examples.mnist_cnn.Net) on
the same MNIST-shaped batches, with the same per-worker batch, one torch thread per training
process, and the same number of timed steps after the same warm-up. The contenders run one
after another and the sequence repeats; each repeat's ratios are taken against that repeat's
DDP run, measured a minute apart at most, and the table shows the median over repeats, so
that drift in the machine's load hits both sides of a ratio alike.

    python bench/runtime/throughput.py           # prints a table of samples/s and ratios
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

BATCH = 64
STEPS = 40
WARMUP = 5
REPEATS = 3


def _train_loop(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> float:
    from psjob_runtime.examples.mnist_cnn import synthetic_batches

    batches = synthetic_batches(BATCH, seed)
    loss_fn = torch.nn.NLLLoss()
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            started = time.perf_counter()
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        loss_fn(model(batch[:, :-1].view(-1, 1, 28, 28)), batch[:, -1].long()).backward()
        optimizer.step()
    return STEPS * BATCH / (time.perf_counter() - started)


def single_process(threads: int) -> float:
    from psjob_runtime.examples.mnist_cnn import Net

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Net()
    return _train_loop(model, torch.optim.SGD(model.parameters(), lr=0.01), seed=0)


def ddp_rank() -> None:
    """One rank of the DDP contender (started by `ddp`)."""
    import torch.distributed as dist
    from psjob_runtime.examples.mnist_cnn import Net
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = DistributedDataParallel(Net())
    rate = _train_loop(model, torch.optim.SGD(model.parameters(), lr=0.01), seed=dist.get_rank())
    print(json.dumps({"rate": rate}), flush=True)


def ddp(ranks: int = 2) -> float:
    from psjob_runtime.launch import free_ports

    port = free_ports("127.0.0.1", 1)[0]
    procs = []
    for rank in range(ranks):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(ranks),
            "RANK": str(rank),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--ddp-rank"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit("the DDP contender failed")
    return sum(float(json.loads(out.strip().splitlines()[-1])["rate"]) for out in outputs)


def psjob(mode: str, workers: int = 2) -> float:
    config = json.dumps({"steps": STEPS, "batchSize": BATCH, "warmupSteps": WARMUP})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "psjob_runtime.launch",
            "--servers",
            "1",
            "--workers",
            str(workers),
            "--mode",
            mode,
            "--lr",
            "0.01",
            "--config",
            config,
            "--",
            sys.executable,
            "-m",
            "psjob_runtime.examples.mnist_cnn",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    rates = [float(r) for r in re.findall(r"throughput ([\d.]+) samples/s", done.stdout)]
    if done.returncode != 0 or len(rates) != workers:
        raise SystemExit(f"the psjob {mode} contender failed:\n{done.stdout}\n{done.stderr}")
    return sum(rates)


SYNC = "psjob sync, 1 server + 2 workers"
ASYNC = "psjob async, 1 server + 2 workers"
DDP = "DDP gloo, 2 ranks"
SINGLE = "single process, 2 threads"


def main() -> None:
    contenders: dict[str, Callable[[], float]] = {
        DDP: ddp,
        SYNC: lambda: psjob("sync"),
        ASYNC: lambda: psjob("async"),
        SINGLE: lambda: single_process(2),
        "single process, 1 thread": lambda: single_process(1),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    ratios: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(REPEATS):
        measured = {name: run() for name, run in contenders.items()}
        for name, value in measured.items():
            rates[name].append(value)
            ratios[name].append(value / measured[DDP])
    print(f"mnist_cnn, batch {BATCH} per worker, {STEPS} timed steps, {REPEATS} repeats")
    print(f"  {'contender':<36} {'samples/s':>10} {'x DDP':>7}   (medians; per-repeat ratios)")
    for name in contenders:
        each = ", ".join(f"{r:.2f}" for r in ratios[name])
        print(
            f"  {name:<36} {statistics.median(rates[name]):>10.1f} "
            f"{statistics.median(ratios[name]):>7.2f}   ({each})"
        )
    print(f"  sync / DDP  = {statistics.median(ratios[SYNC]):.2f} (target >= 0.9)")
    print(f"  async / DDP = {statistics.median(ratios[ASYNC]):.2f} (target >= 1.0)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--ddp-rank"]:
        ddp_rank()
    else:
        main()
