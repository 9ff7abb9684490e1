"""PSJobs queued by the real Kueue manager: quotas, priorities, checkpoint-aware preemption."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from psjob_localcluster.kueue import RunningKueue

from tests.e2e.operator.support import (
    ROOT,
    SLEEP_FOREVER,
    Manifest,
    OperatorProcess,
    PSJobs,
    eventually,
    job_manifest,
    python_command,
    raw,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KUEUE = ("kueue.x-k8s.io", "v1beta2")
FLAVOR = "psjob-node-1"
"""A ResourceFlavor placing pods on node-1, the local node that offers GPUs."""
LOCAL_QUEUE = "team-queue"


def _kueue_object(kind: str, name: str, spec: Manifest, namespace: str | None = None) -> Manifest:
    metadata: Manifest = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "/".join(KUEUE), "kind": kind, "metadata": metadata, "spec": spec}


@pytest.fixture
def queue(kueue: RunningKueue, psjobs: PSJobs, namespace: str) -> Iterator[Callable[..., None]]:
    """Make the test namespace's LocalQueue `team-queue` and its ClusterQueue with a quota."""
    made: list[str] = []

    def make(cpu: str, gpu: str = "0", preemption: bool = False) -> None:
        resources = [
            {"name": "cpu", "nominalQuota": cpu},
            {"name": "memory", "nominalQuota": "64Gi"},
            {"name": "nvidia.com/gpu", "nominalQuota": gpu},
        ]
        cluster_queue: Manifest = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                    "flavors": [{"name": FLAVOR, "resources": resources}],
                }
            ],
        }
        if preemption:
            cluster_queue["preemption"] = {"withinClusterQueue": "LowerPriority"}
        manifests = [
            _kueue_object(
                "ResourceFlavor", FLAVOR, {"nodeLabels": {"kubernetes.io/hostname": "node-1"}}
            ),
            _kueue_object("ClusterQueue", namespace, cluster_queue),
            _kueue_object("LocalQueue", LOCAL_QUEUE, {"clusterQueue": namespace}, namespace),
            _kueue_object("WorkloadPriorityClass", "psjob-low", {}) | {"value": 100},
            _kueue_object("WorkloadPriorityClass", "psjob-high", {}) | {"value": 1000},
        ]
        for manifest in manifests:
            if manifest["kind"] == "WorkloadPriorityClass":
                del manifest["spec"]
        psjobs.cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(manifests))
        made.append(namespace)

    yield make
    for name in made:
        psjobs.cluster.kubectl("delete", "clusterqueue", name, "--wait=false", check=False)


@pytest.fixture
def kueue_operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator("--kueue")


def queued_job(name: str, cpu: str = "1", **spec: Any) -> Manifest:
    """A job in `team-queue` whose every pod asks for `cpu`; workers wait for a file when
    `spec` gives them a command that does."""
    for role in ("servers", "workers"):
        requests = {"requests": {"cpu": cpu, "memory": "64Mi"}}
        spec[role] = {**spec.get(role, {}), "resources": requests}
    job = job_manifest(name, **spec)
    job["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": LOCAL_QUEUE}
    return job


def wait_for_file(path: Path) -> list[str]:
    return python_command(
        f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.2)"
    )


def workloads(psjobs: PSJobs) -> list[Manifest]:
    listed = raw(psjobs.custom.list_namespaced_custom_object, *KUEUE, psjobs.namespace, "workloads")
    found: list[Manifest] = listed["items"]
    return found


def workload_of(psjobs: PSJobs, job: str) -> Manifest:
    def find() -> Manifest | None:
        mine = [
            w for w in workloads(psjobs) if w["metadata"]["labels"].get("psjob.dev/job-name") == job
        ]
        return mine[0] if mine else None

    found: Manifest = eventually(find, f"the Workload of {job}", 30)
    return found


def condition(manifest: Manifest, kind: str) -> Manifest:
    """The condition `kind` of a PSJob or Workload; an empty one while it has none."""
    conditions = manifest.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def test_a_queue_that_fits_one_job_runs_them_one_after_the_other(
    kueue_operator: OperatorProcess,
    psjobs: PSJobs,
    queue: Callable[..., None],
    tmp_path: Path,
) -> None:
    queue(cpu="3")
    for name in ("first", "second"):
        workers = {"replicas": 2, "command": wait_for_file(tmp_path / name)}
        psjobs.apply(queued_job(name, workers=workers, servers={"command": SLEEP_FOREVER}))
        if name == "first":
            psjobs.wait_phase("first", "Running", timeout=60)
    queued = psjobs.wait_phase("second", "Queued", timeout=30)
    assert psjobs.pods("second") == []
    waiting = condition(psjobs.get("second"), "Queued")
    assert waiting["status"] == "True" and LOCAL_QUEUE in waiting["message"], queued
    listing = psjobs.cluster.kubectl("get", "psj", "-n", psjobs.namespace).stdout
    assert re.search(r"^second\s.*Queued", listing, re.M), listing
    workload = workload_of(psjobs, "first")
    assert [(p["name"], p["count"]) for p in workload["spec"]["podSets"]] == [
        ("server", 1),
        ("worker", 2),
    ]
    assert workload["metadata"]["ownerReferences"][0]["name"] == "first"
    assert all(
        pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
        for pod in psjobs.pods("first")
    )
    (tmp_path / "first").touch()
    psjobs.kubectl_wait("first", "Succeeded", timeout=60)
    eventually(
        lambda: condition(workload_of(psjobs, "first"), "Finished").get("status") == "True",
        "the first Workload to be Finished",
    )
    psjobs.wait_phase("second", "Running", timeout=60)
    assert condition(psjobs.get("second"), "Queued")["reason"] == "Admitted"
    (tmp_path / "second").touch()
    psjobs.kubectl_wait("second", "Succeeded", timeout=60)


def complete_checkpoints(folder: Path, servers: int) -> list[int]:
    steps = []
    for step_dir in folder.glob("step-*"):
        if all((step_dir / f"server-{i}-of-{servers}.pt").exists() for i in range(servers)):
            steps.append(int(step_dir.name.removeprefix("step-")))
    return sorted(steps)


def test_a_higher_priority_job_preempts_a_running_one_which_resumes_from_its_checkpoint(
    kueue_operator: OperatorProcess,
    psjobs: PSJobs,
    queue: Callable[..., None],
    tmp_path: Path,
) -> None:
    queue(cpu="4", preemption=True)
    checkpoints = tmp_path / "checkpoints"
    low = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    low["metadata"]["labels"] = {
        "kueue.x-k8s.io/queue-name": LOCAL_QUEUE,
        "kueue.x-k8s.io/priority-class": "psjob-low",
    }
    requests = {"requests": {"cpu": "1", "memory": "64Mi"}}
    low["spec"]["servers"]["resources"] = requests
    low["spec"]["workers"]["resources"] = requests
    low["spec"]["training"]["checkpoint"] = {"dir": str(checkpoints), "everySteps": 20}
    low["spec"]["training"]["config"] = {"epochs": 60, "minAccuracy": 0.95}
    psjobs.apply(low)
    psjobs.wait_phase("digits", "Running", timeout=60)
    eventually(lambda: complete_checkpoints(checkpoints, 2) or None, "a checkpoint", 120)

    high = queued_job("urgent", cpu="1")
    high["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "psjob-high"
    psjobs.apply(high)
    psjobs.wait_phase("digits", "Queued", timeout=60)
    evicted = [e["message"] for e in psjobs.events("digits") if e["reason"] == "Evicted"]
    assert evicted and "Preempted" in evicted[0], psjobs.events("digits")
    psjobs.wait_no_pods("digits", timeout=60)
    resume_step = complete_checkpoints(checkpoints, 2)[-1]
    psjobs.kubectl_wait("urgent", "Succeeded", timeout=120)

    psjobs.kubectl_wait("digits", "Succeeded", timeout=300)
    status = psjobs.status("digits")
    assert status["restartCount"] == 0 and status["attempt"] == 1, status
    server_log = psjobs.logs("digits-server-0")
    assert f"restored checkpoint step {resume_step} " in server_log, server_log[-2000:]


def test_a_job_larger_than_any_flavor_stays_queued_with_kueues_reason(
    kueue_operator: OperatorProcess, psjobs: PSJobs, queue: Callable[..., None]
) -> None:
    queue(cpu="4", gpu="4")
    job = queued_job("giant", workers={"replicas": 2})
    job["spec"]["workers"]["resources"]["requests"]["nvidia.com/gpu"] = "3"
    psjobs.apply(job)
    psjobs.wait_phase("giant", "Queued", timeout=30)

    def kueues_reason() -> str | None:
        message = str(condition(psjobs.get("giant"), "Queued").get("message"))
        return message if "nvidia.com/gpu" in message else None

    try:
        message = eventually(kueues_reason, "Kueue's reason in the Queued condition", 30)
    except TimeoutError:
        queued = condition(psjobs.get("giant"), "Queued").get("message")
        answer = workload_of(psjobs, "giant").get("status", {}).get("conditions")
        raise AssertionError(f"the job says {queued!r}; its Workload says {answer}") from None
    assert "insufficient quota" in message, message
    assert psjobs.pods("giant") == []


def test_deleting_a_queued_job_deletes_its_workload(
    kueue_operator: OperatorProcess, psjobs: PSJobs, queue: Callable[..., None]
) -> None:
    queue(cpu="1")
    psjobs.apply(queued_job("waiting", cpu="2"))
    psjobs.wait_phase("waiting", "Queued", timeout=30)
    name = workload_of(psjobs, "waiting")["metadata"]["name"]
    psjobs.delete("waiting")

    def gone() -> bool:
        try:
            psjobs.custom.get_namespaced_custom_object(*KUEUE, psjobs.namespace, "workloads", name)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    eventually(gone, f"Workload {name} to be deleted", 60)
    assert json.dumps(workloads(psjobs)) == "[]"
