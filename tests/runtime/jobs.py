"""Helpers for the runtime tests: run whole jobs through the local launcher, as users do."""

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from psjob_runtime.launch import ProcessPlan

WORKLOADS = Path(__file__).parent / "workloads"
RECORDER = WORKLOADS / "recorder.py"


@dataclass
class JobResult:
    returncode: int
    output: str
    records: dict[int, dict[str, Any]]


def launch(
    *options: str, worker: list[str], timeout: float = 240.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psjob_runtime.launch", "--timeout", "60", *options, "--", *worker],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_recorder(tmp_path: Path, *options: str, **config: Any) -> JobResult:
    """Run recorder.py as every worker; return the launcher's result and each worker's record."""
    config = {"out": str(tmp_path), **config}
    done = launch(*options, "--config", json.dumps(config), worker=[sys.executable, str(RECORDER)])
    records = {
        int(path.stem.split("-")[1]): torch.load(path)
        for path in sorted(tmp_path.glob("worker-*.pt"))
    }
    return JobResult(done.returncode, done.stdout + done.stderr, records)


def wait_for_text(path: Path, text: str, limit: float = 180.0) -> str:
    """Poll a log file until `text` appears; return the log."""
    deadline = time.monotonic() + limit
    while text not in (content := path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}:\n{content}"
        time.sleep(0.1)
    return content


def pid_of(log: str, name: str) -> int:
    """The pid the launcher printed for process `name` (e.g. server-1)."""
    match = re.search(rf"started {name} \(rank \d+\) pid (\d+)", log)
    assert match, log
    return int(match.group(1))


def start_plans(
    plans: list[ProcessPlan], folder: Path
) -> tuple[dict[str, subprocess.Popen[bytes]], dict[str, Path]]:
    """Start a planned job's processes without the launcher (so each one's exit code is seen)."""
    logs = {plan.name: folder / f"{plan.name}.log" for plan in plans}
    procs = {}
    for plan in plans:
        with logs[plan.name].open("w") as out:
            procs[plan.name] = subprocess.Popen(
                plan.argv, env=plan.env, stdout=out, stderr=subprocess.STDOUT
            )
    return procs, logs
