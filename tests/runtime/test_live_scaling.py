"""Live scaling on the running servers: a worker the job did not start with joins and trains; a
worker stopped by SIGTERM leaves: no bound waits for it, and the servers end without it once
it has been gone timeoutSeconds."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psjob_runtime import contract as c
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import ProcessPlan, plan_job
from psjob_runtime.training import TrainingSettings

from tests.runtime.jobs import RECORDER, start_plans, wait_for_text

TIMEOUT_SECONDS = 60
LEFT_TIMEOUT_SECONDS = 15
"""The leave test's timeoutSeconds: how long the server waits for a process to take the left
worker's place before it ends."""


def settings(tmp_path: Path, mode: str, **config: object) -> TrainingSettings:
    extra = {"staleness": 2} if mode == "ssp" else {}
    return TrainingSettings.model_validate(
        {
            "mode": mode,
            **extra,
            "timeoutSeconds": TIMEOUT_SECONDS,
            "config": {"out": str(tmp_path), **config},
        }
    )


def added_worker(plans: list[ProcessPlan], index: int, workers: int) -> ProcessPlan:
    """The plan of worker `index` of a job scaled to `workers`, as the operator renders it."""
    servers = sum(plan.name.startswith("server") for plan in plans)
    template = next(plan for plan in plans if plan.name == "worker-0")
    env = dict(template.env)
    env.update(
        {
            c.ENV_REPLICA_INDEX: str(index),
            c.ENV_NUM_WORKERS: str(workers),
            c.ENV_WORLD_SIZE: str(servers + workers),
            c.ENV_RANK: str(servers + index),
        }
    )
    return ProcessPlan(f"worker-{index}", servers + index, template.argv, env)


def wait_all(procs: dict[str, "subprocess.Popen[bytes]"]) -> dict[str, int]:
    try:
        return {name: proc.wait(3 * TIMEOUT_SECONDS) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["async", "ssp"])
def test_a_worker_added_while_training_joins_the_running_server(tmp_path: Path, mode: str) -> None:
    # Worker 0 is slow, so the job still trains when the added worker has started up.
    training = settings(tmp_path, mode, steps=400, slow_seconds=0.05, slow_worker=0)
    plans = plan_job(1, 2, training, [sys.executable, str(RECORDER)])
    procs, logs = start_plans(plans, tmp_path)
    wait_for_text(logs["worker-0"], "step 5 done")
    server_pid = procs["server-0"].pid
    more, more_logs = start_plans([added_worker(plans, 2, 3)], tmp_path)
    procs.update(more)
    codes = wait_all(procs)
    server_log = logs["server-0"].read_text()
    assert codes == dict.fromkeys(procs, 0), server_log + more_logs["worker-2"].read_text()
    assert procs["server-0"].pid == server_pid
    assert "server 0: all 3 workers finished" in server_log
    assert (tmp_path / "worker-2.pt").exists()


@pytest.mark.slow
def test_a_worker_stopped_by_sigterm_leaves_and_the_bound_waits_no_more(tmp_path: Path) -> None:
    # Worker 2 stops after step 3: in ssp the others are held at the bound until it leaves.
    training = settings(tmp_path, "ssp", steps=40, hang_worker=2, hang_after_step=3)
    training = training.model_copy(update={"timeout_seconds": LEFT_TIMEOUT_SECONDS})
    plans = plan_job(1, 3, training, [sys.executable, str(RECORDER)])
    procs, logs = start_plans(plans, tmp_path)
    wait_for_text(logs["worker-2"], "step 3 done")
    time.sleep(1.0)
    procs["worker-2"].send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    procs["worker-0"].wait(TIMEOUT_SECONDS)
    procs["worker-1"].wait(TIMEOUT_SECONDS)
    trained = time.monotonic() - stopped_at
    codes = wait_all(procs)
    ended = time.monotonic() - stopped_at
    server_log = logs["server-0"].read_text()
    assert codes == {
        "server-0": 0,
        "worker-0": 0,
        "worker-1": 0,
        "worker-2": ExitCode.TERMINATED,
    }, server_log
    assert "server 0: worker 2 (rank 3) left (SIGTERM" in server_log
    assert trained < LEFT_TIMEOUT_SECONDS / 2  # the others were not held until a timeout
    # A replacement of worker 2 would have been served until then (a deleted pod's, recreated).
    assert ended >= LEFT_TIMEOUT_SECONDS, server_log
    assert "workers [2] left (SIGTERM) and did not come back" in server_log
    assert (tmp_path / "worker-0.pt").exists() and (tmp_path / "worker-1.pt").exists()
