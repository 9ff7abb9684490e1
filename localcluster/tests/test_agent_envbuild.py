"""The node agent builds container environments as the kubelet does (no cluster needed)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client
from psjob_localcluster.agent.envbuild import ContainerConfigError, PodFacts, build_env, expand

FACTS = PodFacts(
    pod_ip="127.9.0.2", host_ip="127.0.0.1", node_allocatable={"cpu": "32", "memory": "64Gi"}
)
MAPS = {("ns", "settings"): {"mode": "sync", "lr": "0.1"}}
SECRETS = {("ns", "creds"): {"token": base64.b64encode(b"s3cret").decode()}}


def _env(container: dict[str, Any], **meta: Any) -> dict[str, str]:
    pod = client.V1Pod.from_dict(
        {
            "metadata": {"name": "job-server-0", "namespace": "ns", "uid": "u-1", **meta},
            "spec": {
                "nodeName": "node-0",
                "serviceAccountName": "trainer",
                "containers": [{"name": "main", **container}],
            },
        }
    )
    assert pod is not None and pod.spec is not None
    return build_env(
        pod,
        pod.spec.containers[0],
        FACTS,
        config_maps=lambda ns, name: MAPS.get((ns, name)),
        secrets=lambda ns, name: SECRETS.get((ns, name)),
    )


def test_values_expand_earlier_variables_and_keep_unknown_references() -> None:
    env = _env(
        {
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)-$(C)-$$(A)"},
                {"name": "C", "value": "late"},
            ]
        }
    )
    assert env == {"A": "1", "B": "1-$(C)-$(A)", "C": "late"}


def test_downward_api_fields() -> None:
    def field(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    env = _env(
        {
            "env": [
                {"name": "NAME", **field("metadata.name")},
                {"name": "NS", **field("metadata.namespace")},
                {"name": "IP", **field("status.podIP")},
                {"name": "NODE", **field("spec.nodeName")},
                {"name": "SA", **field("spec.serviceAccountName")},
                {"name": "ROLE", **field("metadata.labels['psjob.dev/role']")},
            ]
        },
        labels={"psjob.dev/role": "server"},
    )
    assert env == {
        "NAME": "job-server-0",
        "NS": "ns",
        "IP": "127.9.0.2",
        "NODE": "node-0",
        "SA": "trainer",
        "ROLE": "server",
    }


def test_resource_fields_round_up_and_default_to_node_allocatable() -> None:
    def resource(name: str, divisor: str = "1") -> dict[str, Any]:
        return {"valueFrom": {"resourceFieldRef": {"resource": name, "divisor": divisor}}}

    env = _env(
        {
            "resources": {"limits": {"cpu": "1500m"}, "requests": {"memory": "100Mi"}},
            "env": [
                {"name": "CPU", **resource("limits.cpu")},
                {"name": "MEM_REQ_MI", **resource("requests.memory", "1Mi")},
                {"name": "MEM_LIMIT_GI", **resource("limits.memory", "1Gi")},
            ],
        }
    )
    assert env == {"CPU": "2", "MEM_REQ_MI": "100", "MEM_LIMIT_GI": "64"}


def test_config_map_and_secret_references() -> None:
    env = _env(
        {
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
            ],
        }
    )
    assert env == {"CFG_mode": "sync", "CFG_lr": "0.1", "TOKEN": "s3cret"}


def test_missing_reference_is_an_error_unless_optional() -> None:
    missing = {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope"}}}
    with pytest.raises(ContainerConfigError, match='configmap "settings" key "nope" not found'):
        _env({"env": [missing]})
    missing["valueFrom"]["configMapKeyRef"]["optional"] = True  # type: ignore[index]
    assert _env({"env": [missing]}) == {}


def test_expand_escapes() -> None:
    assert expand("$$(HOME) $(X) $(Y)", {"X": "x"}) == "$(HOME) x $(Y)"
