"""What a lost peer that nobody replaces does to a job: the others wait for it up to the timeout
(a replacement would be served, see test_launcher_recovery.py), then sync stops everyone for a
restart and async goes on without the worker."""

import sys
import time
from pathlib import Path

import pytest
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings

from tests.runtime.jobs import RECORDER, start_plans, wait_for_text

TIMEOUT_SECONDS = 10


def settings(tmp_path: Path, mode: str, **config: object) -> TrainingSettings:
    return TrainingSettings.model_validate(
        {
            "mode": mode,
            "timeoutSeconds": TIMEOUT_SECONDS,
            "config": {"out": str(tmp_path), **config},
        }
    )


@pytest.mark.slow
def test_a_server_not_back_within_the_timeout_makes_every_other_process_exit_retryable(
    tmp_path: Path,
) -> None:
    plans = plan_job(
        2, 2, settings(tmp_path, "sync", steps=100000), [sys.executable, str(RECORDER)]
    )
    procs, logs = start_plans(plans, tmp_path)
    try:
        wait_for_text(logs["worker-1"], "step 3 done")
        procs["server-1"].kill()
        killed_at = time.monotonic()
        others = ("server-0", "worker-0", "worker-1")
        codes = {name: procs[name].wait(4 * TIMEOUT_SECONDS) for name in others}
        elapsed = time.monotonic() - killed_at
    finally:
        for proc in procs.values():
            proc.kill()
    assert codes == dict.fromkeys(others, ExitCode.RETRYABLE)
    assert TIMEOUT_SECONDS <= elapsed < 4 * TIMEOUT_SECONDS
    worker_log = logs["worker-0"].read_text()
    assert "lost server 1 (rank 1)" in worker_log
    assert f"server 1 was not back within {TIMEOUT_SECONDS} s" in worker_log


@pytest.mark.slow
def test_async_drops_a_dead_worker_and_the_others_finish(tmp_path: Path) -> None:
    # Worker 1 hangs after step 3 until killed: it cannot finish first. Worker 0 trains on.
    training = settings(
        tmp_path,
        "async",
        steps=60,
        slow_worker=0,
        slow_seconds=0.05,
        hang_worker=1,
        hang_after_step=3,
    )
    plans = plan_job(1, 2, training, [sys.executable, str(RECORDER)])
    procs, logs = start_plans(plans, tmp_path)
    try:
        wait_for_text(logs["worker-1"], "step 3 done")
        procs["worker-1"].kill()
        codes = {name: procs[name].wait(4 * TIMEOUT_SECONDS) for name in ("server-0", "worker-0")}
    finally:
        for proc in procs.values():
            proc.kill()
    server_log = logs["server-0"].read_text()
    assert codes == {"server-0": 0, "worker-0": 0}, server_log
    assert f"worker 1 (rank 2) did not come back within {TIMEOUT_SECONDS} s" in server_log
    assert "dropped worker 1" in server_log
    assert "dropped workers [1]" in server_log
    assert (tmp_path / "worker-0.pt").exists()
