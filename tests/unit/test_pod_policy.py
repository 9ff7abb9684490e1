"""The operator's pod policy: `restricted` refuses host-level templates, naming each field."""

from typing import Any, cast

import pytest
from psjob_operator.cli import build_parser
from psjob_operator.controller import Reconciler
from psjob_operator.kube import Kube
from psjob_operator.models import PSJob
from psjob_operator.pod_policy import PodPolicy, refusal, violations

from tests.unit.test_controller import KEY, FakeKube, job_body, reconcile


def job_with(workers_template: dict[str, Any], servers_template: Any = None) -> PSJob:
    spec: dict[str, Any] = {"image": "img", "workers": {"template": {"spec": workers_template}}}
    if servers_template is not None:
        spec["servers"] = {"template": {"spec": servers_template}}
    return PSJob.model_validate(
        {
            "apiVersion": "psjob.dev/v1alpha1",
            "kind": "PSJob",
            "metadata": {"name": "j"},
            "spec": spec,
        }
    )


HOSTILE = {
    "hostNetwork": True,
    "hostPID": True,
    "hostIPC": True,
    "serviceAccountName": "cluster-admin-sa",
    "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "root", "hostPath": {"path": "/"}}],
    "containers": [
        {"name": "psjob", "securityContext": {"privileged": True}},
        {
            "name": "sidecar",
            "image": "busybox",
            "securityContext": {"capabilities": {"add": ["CHOWN", "SYS_ADMIN", "NET_ADMIN"]}},
            "ports": [{"containerPort": 80}, {"containerPort": 9000, "hostPort": 9000}],
        },
    ],
    "initContainers": [{"name": "setup", "securityContext": {"privileged": True}}],
}


def test_restricted_names_every_host_level_setting_of_a_template() -> None:
    assert violations(job_with(HOSTILE)) == [
        "spec.workers.template.spec.hostNetwork: shares the node's network namespace",
        "spec.workers.template.spec.hostPID: shares the node's process namespace",
        "spec.workers.template.spec.hostIPC: shares the node's IPC namespace",
        "spec.workers.template.spec.serviceAccountName: runs the pods as service account "
        "'cluster-admin-sa', not 'default'",
        "spec.workers.template.spec.volumes[1].hostPath: mounts a folder of the node",
        "spec.workers.template.spec.containers[0].securityContext.privileged: runs a privileged "
        "container",
        "spec.workers.template.spec.containers[1].securityContext.capabilities.add: adds "
        "capabilities NET_ADMIN, SYS_ADMIN",
        "spec.workers.template.spec.containers[1].ports[1].hostPort: binds a port of the node",
        "spec.workers.template.spec.initContainers[0].securityContext.privileged: runs a "
        "privileged container",
    ]


def test_the_servers_template_is_checked_too() -> None:
    job = job_with({}, servers_template={"serviceAccount": "admin"})
    assert violations(job) == [
        "spec.servers.template.spec.serviceAccount: runs the pods as service account 'admin', "
        "not 'default'"
    ]


def test_ordinary_templates_pass() -> None:
    ordinary = {
        "serviceAccountName": "default",
        "hostNetwork": False,
        "nodeSelector": {"pool": "gpu"},
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "containers": [
            {
                "name": "psjob",
                "securityContext": {
                    "privileged": False,
                    "runAsNonRoot": True,
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                },
                "ports": [{"containerPort": 8080}],
            }
        ],
    }
    assert violations(job_with(ordinary)) == []
    assert refusal(PodPolicy.RESTRICTED, job_with(ordinary)) is None


def test_unrestricted_refuses_nothing_and_restricted_explains_the_fix() -> None:
    job = job_with({"hostNetwork": True})
    assert refusal(PodPolicy.UNRESTRICTED, job) is None
    message = refusal(PodPolicy.RESTRICTED, job)
    assert message is not None
    assert message.startswith("the operator's pod policy is restricted and refuses ")
    assert "spec.workers.template.spec.hostNetwork" in message
    assert "Remove these settings" in message


def test_the_operator_flag_defaults_to_unrestricted() -> None:
    parser = build_parser()
    assert parser.parse_args(["operator"]).pod_policy == "unrestricted"
    assert parser.parse_args(["operator", "--pod-policy=restricted"]).pod_policy == "restricted"
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "--pod-policy=strict"])


class RecordingKube(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict[str, Any]] = []

    def create(self, manifest: dict[str, Any]) -> bool:
        self.created.append(manifest)
        return True


def hostile_body() -> dict[str, Any]:
    return job_body(
        "1", spec={"image": "img", "workers": {"template": {"spec": {"hostPID": True}}}}
    )


def test_a_restricted_reconciler_fails_the_job_and_creates_nothing() -> None:
    kube = RecordingKube()
    reconciler = Reconciler(cast(Kube, kube), api_threads=1, pod_policy=PodPolicy.RESTRICTED)
    reconcile(reconciler, hostile_body())
    assert kube.created == []
    status = reconciler.jobs[KEY]["status"]
    assert status["phase"] == "Failed"
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "ForbiddenPodTemplate"
    assert (
        "spec.workers.template.spec.hostPID: shares the node's process namespace"
        in (failed["message"])
    )
    (event,) = [event for event in kube.events if event.reason == "Failed"]
    assert "spec.workers.template.spec.hostPID" in event.message


def test_an_unrestricted_reconciler_creates_the_pods() -> None:
    kube = RecordingKube()
    reconcile(Reconciler(cast(Kube, kube), api_threads=1), hostile_body())
    workers = [m for m in kube.created if m["metadata"]["name"].startswith("j-worker-")]
    assert workers and all(m["spec"]["hostPID"] is True for m in workers)
