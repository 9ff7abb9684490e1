"""Live scaling on the real control plane: `kubectl scale psjob/NAME --replicas=N` (the CRD's
scale subresource) adds a worker that trains on the running servers, then removes workers, which
leave on SIGTERM; the servers and worker 0 keep their pods (same uids) and the job succeeds
without a whole-job restart. Needs the runtime's live scaling (servers admit added ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.operator.support import Manifest, OperatorProcess, PSJobs, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RECORDER = Path(__file__).resolve().parents[2] / "runtime/workloads/recorder.py"


def recorder_job(name: str, out: Path) -> Manifest:
    """2 servers, 2 async workers on the recorder workload: worker 0 takes ~80 s (0.25 s a step),
    worker 1 stops after step 5 and sleeps until it is killed, so the servers run on until it
    leaves, whoever else is done: the test cannot be outrun by the job, however loaded the
    machine is."""
    config = {
        "out": str(out),
        "steps": 320,
        "slow_worker": 0,
        "slow_seconds": 0.25,
        "hang_worker": 1,
        "hang_after_step": 5,
    }
    return {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": name},
        "spec": {
            "image": "psjob/runtime:test",
            "servers": {"replicas": 2},
            "workers": {"replicas": 2, "command": ["python", str(RECORDER)]},
            "training": {
                "mode": "async",
                "optimizer": {"name": "sgd", "lr": 0.05},
                "timeoutSeconds": 120,
                "config": config,
            },
        },
    }


def scale(psjobs: PSJobs, job: str, workers: int) -> None:
    """As a user scales: kubectl through the scale subresource."""
    psjobs.cluster.kubectl("scale", "-n", psjobs.namespace, f"psjob/{job}", f"--replicas={workers}")


def pod(psjobs: PSJobs, job: str, name: str) -> Manifest | None:
    return next((p for p in psjobs.pods(job) if p["metadata"]["name"] == name), None)


def logged(psjobs: PSJobs, pod: str, text: str) -> bool:
    shown = psjobs.cluster.kubectl("logs", "-n", psjobs.namespace, pod, check=False)
    return shown.returncode == 0 and text in shown.stdout


def test_kubectl_scale_up_and_down_mid_training_keeps_the_servers_and_the_job_succeeds(
    operator: OperatorProcess, psjobs: PSJobs, tmp_path: Path
) -> None:
    job = "scale-live"
    psjobs.apply(recorder_job(job, tmp_path))
    eventually(lambda: logged(psjobs, f"{job}-worker-1", "step 5 done"), "worker 1 training", 180)
    uids = psjobs.uids(job)
    kept = {name: uids[name] for name in (f"{job}-server-0", f"{job}-server-1", f"{job}-worker-0")}

    scale(psjobs, job, 3)
    added = f"{job}-worker-2"
    eventually(lambda: logged(psjobs, added, "step 100 done"), f"{added} training", 120)
    # It trains to the end on the running servers (from the slowest worker's position).
    finished = eventually(
        lambda: (p := pod(psjobs, job, added)) and p["status"].get("phase") == "Succeeded" and p,
        f"{added} to succeed",
        timeout=120,
    )
    env = psjobs.pod_env(finished)
    numbers = ("PSJOB_REPLICA_INDEX", "PSJOB_NUM_WORKERS", "WORLD_SIZE", "RANK")
    assert [env[k] for k in numbers] == ["2", "3", "5", "4"]
    assert env["PSJOB_RESTART_COUNT"] == "0"
    worker1 = pod(psjobs, job, f"{job}-worker-1")
    assert worker1 is not None and psjobs.pod_env(worker1)["PSJOB_NUM_WORKERS"] == "2"
    assert psjobs.status(job)["workers"]["desired"] == 3
    assert {name: psjobs.uids(job).get(name) for name in kept} == kept

    scale(psjobs, job, 1)
    eventually(
        lambda: not {f"{job}-worker-1", added} & set(psjobs.uids(job)),
        "workers 1 and 2 gone",
        timeout=60,
    )
    # Worker 1 was stopped mid-training: it told the servers it leaves, and nothing waits for it.
    assert "worker 1 (rank 3) left (SIGTERM" in psjobs.logs(f"{job}-server-0")
    assert {name: psjobs.uids(job).get(name) for name in kept} == kept

    psjobs.kubectl_wait(job, "Succeeded", timeout=240)
    status = psjobs.status(job)
    assert (status["restartCount"], status["attempt"], status["recoveries"]) == (0, 0, 0)
    assert status["workers"]["desired"] == 1 and status["workers"]["phases"] == "S"
    assert status["workers"]["failed"] == 0
    # The removed workers left no trace in the status: neither failed nor lost.
    listed = {(r["role"], r["index"]) for r in status["replicas"]}
    assert listed <= {("server", 0), ("server", 1), ("worker", 0)}, status["replicas"]
    events = psjobs.events(job)
    reasons = [e["reason"] for e in events]
    assert not {"Restarting", "Recovering", "PodFailed"} & set(reasons), reasons
    scaled = sorted(e["message"] for e in events if e["reason"] == "Scaled")
    assert [message.split(" in place")[0] for message in scaled] == [
        "workers scaled from 2 to 3",
        "workers scaled from 3 to 1",
    ]
    assert (tmp_path / "worker-0.pt").exists() and (tmp_path / "worker-2.pt").exists()
