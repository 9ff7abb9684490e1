"""The control plane is the pinned upstream release and healthy."""

from __future__ import annotations

import json

from psjob_localcluster import LocalCluster
from psjob_localcluster.tools import KUBERNETES_VERSION


def test_api_server_reports_the_pinned_release(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_readyz_is_ok(cluster: LocalCluster) -> None:
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_agent_nodes_are_ready_with_their_capacity(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == {spec.name for spec in cluster.nodes}
    for spec in cluster.nodes:
        status = by_name[spec.name]["status"]
        ready = [c for c in status["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        assert status["allocatable"] == spec.capacity
    gpus = {name: n["status"]["capacity"].get("nvidia.com/gpu") for name, n in by_name.items()}
    assert gpus == {"node-0": None, "node-1": "4"}
