"""The operator under stress: killed mid-creation, and two replicas at once."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.e2e.operator.support import OperatorProcess, PSJobs, eventually, job_manifest

pytestmark = pytest.mark.cluster

# Pods that are never scheduled: creation is tested without running 100 processes.
UNSCHEDULABLE = {"template": {"spec": {"nodeSelector": {"psjob.dev/test": "nowhere"}}}}


def test_operator_killed_during_creation_of_a_100_pod_job_creates_exactly_100(
    start_operator: Callable[..., OperatorProcess], psjobs: PSJobs
) -> None:
    first = start_operator()
    psjobs.apply(
        job_manifest(
            "big",
            servers={"replicas": 4, **UNSCHEDULABLE},
            workers={"replicas": 96, **UNSCHEDULABLE},
        )
    )
    eventually(lambda: len(psjobs.pods("big")) >= 10, "creation to be under way", timeout=60)
    first.process.signal_group(signal.SIGKILL)
    first.process.popen.wait()
    partial = len(psjobs.pods("big"))
    start_operator()
    eventually(lambda: len(psjobs.pods("big")) == 100, "100 pods", timeout=120)
    names = [p["metadata"]["name"] for p in psjobs.pods("big")]
    assert len(set(names)) == 100
    assert sorted(names) == sorted(
        [f"big-server-{i}" for i in range(4)] + [f"big-worker-{i}" for i in range(96)]
    )
    assert partial <= 100
    status = psjobs.wait_phase("big", "Created", timeout=60)
    assert status["restartCount"] == 0


def test_two_replicas_handle_every_job_once(
    start_operator: Callable[..., OperatorProcess], psjobs: PSJobs
) -> None:
    lease = ["--leader-election-namespace", psjobs.namespace]
    leader = start_operator(*lease)
    start_operator(*lease)
    for index in range(20):
        psjobs.apply(job_manifest(f"job-{index}", workers={"replicas": 1}))
    for index in range(20):
        psjobs.wait_phase(f"job-{index}", "Succeeded", timeout=180)
    created = Counter(
        e.involved_object.name
        for e in psjobs.core.list_namespaced_event(psjobs.namespace).items
        if e.reason == "Created" and e.involved_object.kind == "PSJob"
    )
    assert created == Counter({f"job-{index}": 1 for index in range(20)})
    # Stopping the leader hands the Lease over: the standby handles the next job.
    leader.process.stop()
    psjobs.apply(job_manifest("after-failover", workers={"replicas": 1}))
    psjobs.wait_phase("after-failover", "Succeeded", timeout=60)


def test_a_leader_whose_lease_is_taken_stops_with_exit_code_3(
    start_operator: Callable[..., OperatorProcess], psjobs: PSJobs
) -> None:
    """Split-brain guard: when another identity holds the Lease (e.g. after this replica was cut
    off from the API server), the operator stops acting and exits 3 so that it is restarted as a
    standby, rather than reconciling beside the new leader."""
    operator = start_operator("--leader-election-namespace", psjobs.namespace)
    leases = client.CoordinationV1Api(psjobs.core.api_client)

    def led_by_it() -> bool:
        try:
            lease = leases.read_namespaced_lease("psjob-operator", psjobs.namespace)
        except ApiException:
            return False
        return lease.spec is not None and bool(lease.spec.holder_identity)

    eventually(led_by_it, "the operator to take the Lease", timeout=30)
    taken = {
        "spec": {
            "holderIdentity": "another-replica",
            "renewTime": datetime.now(UTC),
            "leaseDurationSeconds": 3600,
        }
    }
    leases.patch_namespaced_lease("psjob-operator", psjobs.namespace, taken)

    # It notices within one lease duration (15 s) and a renewal period.
    assert operator.process.popen.wait(timeout=60) == 3
    assert "was not renewed" in operator.process.log_path.read_text()
