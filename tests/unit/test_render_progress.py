"""The progress port in the pods the operator renders, and how the operator finds it again."""

import json
from typing import Any

import pytest
from psjob_operator.models import PSJob, Role
from psjob_operator.observe import pod_view
from psjob_operator.render import render_pod, spec_hash


def make_job(**spec: Any) -> PSJob:
    return PSJob.model_validate(
        {
            "apiVersion": "psjob.dev/v1alpha1",
            "kind": "PSJob",
            "metadata": {"name": "ctr", "namespace": "ml", "uid": "u"},
            "spec": {"image": "img", "servers": {"replicas": 2}, **spec},
        }
    )


def main_container(pod: dict[str, Any]) -> dict[str, Any]:
    main: dict[str, Any] = next(c for c in pod["spec"]["containers"] if c["name"] == "psjob")
    return main


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in main_container(pod)["env"]}


def with_main_ports(role: str, ports: list[dict[str, Any]]) -> PSJob:
    template = {"spec": {"containers": [{"name": "psjob", "ports": ports}]}}
    return make_job(**{role: {"replicas": 2, "template": template}})


RENDEZVOUS = {"name": "rendezvous", "containerPort": 23456, "protocol": "TCP"}
PROGRESS = {"name": "progress", "containerPort": 9400, "protocol": "TCP"}


@pytest.mark.parametrize("role", list(Role))
def test_every_pod_is_told_the_progress_port(role: Role) -> None:
    assert env(render_pod(make_job(), role, 1))["PSJOB_PROGRESS_PORT"] == "9400"


def test_servers_declare_the_progress_port_by_name_and_workers_declare_none() -> None:
    job = make_job()
    assert main_container(render_pod(job, Role.SERVER, 1))["ports"] == [RENDEZVOUS, PROGRESS]
    assert "ports" not in main_container(render_pod(job, Role.WORKER, 0))


def test_a_servers_own_ports_are_kept_beside_the_operators() -> None:
    metrics = {"name": "metrics", "containerPort": 8000}
    pod = render_pod(with_main_ports("servers", [metrics]), Role.SERVER, 0)
    assert main_container(pod)["ports"] == [RENDEZVOUS, PROGRESS, metrics]


@pytest.mark.parametrize(
    "clash",
    [
        {"name": "progress", "containerPort": 8000},
        {"name": "web", "containerPort": 9400},
        {"name": "web", "containerPort": 9400, "protocol": "TCP"},
        {"name": "rendezvous", "containerPort": 1234},
        {"containerPort": 23456},
    ],
)
def test_a_port_that_repeats_the_operators_name_or_number_gives_way(
    clash: dict[str, Any],
) -> None:
    """Two ports of one name in a container are refused by the API server; the operator's is
    the one the runtime listens on."""
    pod = render_pod(with_main_ports("servers", [clash]), Role.SERVER, 0)
    assert main_container(pod)["ports"] == [RENDEZVOUS, PROGRESS]


def test_the_same_number_over_udp_is_another_port() -> None:
    udp = {"name": "stats", "containerPort": 9400, "protocol": "UDP"}
    pod = render_pod(with_main_ports("servers", [udp]), Role.SERVER, 0)
    assert main_container(pod)["ports"] == [RENDEZVOUS, PROGRESS, udp]


def test_a_workers_own_ports_are_its_own() -> None:
    ports = [{"name": "progress", "containerPort": 9400}]
    pod = render_pod(with_main_ports("workers", ports), Role.WORKER, 0)
    assert main_container(pod)["ports"] == ports


def test_total_steps_is_the_operators_alone() -> None:
    """Older runtimes refuse unknown training settings, and a new total is no new spec."""
    job = make_job(training={"totalSteps": 5000})
    training = json.loads(env(render_pod(job, Role.WORKER, 0))["PSJOB_TRAINING"])
    assert "totalSteps" not in training
    assert spec_hash(job) == spec_hash(make_job())


def test_the_spec_hash_of_a_job_without_total_steps_is_what_running_pods_carry() -> None:
    """The digest the operator computed before totalSteps existed: an upgrade restarts no job."""
    job = make_job(servers={"replicas": 1}, training={"mode": "async"})
    assert spec_hash(job) == "9811d55c323235eb"


def test_the_operator_finds_server_0s_progress_port_and_ip_in_its_pod() -> None:
    pod = render_pod(make_job(), Role.SERVER, 0)
    pod["status"] = {"phase": "Running", "podIP": "10.1.2.3"}
    view = pod_view(pod)
    assert view is not None and (view.ip, view.progress_port) == ("10.1.2.3", 9400)
    other = render_pod(make_job(), Role.SERVER, 1)
    other["status"] = {"phase": "Running", "podIP": "10.1.2.4"}
    other_view = pod_view(other)
    assert other_view is not None and other_view.progress_port is None
