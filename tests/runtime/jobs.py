"""Helpers for the runtime tests: run whole jobs through the local launcher, as users do."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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
