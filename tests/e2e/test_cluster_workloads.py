"""kube-controller-manager drives workloads on the agent's nodes: Deployments, garbage
collection, namespace deletion."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psjob_localcluster.objects import create, to_dict
from psjob_localcluster.waiting import wait_for

SLEEPER = {
    "name": "main",
    "image": "python:3.11-slim",
    "command": ["python", "-c", "import time; time.sleep(600)"],
}


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [SLEEPER]},
            },
        },
    }


def test_deployment_pods_run_and_are_garbage_collected(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    create(api_client, namespace, _deployment("web", 2))

    def pods() -> list[dict[str, Any]]:
        listing = to_dict(core.list_namespaced_pod(namespace, label_selector="app=web"))
        return list(listing["items"])

    def two_running() -> list[dict[str, Any]] | None:
        running = [p for p in pods() if p["status"].get("phase") == "Running"]
        return running if len(running) == 2 else None

    running = wait_for(two_running, "2 running pods of the Deployment", timeout=60)
    assert len({p["status"]["podIP"] for p in running}) == 2

    def ready_replicas() -> bool:
        status = to_dict(apps.read_namespaced_deployment("web", namespace)).get("status", {})
        return bool(status.get("readyReplicas") == 2)

    wait_for(ready_replicas, "the Deployment to count 2 ready replicas")
    apps.delete_namespaced_deployment("web", namespace)
    wait_for(lambda: not pods(), "the garbage collector to delete the pods", timeout=60)


def test_namespace_deletion_completes(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    name = "doomed-namespace"
    create(
        api_client, "default", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    wait_for(
        lambda: to_dict(core.list_namespaced_service_account(name))["items"],
        "the namespace's default ServiceAccount",
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "resident"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [SLEEPER]},
    }
    create(api_client, name, pod)
    wait_for(
        lambda: (
            to_dict(core.read_namespaced_pod("resident", name))["status"].get("phase") == "Running"
        ),
        "the pod to run",
    )
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, f"namespace {name} to be deleted", timeout=90)
