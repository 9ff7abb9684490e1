"""A real PSJob trains to Succeeded on the real control plane, driven by the operator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.operator.support import ROOT, OperatorProcess, PSJobs, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_digits_example_trains_to_succeeded(operator: OperatorProcess, psjobs: PSJobs) -> None:
    psjobs.cluster.kubectl(
        "apply", "-n", psjobs.namespace, "-f", str(ROOT / "examples/digits.yaml")
    )
    psjobs.kubectl_wait("digits", "Succeeded", timeout=300)
    status = psjobs.status("digits")
    assert status["workers"]["succeeded"] == 2
    servers = [r for r in status["replicas"] if r["role"] == "server"]
    assert len(servers) == 2
    assert all(r["phase"] in ("Succeeded", "Stopped") for r in servers)
    assert status["servers"]["failed"] == 0
    log = psjobs.logs("digits-worker-0")
    accuracy = [line for line in log.splitlines() if "accuracy" in line.lower()]
    assert accuracy, log[-2000:]
    manifest = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    assert manifest["metadata"]["name"] == "digits"


def test_a_server_deleted_mid_training_restarts_the_job_from_its_checkpoint_under_restart_job(
    operator: OperatorProcess, psjobs: PSJobs, tmp_path: Path
) -> None:
    """runPolicy.recovery RestartJob keeps the whole-job restart (in place: test_recovery.py)."""
    checkpoints = tmp_path / "checkpoints"
    job = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    job["spec"]["training"]["checkpoint"] = {"dir": str(checkpoints), "everySteps": 20}
    job["spec"]["training"]["config"] = {"epochs": 60, "minAccuracy": 0.95}
    job["spec"]["runPolicy"]["recovery"] = "RestartJob"
    psjobs.apply(job)
    eventually(lambda: any(checkpoints.glob("step-*/server-1-of-2.pt")), "a checkpoint", 120)
    psjobs.core.delete_namespaced_pod("digits-server-1", psjobs.namespace)
    psjobs.kubectl_wait("digits", "Succeeded", timeout=300)
    status = psjobs.status("digits")
    assert status["restartCount"] == 1 and status["attempt"] == 1
    assert status["recoveries"] == 0
    reasons = [e["reason"] for e in psjobs.events("digits")]
    assert "Restarting" in reasons and "Recovering" not in reasons
    server_log = psjobs.logs("digits-server-0")
    assert "restored checkpoint step" in server_log, server_log[-2000:]
    worker_log = psjobs.logs("digits-worker-0")
    assert "test accuracy" in worker_log
