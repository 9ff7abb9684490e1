"""A dead peer ends the whole job quickly with a non-zero code, naming who died."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings

from tests.runtime.jobs import RECORDER, start_plans, wait_for_text

TIMEOUT_SECONDS = 60
"""The job's peer timeout; detection must come well before it (a closed connection, not a wait)."""


@pytest.mark.slow
def test_with_no_restart_left_killing_a_worker_stops_the_launched_job_and_names_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "launch.log"
    config = json.dumps({"out": str(tmp_path), "steps": 100000})
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "psjob_runtime.launch",
                "--workers",
                "2",
                "--timeout",
                str(TIMEOUT_SECONDS),
                "--recovery",
                "restart-job",
                "--backoff-limit",
                "0",
                "--config",
                config,
                "--",
                sys.executable,
                str(RECORDER),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_for_text(log, "[worker-1] step 3 done")
        match = re.search(r"started worker-1 \(rank 2\) pid (\d+)", log.read_text())
        assert match, log.read_text()
        os.kill(int(match.group(1)), signal.SIGKILL)
        killed_at = time.monotonic()
        returncode = launcher.wait(timeout=TIMEOUT_SECONDS)
    assert time.monotonic() - killed_at < TIMEOUT_SECONDS / 2
    assert returncode == 128 + signal.SIGKILL
    assert f"worker-1 (pid {match.group(1)}) was killed by SIGKILL" in log.read_text()


@pytest.mark.slow
def test_without_a_replacement_every_survivor_names_the_lost_peer_and_exits_retryable(
    tmp_path: Path,
) -> None:
    timeout = 15
    training = TrainingSettings.model_validate(
        {"timeoutSeconds": timeout, "config": {"out": str(tmp_path), "steps": 100000}}
    )
    plans = plan_job(1, 2, training, [sys.executable, str(RECORDER)])
    procs, logs = start_plans(plans, tmp_path)
    try:
        wait_for_text(logs["worker-1"], "step 3 done")
        procs["worker-1"].kill()
        killed_at = time.monotonic()
        # The loss is named at once; the server trains on and waits for a replacement up to the
        # timeout.
        wait_for_text(logs["server-0"], "lost worker 1 (rank 2)", timeout / 2)
        codes = {name: procs[name].wait(4 * timeout) for name in ("server-0", "worker-0")}
        elapsed = time.monotonic() - killed_at
    finally:
        for proc in procs.values():
            proc.kill()
    assert elapsed >= timeout
    assert codes == {"server-0": ExitCode.RETRYABLE, "worker-0": ExitCode.RETRYABLE}
    assert "worker 1 (rank 2) did not come back within" in logs["server-0"].read_text()
    # worker 0 trained on without worker 1 until the server gave up on it, then lost the server
    assert "server 0 was not back within" in logs["worker-0"].read_text()
