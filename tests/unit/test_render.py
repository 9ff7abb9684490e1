"""What the operator creates for a PSJob: names, DNS, the env contract, resources, templates."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from psjob_operator.cli import main
from psjob_operator.contract import CONTRACT_ENV
from psjob_operator.models import PSJob, Role
from psjob_operator.observe import pod_view
from psjob_operator.render import render_all, render_pod, render_secret, render_service

ROOT = Path(__file__).resolve().parents[2]


def make_job(**spec: Any) -> PSJob:
    return PSJob.model_validate(
        {
            "apiVersion": "psjob.dev/v1alpha1",
            "kind": "PSJob",
            "metadata": {"name": "ctr", "namespace": "ml", "uid": "1234-abcd"},
            "spec": {"image": "psjob/runtime:1", **spec},
        }
    )


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


def test_services_and_the_network_policy_come_first_then_one_pod_per_replica() -> None:
    job = make_job(servers={"replicas": 2}, workers={"replicas": 3})
    names = [(m["kind"], m["metadata"]["name"]) for m in render_all(job)]
    assert names == [
        ("Service", "ctr-server"),
        ("Service", "ctr-worker"),
        ("NetworkPolicy", "ctr"),
        ("Pod", "ctr-server-0"),
        ("Pod", "ctr-server-1"),
        ("Pod", "ctr-worker-0"),
        ("Pod", "ctr-worker-1"),
        ("Pod", "ctr-worker-2"),
    ]


def test_services_are_headless_and_publish_pods_before_they_are_ready() -> None:
    job = make_job(servers={"port": 5000})
    server = render_service(job, Role.SERVER)
    assert server["spec"]["clusterIP"] == "None"
    assert server["spec"]["publishNotReadyAddresses"] is True
    assert server["spec"]["selector"] == {
        "app.kubernetes.io/name": "psjob",
        "app.kubernetes.io/managed-by": "psjob-operator",
        "psjob.dev/job-name": "ctr",
        "psjob.dev/role": "server",
    }
    assert server["spec"]["ports"] == [{"name": "rendezvous", "port": 5000, "targetPort": 5000}]


def test_env_contract_for_a_worker() -> None:
    job = make_job(
        servers={"replicas": 2, "port": 7000},
        workers={"replicas": 3},
        training={"mode": "ssp", "staleness": 2, "config": {"batch": 64}},
    )
    env = env_of(render_pod(job, Role.WORKER, 1, attempt=4))
    training = json.loads(env.pop("PSJOB_TRAINING"))
    assert env == {
        "PSJOB_NAME": "ctr",
        "PSJOB_NAMESPACE": "ml",
        "PSJOB_ROLE": "worker",
        "PSJOB_REPLICA_INDEX": "1",
        "PSJOB_NUM_SERVERS": "2",
        "PSJOB_NUM_WORKERS": "3",
        "PSJOB_SERVER_ADDRS": (
            "ctr-server-0.ctr-server.ml.svc:7000,ctr-server-1.ctr-server.ml.svc:7000"
        ),
        "MASTER_ADDR": "ctr-server-0.ctr-server.ml.svc",
        "MASTER_PORT": "7000",
        "WORLD_SIZE": "5",
        "RANK": "3",
        "PSJOB_RESTART_COUNT": "4",
        "PSJOB_SECRET": "",  # from the job's Secret, below
        "PSJOB_PROGRESS_PORT": "9400",
    }
    (secret,) = [
        e
        for e in render_pod(job, Role.WORKER, 1)["spec"]["containers"][0]["env"]
        if e["name"] == "PSJOB_SECRET"
    ]
    assert secret["valueFrom"] == {"secretKeyRef": {"name": "ctr-psjob-auth", "key": "secret"}}
    assert training["mode"] == "ssp" and training["staleness"] == 2
    assert training["optimizer"] == {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.0,
        "weightDecay": 0.0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
    }
    assert training["config"] == {"batch": 64}
    assert training["checkpoint"] is None and training["timeoutSeconds"] == 300


def test_servers_take_the_first_ranks_and_the_default_server_command() -> None:
    job = make_job(servers={"replicas": 2})
    pod = render_pod(job, Role.SERVER, 1)
    assert env_of(pod)["RANK"] == "1"
    assert pod["spec"]["containers"][0]["command"] == ["python", "-m", "psjob_runtime", "server"]


def test_pod_identity_dns_and_restart_ownership() -> None:
    pod = render_pod(make_job(), Role.WORKER, 0)
    spec = pod["spec"]
    assert spec["hostname"] == "ctr-worker-0" and spec["subdomain"] == "ctr-worker"
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["metadata"]["labels"]["psjob.dev/replica-index"] == "0"
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "psjob.dev/v1alpha1",
            "kind": "PSJob",
            "name": "ctr",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_extended_resources_land_in_limits() -> None:
    job = make_job(
        workers={
            "resources": {
                "requests": {"cpu": "2", "nvidia.com/gpu": 1},
                "limits": {"memory": "4Gi"},
            }
        }
    )
    resources = render_pod(job, Role.WORKER, 0)["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "2", "nvidia.com/gpu": 1},
        "limits": {"memory": "4Gi", "nvidia.com/gpu": 1},
    }


def test_user_env_follows_the_contract_so_it_can_refer_to_it() -> None:
    job = make_job(
        workers={
            "env": [
                {"name": "RUN_ID", "value": "$(PSJOB_NAME)-$(RANK)"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ]
        }
    )
    env = render_pod(job, Role.WORKER, 0)["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.index("RUN_ID") > names.index("RANK")
    assert env[-1] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_the_main_container_defines_each_contract_variable_once_the_operators_way() -> None:
    """The models refuse a contract name in `env` or the template's main container, so the
    operator's definition is the only one; envFrom cannot override it (env wins over envFrom)."""
    job = make_job(
        workers={
            "env": [{"name": "FROM_SPEC", "value": "$(RANK)"}],
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "psjob",
                            "env": [{"name": "FROM_TEMPLATE", "value": "1"}],
                            "envFrom": [{"configMapRef": {"name": "settings"}}],
                        }
                    ]
                }
            },
        }
    )
    main = render_pod(job, Role.WORKER, 0)["spec"]["containers"][0]
    names = [e["name"] for e in main["env"]]
    assert sorted(n for n in names if n in CONTRACT_ENV) == sorted(CONTRACT_ENV)
    assert names[-2:] == ["FROM_SPEC", "FROM_TEMPLATE"]
    assert main["envFrom"] == [{"configMapRef": {"name": "settings"}}]


def test_template_is_merged_without_losing_fields() -> None:
    template = {
        "metadata": {"labels": {"team": "ads"}, "annotations": {"note": "x"}},
        "spec": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "serviceAccountName": "trainer",
            "volumes": [{"name": "data", "emptyDir": {}}],
            "someFutureField": {"kept": True},
            "containers": [
                {
                    "name": "psjob",
                    "securityContext": {"runAsNonRoot": True},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
        },
    }
    job = make_job(
        workers={"template": template, "volumeMounts": [{"name": "data", "mountPath": "/ckpt"}]}
    )
    pod = render_pod(job, Role.WORKER, 0)
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert spec["serviceAccountName"] == "trainer"
    assert spec["someFutureField"] == {"kept": True}
    main, sidecar = spec["containers"]
    assert main["securityContext"] == {"runAsNonRoot": True}
    assert [m["mountPath"] for m in main["volumeMounts"]] == ["/data", "/ckpt"]
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert pod["metadata"]["labels"]["team"] == "ads"
    assert pod["metadata"]["annotations"]["note"] == "x"
    # The template is not modified by rendering (it is reused for every pod).
    assert job.spec.workers.template.spec["containers"][0].get("name") == "psjob"
    assert "hostname" not in job.spec.workers.template.spec


def test_the_operator_owns_identity_fields_even_if_a_template_sets_them() -> None:
    job = make_job(
        workers={
            "template": {
                "spec": {"hostname": "x", "restartPolicy": "Always"},
                "metadata": {"labels": {"psjob.dev/role": "server"}},
            }
        }
    )
    pod = render_pod(job, Role.WORKER, 0)
    assert pod["spec"]["hostname"] == "ctr-worker-0"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["metadata"]["labels"]["psjob.dev/role"] == "worker"


def test_a_pod_recreated_in_place_is_the_original_but_for_its_incarnation() -> None:
    """The runtime takes the replacement for the same replica: same name, same environment
    (PSJOB_RESTART_COUNT too); only the psjob.dev/incarnation annotation tells them apart. A
    template cannot set that annotation on an original: the operator's alone."""
    job = make_job(
        workers={
            "replicas": 2,
            "template": {
                "metadata": {"annotations": {"psjob.dev/incarnation": "7", "team": "ads"}}
            },
        }
    )
    original = render_pod(job, Role.WORKER, 1, attempt=2)
    again = render_pod(job, Role.WORKER, 1, attempt=2, incarnation=1)
    assert "psjob.dev/incarnation" not in original["metadata"]["annotations"]
    assert again["metadata"]["annotations"]["psjob.dev/incarnation"] == "1"
    assert again["metadata"]["annotations"]["team"] == "ads"
    del again["metadata"]["annotations"]["psjob.dev/incarnation"]
    assert again == original
    assert env_of(again)["PSJOB_RESTART_COUNT"] == "2"
    # The operator reads it back from the pod, with its creation time.
    again["metadata"]["annotations"]["psjob.dev/incarnation"] = "1"
    again["metadata"]["creationTimestamp"] = "2026-01-01T00:00:05Z"
    view = pod_view(again)
    assert view is not None and view.incarnation == 1
    assert view.created is not None and view.created.isoformat() == "2026-01-01T00:00:05+00:00"
    for garbage in ("-1", "x", "99999999999", ""):
        again["metadata"]["annotations"]["psjob.dev/incarnation"] = garbage
        assert pod_view(again).incarnation == 0  # type: ignore[union-attr]


def test_scheduling_policy_reaches_every_pod() -> None:
    job = make_job(
        runPolicy={"schedulingPolicy": {"schedulerName": "volcano", "priorityClassName": "high"}}
    )
    pods = [m for m in render_all(job) if m["kind"] == "Pod"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["schedulerName"] == "volcano"
        assert pod["spec"]["priorityClassName"] == "high"


def test_psjob_render_of_the_gpu_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(ROOT / "examples/gpu-workers.yaml")]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    workers = [
        d
        for d in documents
        if d["kind"] == "Pod" and d["metadata"]["labels"]["psjob.dev/role"] == "worker"
    ]
    assert len(workers) == 4
    for pod in workers:
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PSJOB_ROLE"] == "worker"
        assert env["RANK"] == str(2 + int(env["PSJOB_REPLICA_INDEX"]))
        assert env["WORLD_SIZE"] == "6"


def test_min_available_renders_a_volcano_pod_group_and_names_it_on_each_pod() -> None:
    job = make_job(
        runPolicy={
            "schedulingPolicy": {"schedulerName": "volcano", "minAvailable": 3, "queue": "research"}
        }
    )
    manifests = render_all(job)
    (group,) = [m for m in manifests if m["kind"] == "PodGroup"]
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["spec"] == {"minMember": 3, "queue": "research"}
    assert group["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    pod = render_pod(job, Role.WORKER, 0)
    assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "ctr"


def test_min_available_without_volcano_uses_scheduler_plugins() -> None:
    job = make_job(runPolicy={"schedulingPolicy": {"minAvailable": 2}})
    (group,) = [m for m in render_all(job) if m["kind"] == "PodGroup"]
    assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert (
        render_pod(job, Role.SERVER, 0)["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"]
        == "ctr"
    )


def test_the_job_secret_is_owned_by_the_job_and_holds_the_token() -> None:
    job = make_job()
    secret = render_secret(job, "t" * 64)
    assert secret["metadata"]["name"] == "ctr-psjob-auth"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job.metadata.uid
    assert secret["stringData"] == {"secret": "t" * 64}
