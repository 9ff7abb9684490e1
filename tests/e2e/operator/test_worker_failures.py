"""Async training goes on without a lost worker (runPolicy.maxFailedWorkers), on the real
control plane: the preemptible-node case that PS training is meant to survive."""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.operator.support import ROOT, Manifest, OperatorProcess, PSJobs, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def spot_job() -> Manifest:
    """The digits example in async mode: 1 server, 3 workers, one of which may be lost."""
    job: Manifest = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    job["metadata"]["name"] = "spot"
    job["spec"]["servers"]["replicas"] = 1
    job["spec"]["workers"]["replicas"] = 3
    job["spec"]["training"]["mode"] = "async"
    # 750 steps per worker: seconds of training even on a fast machine, so that the
    # deletion lands mid-training.
    job["spec"]["training"]["config"] = {"epochs": 50}
    job["spec"]["runPolicy"]["maxFailedWorkers"] = 1
    return job


def test_a_worker_deleted_mid_training_is_tolerated_and_the_job_succeeds_without_a_restart(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(spot_job())
    # Deleted once it trains: before it joined the group, the others would wait for it.
    eventually(
        lambda: psjobs.reports_progress("spot-worker-2"),
        "worker 2 to report training progress",
        timeout=180,
    )
    psjobs.core.delete_namespaced_pod("spot-worker-2", psjobs.namespace)
    psjobs.kubectl_wait("spot", "Succeeded", timeout=300)

    status = psjobs.status("spot")
    assert status["restartCount"] == 0 and status["attempt"] == 0
    assert status["recoveries"] == 0  # maxFailedWorkers keeps RestartJob: tolerated, not recreated
    assert status["workers"]["failed"] == 1 and status["workers"]["succeeded"] == 2
    succeeded = psjobs.condition("spot", "Succeeded")
    assert succeeded is not None
    assert "1 worker failed and was tolerated (maxFailedWorkers 1)" in succeeded["message"]
    lost = next(r for r in status["replicas"] if (r["role"], r["index"]) == ("worker", 2))
    assert lost["phase"] in ("Failed", "Deleted")

    tolerated = [e for e in psjobs.events("spot") if e["reason"] == "WorkerFailureTolerated"]
    assert len(tolerated) == 1 and tolerated[0]["type"] == "Warning"
    assert "spot-worker-2" in tolerated[0]["message"]
    assert "1 of maxFailedWorkers 1" in tolerated[0]["message"]
    assert not [e for e in psjobs.events("spot") if e["reason"] in ("Restarting", "PodFailed")]

    # The lost worker was not recreated; the two others trained to the end.
    workers = {
        p["metadata"]["name"]: p["status"]["phase"]
        for p in psjobs.pods("spot")
        if p["metadata"]["labels"]["psjob.dev/role"] == "worker"
    }
    assert workers == {"spot-worker-0": "Succeeded", "spot-worker-1": "Succeeded"}
    assert "test accuracy" in psjobs.logs("spot-worker-0")
