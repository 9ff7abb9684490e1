"""`helm install` of the chart onto the real control plane: the proof that its RBAC is enough.

The node agent runs the Deployment's operator pod like a kubelet would, as the chart's
ServiceAccount and with nothing more: the pod's only credential is a token for that account. A
PSJob that trains to Succeeded afterwards was therefore driven with exactly the chart's RBAC (the
Lease shows that the chart's pod, not some other operator, was the leader). The release namespace
enforces the Pod Security "restricted" profile, so the API server itself checks the pod's
security context. `helm upgrade` and `helm uninstall` must leave no orphans behind.

The node agent shares one network namespace between pods: each install gets a free `httpPort`,
and upgrades use the Recreate strategy so that two operator pods never bind the same port.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from psjob_localcluster import LocalCluster
from psjob_localcluster.waiting import wait_for

from tests.e2e.operator.support import ROOT, free_port, job_manifest, raw
from tests.support.namespaces import delete_namespace

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CHART = ROOT / "charts" / "psjob-operator"
RELEASE = "psjob"
FULLNAME = "psjob-operator"
ACCOUNT = FULLNAME
OPERATOR_PODS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=psjob-operator"
HelmRun = Callable[..., subprocess.CompletedProcess[str]]
Manifest = dict[str, Any]


@pytest.fixture
def helm(cluster: LocalCluster, tmp_path: Path) -> HelmRun:
    """The pinned helm, as the cluster's admin, with config and caches of its own."""
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(cluster.tools.helm), *args], capture_output=True, text=True, env=env, timeout=300
        )
        if done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
        return done

    return run


@pytest.fixture
def release_namespace(api_client: client.ApiClient) -> Iterator[str]:
    """Where the chart goes; its pods must pass the Pod Security "restricted" profile."""
    core = client.CoreV1Api(api_client)
    name = f"psjob-system-{secrets.token_hex(3)}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    yield name
    delete_namespace(core, name)


def operator_pods(api_client: client.ApiClient, namespace: str) -> list[Manifest]:
    core = client.CoreV1Api(api_client)
    pods: list[Manifest] = raw(core.list_namespaced_pod, namespace, label_selector=OPERATOR_PODS)[
        "items"
    ]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def running_operator(api_client: client.ApiClient, namespace: str) -> Manifest:
    def one_running() -> Manifest | None:
        pods = operator_pods(api_client, namespace)
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return running[0] if len(pods) == 1 and running else None

    found: Manifest = wait_for(one_running, "one running operator pod", timeout=90)
    return found


def operator_logs(cluster: LocalCluster, namespace: str) -> str:
    done = cluster.kubectl(
        "logs", "-n", namespace, "-l", OPERATOR_PODS, "--tail=60", check=False
    )  # fmt: skip
    return done.stdout + done.stderr


def can_i(cluster: LocalCluster, account_namespace: str, verb: str, what: str, ns: str) -> bool:
    done = cluster.kubectl(
        "auth", "can-i", verb, what, "-n", ns,
        f"--as=system:serviceaccount:{account_namespace}:{ACCOUNT}", check=False,
    )  # fmt: skip
    return done.stdout.strip() == "yes"


def lease_holder(api_client: client.ApiClient, namespace: str) -> str:
    leases = client.CoordinationV1Api(api_client)
    lease: Manifest = raw(leases.read_namespaced_lease, FULLNAME, namespace)
    holder: str = lease.get("spec", {}).get("holderIdentity") or ""
    return holder


def test_helm_installed_operator_trains_digits_with_only_the_charts_rbac(
    cluster: LocalCluster,
    helm: HelmRun,
    release_namespace: str,
    namespace: str,
    api_client: client.ApiClient,
) -> None:
    installed = helm(
        "install", RELEASE, str(CHART), "--namespace", release_namespace,
        "--set", f"watchNamespaces[0]={namespace}", "--set", f"httpPort={free_port()}",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    try:
        # NOTES.txt tells the user what to do next, with this release's names.
        assert f"rollout status deployment/{FULLNAME}" in installed.stdout
        assert f"kubectl -n {namespace} apply -f examples/digits.yaml" in installed.stdout
        pod = running_operator(api_client, release_namespace)
        assert pod["spec"]["serviceAccountName"] == ACCOUNT
        # The account may do its work in the watched namespace and nothing elsewhere.
        assert can_i(cluster, release_namespace, "create", "pods", namespace)
        assert can_i(cluster, release_namespace, "patch", "psjobs.psjob.dev/status", namespace)
        assert not can_i(cluster, release_namespace, "create", "pods", "default")
        assert not can_i(cluster, release_namespace, "get", "secrets", namespace)

        cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "digits.yaml"))
        waited = cluster.kubectl(
            "wait", "-n", namespace, "--for=condition=Succeeded", "psjob/digits",
            "--timeout=300s", timeout=320, check=False,
        )  # fmt: skip
        assert waited.returncode == 0, (
            f"digits did not succeed: {waited.stderr}\n"
            f"{cluster.kubectl('get', 'psjob', 'digits', '-n', namespace, '-o', 'yaml').stdout}\n"
            f"operator log:\n{operator_logs(cluster, release_namespace)}"
        )
        # The chart's pod, not another operator, held the leader Lease.
        assert lease_holder(api_client, release_namespace).startswith(pod["metadata"]["name"])
    finally:
        helm("uninstall", RELEASE, "--namespace", release_namespace, "--wait", "--timeout", "120s")


def leftovers(api_client: client.ApiClient, namespaces: list[str]) -> list[str]:
    """Every object a release could leave behind, by kind/namespace/name."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    rbac, leases = client.RbacAuthorizationV1Api(api_client), client.CoordinationV1Api(api_client)
    policy = client.PolicyV1Api(api_client)
    namespaced = {
        "Deployment": apps.list_namespaced_deployment,
        "ReplicaSet": apps.list_namespaced_replica_set,
        "Pod": core.list_namespaced_pod,
        "Service": core.list_namespaced_service,
        "ServiceAccount": core.list_namespaced_service_account,
        "ConfigMap": core.list_namespaced_config_map,
        "Secret": core.list_namespaced_secret,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
        "Lease": leases.list_namespaced_lease,
        "PodDisruptionBudget": policy.list_namespaced_pod_disruption_budget,
    }
    expected = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}
    found = [
        f"{kind}/{namespace}/{item['metadata']['name']}"
        for namespace in namespaces
        for kind, lister in namespaced.items()
        for item in raw(lister, namespace)["items"]
        if (kind, item["metadata"]["name"]) not in expected
    ]
    for kind, lister in {
        "ClusterRole": rbac.list_cluster_role,
        "ClusterRoleBinding": rbac.list_cluster_role_binding,
    }.items():
        found += [
            f"{kind}/{item['metadata']['name']}"
            for item in raw(lister)["items"]
            if item["metadata"]["name"].startswith(FULLNAME)
        ]
    return found


def test_helm_upgrade_and_uninstall_leave_no_orphans(
    cluster: LocalCluster,
    helm: HelmRun,
    release_namespace: str,
    namespace: str,
    api_client: client.ApiClient,
) -> None:
    """The default (cluster-wide) install runs a job anywhere; narrowing it and removing it
    leave nothing of the release behind."""
    port = free_port()
    # The default install: every namespace, through ClusterRoles.
    helm(
        "install", RELEASE, str(CHART), "--namespace", release_namespace,
        "--set", f"httpPort={port}", "--set", "strategy.type=Recreate",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    running_operator(api_client, release_namespace)
    assert can_i(cluster, release_namespace, "create", "pods", "default")
    # Cluster-wide RBAC at work: a small job in a namespace the chart never heard of.
    elsewhere = f"psjob-anywhere-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", elsewhere)
    try:
        cluster.kubectl(
            "apply", "-n", elsewhere, "-f", "-", input_text=yaml.safe_dump(job_manifest("quick"))
        )  # fmt: skip
        waited = cluster.kubectl(
            "wait", "-n", elsewhere, "--for=condition=Succeeded", "psjob/quick",
            "--timeout=90s", timeout=100, check=False,
        )  # fmt: skip
        assert waited.returncode == 0, operator_logs(cluster, release_namespace)
    finally:
        cluster.kubectl("delete", "namespace", elsewhere, "--wait=false")

    # Narrowed to one namespace: the ClusterRole's grants go, a Role in that namespace comes.
    helm(
        "upgrade", RELEASE, str(CHART), "--namespace", release_namespace, "--reuse-values",
        "--set", f"watchNamespaces[0]={namespace}", "--wait", "--timeout", "180s",
    )  # fmt: skip
    pod = running_operator(api_client, release_namespace)
    assert f"--namespace={namespace}" in pod["spec"]["containers"][0]["args"]
    assert not can_i(cluster, release_namespace, "create", "pods", "default")
    assert can_i(cluster, release_namespace, "create", "pods", namespace)
    wait_for(
        lambda: lease_holder(api_client, release_namespace).startswith(pod["metadata"]["name"]),
        "the upgraded operator pod to lead",
        timeout=60,
    )

    helm("uninstall", RELEASE, "--namespace", release_namespace, "--wait", "--timeout", "120s")
    remaining: list[list[str]] = [[]]

    def nothing_left() -> bool:
        remaining[0] = leftovers(api_client, [release_namespace, namespace])
        return not remaining[0]

    try:
        wait_for(nothing_left, "every object of the release to be gone", timeout=90)
    except TimeoutError:
        pytest.fail(f"helm uninstall left behind: {remaining[0]}")


def test_documented_crd_upgrade_and_gitops_jobs_pass_the_api_server(
    cluster: LocalCluster, namespace: str
) -> None:
    """docs/install.md's CRD upgrade command works, and the GitOps jobs are valid PSJobs."""
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"),
    )  # fmt: skip
    cluster.wait_established("psjobs.psjob.dev")
    built = cluster.kubectl("kustomize", str(ROOT / "examples" / "gitops" / "jobs")).stdout
    jobs = [d for d in yaml.safe_load_all(built) if d and d["kind"] == "PSJob"]
    assert jobs
    for job in jobs:
        job["metadata"]["namespace"] = namespace
    cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump_all(jobs)
    )  # fmt: skip
