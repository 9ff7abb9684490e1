"""A real server and a scripted misbehaving worker (workloads/rogue.py), for the protocol tests."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings

from tests.runtime.jobs import WORKLOADS, start_plans

ROGUE = WORKLOADS / "rogue.py"
TIMEOUT_SECONDS = 20
"""The job's peer timeout: a server waiting on a rogue that left notices it at once anyway."""


@dataclass
class ServerEnd:
    returncode: int
    """As subprocess reports it: negative for a signal (-6: SIGABRT)."""
    log: str
    rogue_log: str
    peak_rss_bytes: int


def wait_with_rusage(proc: "subprocess.Popen[bytes]", limit: float) -> int:
    """Wait for `proc` and return its peak RSS in bytes (the kernel's count, ru_maxrss)."""
    deadline = time.monotonic() + limit
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss * 1024
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the server did not exit within {limit} s")
        time.sleep(0.05)


def run_rogue(
    tmp_path: Path, script: list[dict[str, Any]], linger: float = 3.0, **training: Any
) -> ServerEnd:
    """One server (the real one) and the rogue as worker 0; return how the server ended."""
    settings = TrainingSettings.model_validate(
        {
            "timeoutSeconds": TIMEOUT_SECONDS,
            **training,
            "config": {"script": script, "linger": linger},
        }
    )
    plans = plan_job(1, 1, settings, [sys.executable, str(ROGUE)])
    procs, logs = start_plans(plans, tmp_path)
    try:
        peak = wait_with_rusage(procs["server-0"], 3 * TIMEOUT_SECONDS)
    finally:
        procs["worker-0"].kill()
        procs["worker-0"].wait()
    return ServerEnd(
        procs["server-0"].returncode,
        logs["server-0"].read_text(),
        logs["worker-0"].read_text(),
        peak,
    )
