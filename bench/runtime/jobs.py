"""Start benchmark jobs as local processes, the way users start them, and read back their output.

Two ways, both through the runtime's own launcher code so that every process gets the same
environment contract as in a pod:
- `launch`: `python -m psjob_runtime.launch ... -- <worker command>`, the user's path (servers are
  the real `python -m psjob_runtime server`);
- `run_plans`: the launcher's process plans with some argv replaced by a benchmark module's
  `--role` entry, for benchmarks that measure inside the processes (raw gloo next to psjob, byte
  counters); each process's last stdout line is its JSON result.
Role modules are started with `python -m bench.runtime.<name>` from the repository root.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 600
MODES = ("sync", "async", "ssp")
SSP_STALENESS = 2
"""Every ssp run of the benchmarks lets a worker lead the slowest by this many steps."""


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def role_argv(module: str, *extra: str) -> list[str]:
    """The command that runs `bench.runtime.<module>` in its role inside a job."""
    return [sys.executable, "-m", f"bench.runtime.{module}", "--role", *extra]


def run_ddp(argv: list[str], ranks: int) -> list[Any]:
    """Run `argv` as `ranks` DDP processes on loopback; the JSON of each one's last line."""
    import os

    from psjob_runtime.launch import free_ports

    port = free_ports("127.0.0.1", 1)[0]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [
        subprocess.Popen(
            argv,
            env={**env, "WORLD_SIZE": str(ranks), "RANK": str(rank)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in range(ranks)
    ]
    outputs = [proc.communicate(timeout=TIMEOUT_SECONDS)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"DDP with {ranks} ranks failed")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def mode_settings(mode: str) -> dict[str, Any]:
    """The training settings' mode fields (spec.training) for one of MODES."""
    return {"mode": mode, "staleness": SSP_STALENESS if mode == "ssp" else None}


def mode_args(mode: str) -> list[str]:
    """The same as launcher options."""
    return ["--mode", mode, *(["--staleness", str(SSP_STALENESS)] if mode == "ssp" else [])]


def launch(
    servers: int,
    workers: int,
    training: list[str],
    config: dict[str, Any],
    worker_argv: list[str],
) -> str:
    """Run one job through `python -m psjob_runtime.launch`; its stdout (failing loudly)."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "psjob_runtime.launch"),
            *("--servers", str(servers), "--workers", str(workers), *training),
            *("--config", json.dumps(config), "--", *worker_argv),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    if done.returncode:
        raise RuntimeError(f"job failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def rates(stdout: str, workers: int) -> float:
    """The sum of every worker's `throughput N samples/s` line (the examples print one each)."""
    found = [float(r) for r in re.findall(r"throughput ([\d.]+) samples/s", stdout)]
    if len(found) != workers:
        raise RuntimeError(f"expected {workers} throughput lines:\n{stdout}")
    return sum(found)


def run_plans(
    servers: int, workers: int, training: dict[str, Any], roles: dict[str, list[str]]
) -> list[Any]:
    """Run a job whose processes named in `roles` ('server', 'worker') run the given argv.

    Returns the JSON of the last stdout line of every process that has a role argv, in rank
    order (servers first).
    """
    from psjob_runtime.launch import plan_job
    from psjob_runtime.training import TrainingSettings

    settings = TrainingSettings.model_validate(training)
    plans = plan_job(servers, workers, settings, roles.get("worker", []))
    role = [plan.name.rsplit("-", 1)[0] for plan in plans]  # "server-0" -> "server"
    plans = [replace(p, argv=roles.get(r, p.argv)) for p, r in zip(plans, role, strict=True)]
    procs = [
        subprocess.Popen(p.argv, env=p.env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for p in plans
    ]
    outputs = [proc.communicate(timeout=TIMEOUT_SECONDS)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"benchmark job failed: exit codes {[p.returncode for p in procs]}")
    return [
        json.loads(out.strip().splitlines()[-1])
        for r, out in zip(role, outputs, strict=True)
        if r in roles
    ]
