"""push+pull through a psjob server against raw gloo send/recv of the same bytes, same processes.

(psjob moves its messages over its own TCP connections, not gloo: the raw gloo round trip stays
the yardstick, the plain way to move these bytes between two processes with torch.)

Each size runs one job of one server and one worker (two processes, this module in both roles).
The two processes alternate `pairs` times between a block of raw round trips (the worker sends N
bytes, the server sends N bytes back, plain torch.distributed send/recv) and a block of
optimizer.step() against a real ParameterServer (header + gradient out, SGD update, parameters
back). Each pair gives a ratio raw time / psjob time, measured seconds apart, so that load from
other processes on the machine hits both sides; the report shows the median pair. 1.0 means the
protocol and the update cost nothing on top of moving the bytes. Target: >= 0.9.

    python -m bench.runtime.push_pull            # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from bench.runtime.jobs import log, role_argv, run_plans

if TYPE_CHECKING:
    from psjob_runtime.worker import ParameterServerOptimizer

SIZES_MB = (4.8, 48.0)
ROUNDS = {4.8: 50, 48.0: 8}
WARMUP = 2
TAG_RAW = 99


def _raw_server(numel: int, rounds: int) -> None:
    buf = torch.empty(numel)
    for _ in range(rounds + WARMUP):
        dist.recv(buf, src=1, tag=TAG_RAW)
        dist.send(buf, dst=1, tag=TAG_RAW)


def _raw_worker(numel: int, rounds: int) -> float:
    out, back = torch.ones(numel), torch.empty(numel)
    started = time.perf_counter()
    for i in range(rounds + WARMUP):
        if i == WARMUP:
            started = time.perf_counter()
        dist.send(out, dst=0, tag=TAG_RAW)
        dist.recv(back, src=0, tag=TAG_RAW)
    return (time.perf_counter() - started) / rounds


def _psjob_worker(optimizer: ParameterServerOptimizer, rounds: int) -> float:
    started = time.perf_counter()
    for i in range(rounds + WARMUP):
        if i == WARMUP:
            started = time.perf_counter()
        optimizer.step()
    return (time.perf_counter() - started) / rounds


def role_main() -> None:
    """One process of the benchmark job: the server or the worker (from the contract)."""
    from psjob_runtime.contract import Role, read_context
    from psjob_runtime.server import ParameterServer
    from psjob_runtime.transport import Listener
    from psjob_runtime.worker import WorkerSession

    torch.set_num_threads(1)
    ctx = read_context()
    config = ctx.training.config
    numel, rounds, pairs = (int(config[k]) for k in ("numel", "rounds", "pairs"))
    dist.init_process_group(
        backend="gloo",
        init_method=f"tcp://127.0.0.1:{config['gloo_port']}",
        rank=0 if ctx.role is Role.SERVER else 1,
        world_size=2,
    )
    results = []
    for _ in range(pairs):
        if ctx.role is Role.SERVER:
            _raw_server(numel, rounds)
            listener = Listener(ctx)
            listener.start()
            ParameterServer(ctx, listener).run()
            listener.close()
            continue
        raw = _raw_worker(numel, rounds)
        session = WorkerSession(ctx)
        model = torch.nn.Linear(numel, 1, bias=False)
        psjob = _psjob_worker(session.optimizer(model, overlap_backward=False), rounds)
        session.finish()
        results.append({"raw": raw, "psjob": psjob})
    print(json.dumps(results), flush=True)


def measure(quick: bool) -> list[dict[str, Any]]:
    """One record per size: medians of raw and psjob times and of the pairs' ratios."""
    from psjob_runtime.launch import free_ports

    pairs = 3 if quick else 11
    records = []
    for megabytes in SIZES_MB:
        log(f"push_pull: {megabytes} MB, {pairs} pairs")
        numel = int(megabytes * 1e6 / 4)
        (gloo_port,) = free_ports("127.0.0.1", 1)
        config = {
            "numel": numel,
            "rounds": ROUNDS[megabytes],
            "pairs": pairs,
            "gloo_port": gloo_port,
        }
        training = {"optimizer": {"lr": 1e-9}, "config": config}
        argv = role_argv("push_pull")
        _, measured = run_plans(1, 1, training, {"server": argv, "worker": argv})
        records.append(
            {
                "megabytes": megabytes,
                "rounds": ROUNDS[megabytes],
                "pairs": measured,
                "raw_seconds": statistics.median(p["raw"] for p in measured),
                "psjob_seconds": statistics.median(p["psjob"] for p in measured),
                "ratio": statistics.median(p["raw"] / p["psjob"] for p in measured),
            }
        )
    return records


if __name__ == "__main__":
    if sys.argv[1:] == ["--role"]:
        role_main()
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
