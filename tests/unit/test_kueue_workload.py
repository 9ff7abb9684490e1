"""Queueing through Kueue, pure: the Workload a queued job gets and how Kueue's answers drive it."""

from datetime import UTC, datetime
from typing import Any

from psjob_operator.kueue import (
    Placement,
    finish_patch,
    place_pod,
    placements,
    read_admission,
    release_patch,
    render_workload,
)
from psjob_operator.models import ConditionType, Phase, PSJob, Role
from psjob_operator.plan import decide
from psjob_operator.render import render_pod

from tests.support.pod_views import all_pod_views

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Manifest = dict[str, Any]


def queued_job(status: Manifest | None = None) -> PSJob:
    requests = {"resources": {"requests": {"cpu": "2", "nvidia.com/gpu": "1"}}}
    body: Manifest = {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "uid": "0123456789ab",
            "generation": 1,
            "labels": {"kueue.x-k8s.io/queue-name": "team"},
        },
        "spec": {
            "image": "img",
            "servers": {"replicas": 2, **requests},
            "workers": {"replicas": 3, **requests},
        },
    }
    if status is not None:
        body["status"] = status
    return PSJob.model_validate(body)


def workload(*conditions: tuple[str, str, str], admitted_to: str | None = None) -> Manifest:
    status: Manifest = {
        "conditions": [
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": f"{kind} {reason}",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            for kind, value, reason in conditions
        ]
    }
    if admitted_to is not None:
        status["admission"] = {
            "clusterQueue": "cq",
            "podSetAssignments": [
                {"name": "server", "flavors": {"cpu": admitted_to, "nvidia.com/gpu": admitted_to}},
                {"name": "worker", "flavors": {"cpu": admitted_to}},
            ],
        }
    return {"metadata": {"name": "w", "namespace": "ns", "generation": 1}, "status": status}


ADMITTED = workload(
    ("QuotaReserved", "True", "QuotaReserved"), ("Admitted", "True", "Admitted"), admitted_to="gpu"
)
EVICTED = workload(
    ("QuotaReserved", "True", "QuotaReserved"),
    ("Admitted", "True", "Admitted"),
    ("Evicted", "True", "Preempted"),
    admitted_to="gpu",
)


def test_the_workload_has_one_pod_set_per_role_with_the_real_requests_and_is_owned_by_the_job() -> (
    None
):
    rendered = render_workload(queued_job(), "high", 1000)
    assert rendered["metadata"]["name"] == "psjob-j-01234567"
    assert rendered["metadata"]["ownerReferences"][0]["uid"] == "0123456789ab"
    spec = rendered["spec"]
    assert spec["queueName"] == "team"
    assert spec["priority"] == 1000 and spec["priorityClassRef"]["name"] == "high"
    assert [(p["name"], p["count"]) for p in spec["podSets"]] == [("server", 2), ("worker", 3)]
    container = spec["podSets"][1]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "2", "nvidia.com/gpu": "1"}
    assert "env" not in container  # the server list would outgrow etcd for the largest job


def test_a_job_not_admitted_yet_is_queued_with_kueues_reason_and_creates_no_pod() -> None:
    pending = workload(("QuotaReserved", "False", "Pending"))
    decision = decide(queued_job(), [], T0, None, read_admission("team", pending))
    assert decision.create_pods == []
    assert decision.status.phase == Phase.QUEUED
    queued = next(c for c in decision.status.conditions if c.type == ConditionType.QUEUED)
    assert (queued.status, queued.reason) == ("True", "Pending")
    assert "LocalQueue team" in queued.message and "QuotaReserved Pending" in queued.message


def test_admission_creates_every_pod_and_says_by_which_cluster_queue() -> None:
    queued = decide(queued_job(), [], T0, None, read_admission("team", None)).status
    job = queued_job(queued.model_dump(mode="json", by_alias=True))
    decision = decide(job, [], T0, None, read_admission("team", ADMITTED))
    assert len(decision.create_pods) == 5
    admitted = next(c for c in decision.status.conditions if c.type == ConditionType.QUEUED)
    assert (admitted.status, admitted.reason) == ("False", "Admitted")
    assert "ClusterQueue cq" in admitted.message


def test_an_evicted_job_stops_its_pods_and_resumes_in_a_new_attempt_without_a_restart() -> None:
    running = decide(queued_job(), [], T0, None, read_admission("team", ADMITTED)).status
    job = queued_job(running.model_dump(mode="json", by_alias=True))
    pods = [p for p in all_pod_views(job)]
    evicted = decide(job, pods, T0, None, read_admission("team", EVICTED))
    assert sorted(evicted.delete_pods) == sorted(p.name for p in pods)
    assert evicted.status.phase == Phase.QUEUED
    assert [e.reason for e in evicted.events] == ["Evicted"]
    job = queued_job(evicted.status.model_dump(mode="json", by_alias=True))
    readmitted = decide(job, [], T0, None, read_admission("team", ADMITTED))
    assert readmitted.status.attempt == 1 and readmitted.status.restart_count == 0
    assert readmitted.create_pods


def test_the_quota_of_an_evicted_workload_is_released_and_it_is_requeued() -> None:
    patch = release_patch(EVICTED, T0)
    assert patch is not None and patch["status"]["admission"] is None
    conditions = {c["type"]: (c["status"], c["reason"]) for c in patch["status"]["conditions"]}
    assert conditions["QuotaReserved"] == ("False", "Pending")
    assert conditions["Admitted"] == ("False", "NoReservation")
    assert conditions["Requeued"] == ("True", "Preempted")
    assert conditions["Evicted"] == ("True", "Preempted")
    assert release_patch(ADMITTED, T0) is None


def test_a_finished_job_marks_its_workload_finished_once() -> None:
    patch = finish_patch(ADMITTED, Phase.SUCCEEDED, "every worker succeeded", T0)
    assert patch is not None
    finished = [c for c in patch["status"]["conditions"] if c["type"] == "Finished"]
    assert [(c["status"], c["reason"]) for c in finished] == [("True", "Succeeded")]
    assert finish_patch(ADMITTED, Phase.RUNNING, "", T0) is None
    done = workload(("Finished", "True", "Succeeded"))
    assert finish_patch(done, Phase.SUCCEEDED, "", T0) is None


def test_pods_get_the_assigned_flavors_node_labels_and_tolerations() -> None:
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    flavor = {"spec": {"nodeLabels": {"pool": "gpu"}, "tolerations": [toleration]}}
    placed = placements(read_admission("team", ADMITTED), {"gpu": flavor})
    assert placed[Role.WORKER] == Placement({"pool": "gpu"}, [toleration])
    pod = place_pod(render_pod(queued_job(), Role.WORKER, 0), placed[Role.WORKER])
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert pod["spec"]["tolerations"] == [toleration]
