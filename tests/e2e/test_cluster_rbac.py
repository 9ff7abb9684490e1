"""A pod acts as its ServiceAccount: RBAC limits what it can do."""

from __future__ import annotations

from kubernetes import client
from psjob_localcluster.objects import create
from psjob_localcluster.podspecs import python_pod
from psjob_localcluster.waiting import wait_for_pod_phase

LIST_PODS = """
import os, sys
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
config.load_config()
try:
    pods = client.CoreV1Api().list_namespaced_pod(os.environ["NS"])
except ApiException as error:
    print("refused", error.status, flush=True)
    sys.exit(7)
print("listed", len(pods.items), flush=True)
"""


def test_pod_without_rights_is_refused_and_with_rights_is_allowed(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    for account in ("nobody", "reader"):
        create(
            api_client,
            namespace,
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
        )
    create(
        api_client,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    create(
        api_client,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    for account in ("nobody", "reader"):
        pod = python_pod(account, LIST_PODS, env={"NS": namespace}, service_account=account)
        create(api_client, namespace, pod)

    refused = wait_for_pod_phase(core, namespace, "nobody", {"Succeeded", "Failed"})
    terminated = refused["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 7
    assert core.read_namespaced_pod_log("nobody", namespace).strip() == "refused 403"
    allowed = wait_for_pod_phase(core, namespace, "reader", {"Succeeded", "Failed"})
    assert allowed["status"]["phase"] == "Succeeded"
    assert core.read_namespaced_pod_log("reader", namespace).startswith("listed ")
