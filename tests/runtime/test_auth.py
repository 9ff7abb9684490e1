"""Only processes that hold the job's secret are served: a stranger at a job's rank is refused."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import ProcessPlan, plan_job
from psjob_runtime.training import TrainingSettings

from tests.runtime.jobs import RECORDER, WORKLOADS, start_plans

STRANGER = WORKLOADS / "stranger.py"
TIMEOUT_SECONDS = 10


def job_with_a_stranger(tmp_path: Path, stranger: str, how: str) -> list[ProcessPlan]:
    training = TrainingSettings.model_validate(
        {"timeoutSeconds": TIMEOUT_SECONDS, "config": {"out": str(tmp_path), "steps": 50}}
    )
    plans = plan_job(1, 2, training, [sys.executable, str(RECORDER)])
    return [
        replace(plan, argv=[sys.executable, str(STRANGER), how]) if plan.name == stranger else plan
        for plan in plans
    ]


def run(plans: list[ProcessPlan], tmp_path: Path) -> tuple[dict[str, int], dict[str, str]]:
    procs, logs = start_plans(plans, tmp_path)
    try:
        codes = {name: proc.wait(4 * TIMEOUT_SECONDS) for name, proc in procs.items()}
    except subprocess.TimeoutExpired:
        codes = {}
    finally:
        for proc in procs.values():
            proc.kill()
    return codes, {name: path.read_text() for name, path in logs.items()}


@pytest.mark.slow
def test_a_plain_stranger_beside_the_job_reads_nothing_and_the_job_goes_on(tmp_path: Path) -> None:
    plans = job_with_a_stranger(tmp_path, "none", "plain")
    worker1 = next(plan for plan in plans if plan.name == "worker-1")
    stranger = replace(worker1, name="stranger", argv=[sys.executable, str(STRANGER), "plain"])
    codes, logs = run([*plans, stranger], tmp_path)
    assert "stranger: connected to server 0" in logs["stranger"], logs["stranger"]
    assert "GOT PARAMETERS" not in logs["stranger"]
    assert "server 0: refused a connection from" in logs["server-0"], logs["server-0"]
    assert "where tag 15" in logs["server-0"]  # it skipped the handshake
    assert codes["server-0"] == 0, logs["server-0"]
    assert (tmp_path / "worker-0.pt").exists()


@pytest.mark.slow
def test_a_stranger_with_a_guessed_secret_is_refused_at_once(tmp_path: Path) -> None:
    codes, logs = run(job_with_a_stranger(tmp_path, "worker-1", "guess"), tmp_path)
    assert "could not prove it holds this job's secret" in logs["server-0"], logs["server-0"]
    assert "GOT PAST THE HANDSHAKE" not in logs["worker-1"]
    assert "stranger: refused" in logs["worker-1"], logs["worker-1"]
    # Nobody else came for rank 2: the server gives up on worker 1 after the timeout.
    assert codes["server-0"] == ExitCode.RETRYABLE, logs["server-0"]
    assert "worker 1 (rank 2) did not connect within" in logs["server-0"]
    assert "updates of" not in logs["server-0"]  # it served no step to anyone


@pytest.mark.slow
def test_workers_refuse_a_server_that_does_not_hold_the_secret(tmp_path: Path) -> None:
    codes, logs = run(job_with_a_stranger(tmp_path, "server-0", "guess"), tmp_path)
    for worker in ("worker-0", "worker-1"):
        assert codes[worker] == ExitCode.RETRYABLE, logs[worker]
        assert "server 0 (rank 0) could not prove it holds this job's secret" in logs[worker]
    assert "GOT PAST THE HANDSHAKE" not in logs["server-0"]
    assert not (tmp_path / "worker-0.pt").exists()
