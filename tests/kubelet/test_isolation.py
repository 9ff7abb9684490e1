"""Per-job network isolation, enforced: the job's NetworkPolicy on a node whose network plugin
(kube-router, node/firewall.py) enforces NetworkPolicies, with the chart's operator in the cluster.

A pod outside the job, with no labels or with another job's, cannot connect to a server's
rendezvous or progress port; the job's own pods can, and so can the operator, which reads the
job's progress through the port the chart lets it reach. Deleting the policy opens the job,
which shows that the refusals came from the policy.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client
from psjob_localcluster.kubelet_cluster import KubeletCluster
from psjob_localcluster.waiting import wait_for

from tests.e2e.operator.support import ROOT, PSJobs, raw

pytestmark = pytest.mark.slow

PROBE = """
import socket, sys
for port in sys.argv[2:]:
    try:
        socket.create_connection((sys.argv[1], int(port)), timeout=5).close()
        print(port, "open")
    except OSError as error:
        print(port, "closed", error)
"""
"""Tries each port of the address; prints `PORT open` or `PORT closed REASON`."""

RUNTIME_IMAGE = "ghcr.io/psjob/runtime:0.1.0"


@pytest.fixture
def jobs(kubelet: KubeletCluster, kube: client.ApiClient, namespace: str) -> PSJobs:
    return PSJobs(kubelet, namespace, kube)


def _long_digits() -> dict[str, Any]:
    """examples/digits.yaml with one server and enough epochs to stay running for a while."""
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    manifest["spec"]["servers"]["replicas"] = 1
    manifest["spec"]["training"]["config"] = {"epochs": 3000}
    return manifest


def _server_target(jobs: PSJobs, name: str) -> tuple[str, list[str]]:
    """Server 0's pod address and its container ports (rendezvous and progress)."""
    pod = next(p for p in jobs.pods(name) if p["metadata"]["name"] == f"{name}-server-0")
    ports = [str(port["containerPort"]) for port in pod["spec"]["containers"][0]["ports"]]
    return pod["status"]["podIP"], ports


def _probe_from_new_pod(
    jobs: PSJobs, labels: dict[str, str], address: str, ports: list[str]
) -> str:
    """Run PROBE in a fresh pod with `labels`; its output once it has finished."""
    name = f"probe-{uuid.uuid4().hex[:6]}"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "probe",
                    "image": RUNTIME_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE, address, *ports],
                }
            ],
        },
    }
    jobs.core.create_namespaced_pod(jobs.namespace, pod)  # type: ignore[arg-type]

    def finished() -> bool:
        read = raw(jobs.core.read_namespaced_pod, name, jobs.namespace)
        return read["status"].get("phase") in ("Succeeded", "Failed")

    wait_for(finished, f"probe pod {name} to finish", timeout=90)
    return jobs.logs(name)


def _probe_from_job_pod(kubelet: KubeletCluster, jobs: PSJobs, pod: str, *target: str) -> str:
    done = kubelet.kubectl(
        "exec", "-n", jobs.namespace, pod, "--", "python", "-c", PROBE, *target, timeout=60
    )
    return done.stdout


def _opened(output: str) -> dict[str, bool]:
    return {line.split()[0]: line.split()[1] == "open" for line in output.splitlines() if line}


def test_only_the_jobs_pods_and_the_operator_reach_its_servers(
    kubelet: KubeletCluster, operator_namespace: str, jobs: PSJobs
) -> None:
    jobs.apply(_long_digits())
    jobs.wait_phase("digits", "Running", timeout=240)
    policy = raw(
        client.NetworkingV1Api(jobs.api).read_namespaced_network_policy, "digits", jobs.namespace
    )
    owner = policy["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("PSJob", "digits")
    # the operator runs in psjob-system and reads server 0's progress port through the policy;
    # a step in status also says that the servers listen and the workers reach them
    step = wait_for(
        lambda: jobs.status("digits").get("progress", {}).get("step"),
        "the operator to read the job's progress",
        timeout=180,
    )
    assert step > 0
    address, ports = _server_target(jobs, "digits")
    assert len(ports) == 2, ports

    stranger = _opened(_probe_from_new_pod(jobs, {}, address, ports))
    job_labels = dict(jobs.pods("digits")[0]["metadata"]["labels"])
    other_job = {**job_labels, "psjob.dev/job-name": "another", "psjob.dev/role": "worker"}
    other = _opened(_probe_from_new_pod(jobs, other_job, address, ports))
    own = _opened(_probe_from_job_pod(kubelet, jobs, "digits-worker-0", address, *ports))
    assert stranger == dict.fromkeys(ports, False), stranger
    assert other == dict.fromkeys(ports, False), other
    assert own == dict.fromkeys(ports, True), own

    client.NetworkingV1Api(jobs.api).delete_namespaced_network_policy("digits", jobs.namespace)
    wait_for(
        lambda: all(_opened(_probe_from_new_pod(jobs, {}, address, ports)).values()),
        "a pod outside the job to connect once the job's policy is deleted",
        timeout=120,
        interval=1.0,
    )
    jobs.delete("digits")
