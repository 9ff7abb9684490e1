"""In-place recovery on the real control plane: a server or worker pod deleted while the job
trains is recreated alone, the other pods keep running (same uids), and the job succeeds without
a whole-job restart. Needs the runtime's in-place recovery (replacements rejoin)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.operator.support import ROOT, Manifest, OperatorProcess, PSJobs, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def digits_job(name: str, checkpoints: Path | None = None) -> Manifest:
    """The digits example (2 servers, 2 workers, sync), long enough to be hit mid-training and
    failing below 95% test accuracy."""
    job: Manifest = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    job["metadata"]["name"] = name
    job["spec"]["training"]["config"] = {"epochs": 100, "minAccuracy": 0.95}
    if checkpoints is not None:
        job["spec"]["training"]["checkpoint"] = {"dir": str(checkpoints), "everySteps": 20}
    return job


def delete_and_see_it_recreated(psjobs: PSJobs, job: str, pod: str) -> None:
    """Delete `pod` mid-training; only it is recreated (new uid, incarnation 1, same env)."""
    before = {p["metadata"]["name"]: p for p in psjobs.pods(job)}
    assert len(before) == 4, sorted(before)
    psjobs.core.delete_namespaced_pod(pod, psjobs.namespace)

    def replacement() -> Manifest | None:
        for candidate in psjobs.pods(job):
            if (
                candidate["metadata"]["name"] == pod
                and candidate["metadata"]["uid"] != before[pod]["metadata"]["uid"]
                and candidate["status"].get("phase") == "Running"
            ):
                return candidate
        return None

    again: Manifest = eventually(replacement, f"{pod} recreated and running", timeout=120)
    assert again["metadata"]["annotations"]["psjob.dev/incarnation"] == "1"
    assert psjobs.pod_env(again) == psjobs.pod_env(before[pod])
    others = {name: p["metadata"]["uid"] for name, p in before.items() if name != pod}
    now = psjobs.uids(job)
    assert {name: now.get(name) for name in others} == others, "another pod was recreated"


def recovered_once_and_succeeded(psjobs: PSJobs, job: str, role: str, replica: str) -> None:
    psjobs.kubectl_wait(job, "Succeeded", timeout=300)
    status = psjobs.status(job)
    assert status["restartCount"] == 0 and status["attempt"] == 0
    assert status["recoveries"] == 1 and status[f"{role}s"]["recoveries"] == 1
    assert status["recovering"] == []
    events = psjobs.events(job)
    reasons = [e["reason"] for e in events]
    assert "Restarting" not in reasons and "RecoveryFallback" not in reasons, reasons
    recovering = [e for e in events if e["reason"] == "Recovering"]
    assert len(recovering) == 1 and recovering[0]["message"].startswith(f"{replica}: pod ")
    recovered = [e for e in events if e["reason"] == "Recovered"]
    assert len(recovered) == 1 and recovered[0]["message"].startswith(f"{replica} runs again ")
    assert "test accuracy" in psjobs.logs(f"{job}-worker-0")


def test_a_server_pod_deleted_mid_training_is_recreated_alone_and_the_job_succeeds(
    operator: OperatorProcess, psjobs: PSJobs, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    psjobs.apply(digits_job("heal-server", checkpoints))
    # Deleted once its shard is in a checkpoint: the replacement restores it from there.
    eventually(
        lambda: any(checkpoints.glob("step-*/server-1-of-2.pt")), "a checkpoint", timeout=180
    )
    delete_and_see_it_recreated(psjobs, "heal-server", "heal-server-server-1")
    recovered_once_and_succeeded(psjobs, "heal-server", "server", "server-1")
    # Only the replacement went back to the checkpoint; server 0 kept its state in memory.
    replacement_log = psjobs.logs("heal-server-server-1")
    assert "server 1: restored checkpoint step" in replacement_log, replacement_log[-2000:]
    assert "restored checkpoint" not in psjobs.logs("heal-server-server-0")


def test_a_worker_pod_deleted_mid_training_is_recreated_alone_and_the_job_succeeds(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(digits_job("heal-worker"))
    eventually(
        lambda: psjobs.reports_progress("heal-worker-worker-1"),
        "worker 1 to report training progress",
        timeout=180,
    )
    delete_and_see_it_recreated(psjobs, "heal-worker", "heal-worker-worker-1")
    recovered_once_and_succeeded(psjobs, "heal-worker", "worker", "worker-1")
