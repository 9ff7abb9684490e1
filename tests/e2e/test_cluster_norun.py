"""No-run mode: the agent marks bound pods Running without starting processes (for scale
benchmarks of controllers), and releases deleted ones at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from psjob_localcluster import NodeSpec, local_cluster
from psjob_localcluster.objects import create, to_dict
from psjob_localcluster.waiting import wait_for

pytestmark = pytest.mark.cluster
REPLICAS = 40


def test_no_run_agent_runs_many_pods_without_processes(tmp_path: Path) -> None:
    nodes = [NodeSpec.parse("big-0:pods=1000"), NodeSpec.parse("big-1:pods=1000")]
    with local_cluster(tmp_path, nodes, no_run=True) as cluster:
        api = cluster.api_client()
        core = client.CoreV1Api(api)
        create(
            api,
            "default",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "many"},
                "spec": {
                    "replicas": REPLICAS,
                    "selector": {"matchLabels": {"app": "many"}},
                    "template": {
                        "metadata": {"labels": {"app": "many"}},
                        "spec": {
                            "containers": [
                                {"name": "main", "image": "unused", "command": ["false"]}
                            ]
                        },
                    },
                },
            },
        )

        def pods() -> list[dict[str, Any]]:
            return list(to_dict(core.list_namespaced_pod("default"))["items"])

        def all_running() -> list[dict[str, Any]] | None:
            running = [p for p in pods() if p["status"].get("phase") == "Running"]
            return running if len(running) == REPLICAS else None

        running = wait_for(all_running, f"{REPLICAS} Running pods", timeout=90)
        assert len({p["status"]["podIP"] for p in running}) == REPLICAS
        assert {p["spec"]["nodeName"] for p in running} <= {"big-0", "big-1"}
        for pod in running:  # `false` would have exited 1: nothing ran
            status = pod["status"]["containerStatuses"][0]
            assert status["containerID"].startswith("no-run://")
            assert "running" in status["state"]
        client.AppsV1Api(api).delete_namespaced_deployment("many", "default")
        wait_for(lambda: not pods(), "the pods to be deleted", timeout=60)
