"""PSJobs as users meet them: the chart's operator image drives jobs that run in the runtime
image, as containers on a real kubelet, finding each other through cluster DNS.

The operator comes from `helm install` of charts/psjob-operator with its defaults (the image
`ghcr.io/psjob/operator:<version>` built from images/operator and imported into the node), in a
namespace that enforces the Pod Security "restricted" profile. It reaches the API server through
the in-cluster config (the `kubernetes` Service, kube-proxy's rules), with the chart's RBAC only.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest
import yaml
from kubernetes import client
from psjob_localcluster.kubelet_cluster import KubeletCluster
from psjob_localcluster.node.containerd import ContainerdError
from psjob_localcluster.objects import create
from psjob_localcluster.waiting import wait_for

from tests.e2e.operator.support import ROOT, PSJobs, job_manifest, python_command, raw

pytestmark = pytest.mark.slow

DEPLOYMENT = "psjob-operator"
RUNTIME_USER = 65532
"""The runtime image's non-root user (images/runtime/Dockerfile)."""


@pytest.fixture
def jobs(kubelet: KubeletCluster, kube: client.ApiClient, namespace: str) -> PSJobs:
    return PSJobs(kubelet, namespace, kube)


def _example(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    return manifest


def _operator_pod(kube: client.ApiClient, namespace: str) -> dict[str, Any]:
    pods = raw(
        client.CoreV1Api(kube).list_namespaced_pod,
        namespace,
        label_selector="app.kubernetes.io/name=psjob-operator",
    )["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = pods[0]
    return pod


QUICK_STOP = {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}
"""For pods whose command is a plain sleep: as PID 1 it ignores SIGTERM."""
SLEEP = python_command("import time; time.sleep(600)")


def _containers_of(kubelet: KubeletCluster, namespace: str) -> list[str]:
    """containerd's containers (pod sandboxes included) of the pods of ``namespace``."""
    selector = f'labels."io.kubernetes.pod.namespace"=={namespace}'
    containerd = kubelet.node.containerd
    assert containerd is not None
    return containerd.ctr("containers", "list", "--quiet", selector).split()


def _servers_stopped(jobs: PSJobs, name: str) -> bool:
    servers = [p for p in jobs.pods(name) if p["metadata"]["labels"]["psjob.dev/role"] == "server"]
    return all(p["status"].get("phase") in ("Succeeded", "Failed") for p in servers)


def _pod_netns(kubelet: KubeletCluster) -> set[str]:
    """The network namespaces containerd pinned for pod sandboxes (under the node's /run)."""
    listing = subprocess.run(
        kubelet.node.sandbox.command(["ip", "netns", "list"]),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}


def test_chart_operator_runs_restricted_and_trains_digits_over_cluster_dns(
    kubelet: KubeletCluster, kube: client.ApiClient, operator_namespace: str, jobs: PSJobs
) -> None:
    pod = _operator_pod(kube, operator_namespace)
    container = pod["spec"]["containers"][0]
    assert container["image"].startswith("ghcr.io/psjob/operator:")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {p in container for p in ("livenessProbe", "readinessProbe")} == {True}
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, status

    jobs.apply(_example("digits"))
    jobs.kubectl_wait("digits", "Succeeded", timeout=420)
    succeeded = time.monotonic()
    # the servers stop (by themselves once the workers finished, or on the operator's SIGTERM
    # through containerd and runc) well within the default grace period of 30 s
    wait_for(lambda: _servers_stopped(jobs, "digits"), "the servers of digits to stop", 60)
    assert time.monotonic() - succeeded < 30, "a server ignored SIGTERM until SIGKILL"
    for index in (0, 1):
        assert "test accuracy" in jobs.logs(f"digits-worker-{index}")
    worker = next(p for p in jobs.pods("digits") if p["metadata"]["name"] == "digits-worker-0")
    env = jobs.pod_env(worker)
    assert "NSS_WRAPPER_HOSTS" not in env and "LD_PRELOAD" not in env
    assert f".digits-server.{jobs.namespace}.svc" in env["PSJOB_SERVER_ADDRS"]
    again = _operator_pod(kube, operator_namespace)["status"]["containerStatuses"][0]
    assert again["restartCount"] == 0, "the operator's liveness probe failed while it worked"


def test_a_permanent_exit_code_fails_the_job_naming_pod_and_code(
    jobs: PSJobs, operator_namespace: str
) -> None:
    manifest = job_manifest(
        "permanent",
        image=_example("digits")["spec"]["image"],
        servers={"command": SLEEP, **QUICK_STOP},
        workers={"replicas": 1, "restartPolicy": "ExitCode",
                 "command": python_command("import sys; sys.exit(3)")},
    )  # fmt: skip
    jobs.apply(manifest)
    jobs.kubectl_wait("permanent", "Failed", timeout=180)
    failed = jobs.condition("permanent", "Failed")
    assert failed is not None
    assert "permanent-worker-0" in failed["message"] and "3" in failed["message"], failed
    assert jobs.status("permanent").get("restartCount", 0) == 0


def test_checkpoint_resume_on_a_persistent_volume_as_the_non_root_user(
    kubelet: KubeletCluster, kube: client.ApiClient, jobs: PSJobs, operator_namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    storage = kubelet.node.folder / "volumes" / jobs.namespace
    storage.mkdir(parents=True)
    # as the admin of a hostPath (or NFS) volume prepares it: the kubelet applies fsGroup only to
    # volume types that support ownership management, and hostPath is not one of them
    os.chown(storage, RUNTIME_USER, RUNTIME_USER)
    volume_name = f"checkpoints-{jobs.namespace}"
    create(
        kube,
        "",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "",
                "hostPath": {"path": str(storage), "type": "Directory"},
                "claimRef": {"namespace": jobs.namespace, "name": "psjob-checkpoints"},
            },
        },
    )
    create(
        kube,
        jobs.namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "psjob-checkpoints"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    try:
        jobs.apply(_example("checkpoint-resume"))
        checkpoints = storage / "ctr"
        wait_for(lambda: any(checkpoints.rglob("*")), "a first checkpoint on the volume", 300)
        owners = {path.stat().st_uid for path in checkpoints.rglob("*")}
        assert owners == {RUNTIME_USER}, f"checkpoint files owned by {owners}"
        core.delete_namespaced_pod("checkpoint-resume-server-0", jobs.namespace)

        def restored() -> bool:  # read while the job runs: success deletes the server pods
            try:
                log = jobs.logs("checkpoint-resume-server-0")
            except RuntimeError:  # between attempts, or not started yet
                return False
            return "server 0: restored checkpoint step" in log

        wait_for(restored, "the recreated server 0 to restore the checkpoint", 300)
        jobs.kubectl_wait("checkpoint-resume", "Succeeded", timeout=480)
        status = jobs.status("checkpoint-resume")
        # Recovered in place: only server 0's pod came back, the job never restarted whole.
        events = [f"{e['reason']}: {e['message']}" for e in jobs.events("checkpoint-resume")]
        assert (status["recoveries"], status.get("restartCount", 0)) == (1, 0), "\n".join(events)
    finally:
        core.delete_persistent_volume(volume_name)


def test_deleting_a_psjob_leaves_no_container_sandbox_or_mount(
    kubelet: KubeletCluster, jobs: PSJobs, operator_namespace: str
) -> None:
    manifest = job_manifest(
        "doomed",
        image=_example("digits")["spec"]["image"],
        servers={"command": SLEEP, **QUICK_STOP},
        workers={"replicas": 1, "command": SLEEP, **QUICK_STOP},
    )
    sandbox_netns = _pod_netns(kubelet)
    jobs.apply(manifest)
    jobs.wait_phase("doomed", "Running", timeout=180)
    uids = [p["metadata"]["uid"] for p in jobs.pods("doomed")]
    assert _containers_of(kubelet, jobs.namespace), "no container ran for the job"
    kubelet.kubectl("delete", "-n", jobs.namespace, "psjob/doomed", "--wait=true", timeout=120)
    jobs.wait_no_pods("doomed", timeout=90)

    def nothing_left() -> bool:
        try:
            return not _containers_of(kubelet, jobs.namespace)
        except ContainerdError:
            return False

    wait_for(nothing_left, "the job's containers and sandboxes to be removed", timeout=60)
    mounts = subprocess.run(
        kubelet.node.sandbox.command(["cat", "/proc/self/mountinfo"]),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert not [uid for uid in uids if uid in mounts], "a volume of a deleted pod is mounted"
    left = _pod_netns(kubelet) - sandbox_netns
    assert not left, f"pod network namespaces left: {left}"
