"""push+pull through a psjob server against raw gloo send/recv of the same bytes, same processes.

Each size runs one job of one server and one worker (two processes, this script in both roles).
The two processes alternate PAIRS times between a block of raw round trips (the worker sends N
bytes, the server sends N bytes back, plain torch.distributed send/recv) and a block of
optimizer.step() against a real ParameterServer (header + gradient out, SGD update, parameters
back). Each pair gives a ratio raw time / psjob time, measured seconds apart, so that load from
other processes on the machine hits both sides; the table shows the median pair. 1.0 means the
protocol and the update cost nothing on top of moving the bytes.

    python bench/runtime/push_pull.py            # prints a table; no assertions
"""

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch
import torch.distributed as dist

SIZES_MB = (4.8, 48.0)
ROUNDS = {4.8: 50, 48.0: 8}
PAIRS = 11
WARMUP = 2
TAG_RAW = 99


def _raw_server(numel: int, rounds: int) -> None:
    buf = torch.empty(numel)
    for _ in range(rounds + WARMUP):
        dist.recv(buf, src=1, tag=TAG_RAW)
        dist.send(buf, dst=1, tag=TAG_RAW)


def _raw_worker(numel: int, rounds: int) -> float:
    out, back = torch.ones(numel), torch.empty(numel)
    for i in range(rounds + WARMUP):
        if i == WARMUP:
            started = time.perf_counter()
        dist.send(out, dst=0, tag=TAG_RAW)
        dist.recv(back, src=0, tag=TAG_RAW)
    return (time.perf_counter() - started) / rounds


def _psjob_worker(session: object, numel: int, rounds: int) -> float:
    from psjob_runtime.worker import WorkerSession

    assert isinstance(session, WorkerSession)
    model = torch.nn.Linear(numel, 1, bias=False)
    optimizer = session.optimizer(model)
    for i in range(rounds + WARMUP):
        if i == WARMUP:
            started = time.perf_counter()
        optimizer.step()
    return (time.perf_counter() - started) / rounds


def role_main() -> None:
    """One process of the benchmark job: the server or the worker (from the contract)."""
    from psjob_runtime.contract import Role, read_context
    from psjob_runtime.server import ParameterServer
    from psjob_runtime.transport import Transport, join_group
    from psjob_runtime.worker import WorkerSession

    torch.set_num_threads(1)
    ctx = read_context()
    numel = int(ctx.training.config["numel"])
    rounds = int(ctx.training.config["rounds"])
    join_group(ctx)
    pairs = []
    for _ in range(PAIRS):
        if ctx.role is Role.SERVER:
            _raw_server(numel, rounds)
            ParameterServer(ctx, Transport(ctx)).run()
            continue
        raw = _raw_worker(numel, rounds)
        session = WorkerSession(ctx)
        psjob = _psjob_worker(session, numel, rounds)
        session.finish()
        pairs.append({"raw": raw, "psjob": psjob})
    if ctx.role is Role.WORKER:
        print(json.dumps(pairs), flush=True)


def run_size(megabytes: float) -> list[dict[str, float]]:
    from psjob_runtime.launch import plan_job
    from psjob_runtime.training import TrainingSettings

    numel = int(megabytes * 1e6 / 4)
    training = TrainingSettings.model_validate(
        {"optimizer": {"lr": 1e-9}, "config": {"numel": numel, "rounds": ROUNDS[megabytes]}}
    )
    me = [sys.executable, os.path.abspath(__file__), "--role"]
    plans = [replace(plan, argv=me) for plan in plan_job(1, 1, training, me)]
    procs = [subprocess.Popen(p.argv, env=p.env, stdout=subprocess.PIPE, text=True) for p in plans]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"benchmark job failed: {[p.returncode for p in procs]}")
    pairs: list[dict[str, float]] = json.loads(outputs[1].strip().splitlines()[-1])
    return pairs


def main() -> None:
    print(
        f"push+pull vs raw gloo round trip, 1 server + 1 worker, SGD on the server, {PAIRS} pairs"
    )
    print(f"{'size':>8} {'raw ms':>9} {'psjob ms':>9} {'psjob/raw (median pair)':>24}")
    for megabytes in SIZES_MB:
        pairs = run_size(megabytes)
        raw = statistics.median(p["raw"] for p in pairs)
        psjob = statistics.median(p["psjob"] for p in pairs)
        ratio = statistics.median(p["raw"] / p["psjob"] for p in pairs)
        print(f"{megabytes:>6.1f}MB {raw * 1e3:>9.2f} {psjob * 1e3:>9.2f} {ratio:>24.2f}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--role"]:
        role_main()
    else:
        main()
