"""The chart's RBAC: every verb it grants has a written reason, and nothing more is granted.

Adding a verb to the chart without adding its reason here fails; so does a reason here whose
verb the chart no longer grants. Whether the rules are *enough* is proven elsewhere: the
operator pod runs with exactly this ServiceAccount on a real control plane
(tests/e2e/test_helm_install.py).
"""

from collections.abc import Callable
from typing import Any

import pytest

Render = Callable[..., list[dict[str, Any]]]
Grant = tuple[str, str, str, str]
"""(where, apiGroup, resource, verb); where is jobs (every watched namespace), cluster or lease."""

JOBS, CLUSTER, LEASE = "jobs", "cluster", "lease"

REASONS: dict[Grant, str] = {
    (JOBS, "psjob.dev", "psjobs", "get"): "re-read a job before acting on it",
    (JOBS, "psjob.dev", "psjobs", "list"): "kopf lists PSJobs when its watch starts",
    (JOBS, "psjob.dev", "psjobs", "watch"): "PSJob changes drive reconciliation",
    (JOBS, "psjob.dev", "psjobs", "patch"): "kopf's own marks (annotations) on handled objects",
    (JOBS, "psjob.dev", "psjobs", "update"): "kopf's own marks (finalizers) on handled objects",
    (JOBS, "psjob.dev", "psjobs", "delete"): "ttlSecondsAfterFinished deletes a finished job",
    (JOBS, "psjob.dev", "psjobs/status", "get"): "read the status subresource",
    (JOBS, "psjob.dev", "psjobs/status", "patch"): "write phase, conditions, replica counts",
    (JOBS, "psjob.dev", "psjobs/status", "update"): "whole-status writes",
    (JOBS, "", "pods", "get"): "read a single pod of a job",
    (JOBS, "", "pods", "list"): "the kopf pod index starts from a list",
    (JOBS, "", "pods", "watch"): "pod phases and exit codes come from the watch stream",
    (JOBS, "", "pods", "create"): "server and worker pods",
    (JOBS, "", "pods", "delete"): "restarts, suspension, stopping servers after success",
    (JOBS, "", "services", "get"): "read a job's headless service",
    (JOBS, "", "services", "list"): "find a job's services",
    (JOBS, "", "services", "watch"): "notice a headless service someone deleted",
    (JOBS, "", "services", "create"): "one headless service per role for stable DNS names",
    (JOBS, "", "services", "delete"): "remove a job's services",
    (JOBS, "", "secrets", "create"): "each job's authentication Secret (never read back)",
    (JOBS, "", "events", "create"): "Events on PSJobs for `kubectl describe`",
    (JOBS, "", "events", "patch"): "repeated Events are counted by patching them",
    (JOBS, "events.k8s.io", "events", "create"): "Events through the events.k8s.io API",
    (JOBS, "events.k8s.io", "events", "patch"): "repeated events.k8s.io Events",
    (JOBS, "scheduling.volcano.sh", "podgroups", "get"): "gang scheduling with Volcano",
    (JOBS, "scheduling.volcano.sh", "podgroups", "create"): "one PodGroup per job",
    (JOBS, "scheduling.volcano.sh", "podgroups", "delete"): "the PodGroup goes with the job",
    (JOBS, "scheduling.x-k8s.io", "podgroups", "get"): "gang scheduling, scheduler-plugins",
    (JOBS, "scheduling.x-k8s.io", "podgroups", "create"): "one PodGroup per job",
    (JOBS, "scheduling.x-k8s.io", "podgroups", "delete"): "the PodGroup goes with the job",
    (CLUSTER, "apiextensions.k8s.io", "customresourcedefinitions", "get"): (
        "tell whether a PodGroup CRD is installed"
    ),
    (CLUSTER, "apiextensions.k8s.io", "customresourcedefinitions", "list"): (
        "kopf's resource observer lists CRDs"
    ),
    (CLUSTER, "apiextensions.k8s.io", "customresourcedefinitions", "watch"): (
        "kopf notices CRDs installed after it started"
    ),
    (CLUSTER, "", "namespaces", "list"): "kopf lists namespaces at start, even for exact names",
    (CLUSTER, "", "namespaces", "watch"): "kopf follows namespaces created or deleted later",
    (LEASE, "coordination.k8s.io", "leases", "get"): "read who leads",
    (LEASE, "coordination.k8s.io", "leases", "create"): "the first replica creates the Lease",
    (LEASE, "coordination.k8s.io", "leases", "update"): "renew or take over the Lease",
}

KUEUE_REASONS: dict[Grant, str] = {
    (JOBS, "kueue.x-k8s.io", "workloads", "get"): "find a queued job's Workload",
    (JOBS, "kueue.x-k8s.io", "workloads", "list"): "the Workload watch starts from a list",
    (JOBS, "kueue.x-k8s.io", "workloads", "watch"): "Kueue's admissions and evictions",
    (JOBS, "kueue.x-k8s.io", "workloads", "create"): "one Workload per queued job",
    (JOBS, "kueue.x-k8s.io", "workloads/status", "patch"): (
        "release an evicted job's quota; mark a finished job's Workload Finished"
    ),
    (CLUSTER, "kueue.x-k8s.io", "resourceflavors", "get"): "node labels and tolerations of "
    "the flavors Kueue assigned",
    (CLUSTER, "kueue.x-k8s.io", "workloadpriorityclasses", "get"): "a queued job's priority",
}
"""Granted only with kueue.enabled."""
KUEUE = {"kueue": {"enabled": True}}

NETWORK_POLICY_REASONS: dict[Grant, str] = {
    (JOBS, "networking.k8s.io", "networkpolicies", "create"): (
        "each job's NetworkPolicy (never read back: the garbage collector deletes it)"
    ),
}
"""Granted unless networkPolicy.enabled is false."""
NO_NETWORK_POLICY = {"networkPolicy": {"enabled": False}}

NEVER_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}
NEVER_RESOURCES = {"*", "configmaps", "nodes", "pods/exec", "serviceaccounts/token"}
READ_VERBS = {"get", "list", "watch"}
NEVER_READ = {"secrets"}
"""The operator writes each job's Secret but may never read any Secret: not even its own."""
WATCHED = ["team-a", "team-b"]


def rules_of(manifests: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], list[Any]]:
    """(namespace, name) -> rules of every Role or ClusterRole rendered."""
    return {
        (m["metadata"].get("namespace", ""), m["metadata"]["name"]): m["rules"]
        for m in manifests
        if m["kind"] == kind
    }


def grants(rules: list[dict[str, Any]], where: str) -> set[Grant]:
    return {
        (where, group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def classify(manifests: list[dict[str, Any]]) -> dict[str, set[Grant]]:
    """Grants by the Role or ClusterRole that carries them."""
    found: dict[str, set[Grant]] = {}
    for (_, name), rules in rules_of(manifests, "ClusterRole").items():
        where = CLUSTER if name.endswith("-discovery") else JOBS
        found[f"ClusterRole/{name}"] = grants(rules, where)
    for (namespace, name), rules in rules_of(manifests, "Role").items():
        where = LEASE if name.endswith("-leader-election") else JOBS
        found[f"Role/{namespace}/{name}"] = grants(rules, where)
    return found


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watchNamespaces": WATCHED},
        KUEUE,
        {"watchNamespaces": WATCHED, **KUEUE},
        NO_NETWORK_POLICY,
    ],
    ids=["cluster", "namespaced", "cluster-kueue", "namespaced-kueue", "no-network-policy"],
)
def test_every_granted_verb_has_a_reason(render: Render, values: dict[str, Any]) -> None:
    """Kueue's rights only when kueue.enabled; NetworkPolicies' unless networkPolicy is off."""
    reasons = REASONS | (KUEUE_REASONS if "kueue" in values else {})
    if "networkPolicy" not in values:
        reasons |= NETWORK_POLICY_REASONS
    granted = set().union(*classify(render(values)).values())
    unexplained = sorted(granted - set(reasons))
    assert not unexplained, f"verbs granted without a reason in {__file__}: {unexplained}"
    unused = sorted(set(reasons) - granted)
    assert not unused, f"reasons for verbs the chart no longer grants: {unused}"


@pytest.mark.parametrize(
    "values", [{}, {"watchNamespaces": WATCHED}, KUEUE], ids=["cluster", "namespaced", "kueue"]
)
def test_nothing_dangerous_is_granted(render: Render, values: dict[str, Any]) -> None:
    for role, granted in classify(render(values)).items():
        for _, _, resource, verb in granted:
            assert verb not in NEVER_VERBS, f"{role} grants {verb}"
            assert resource not in NEVER_RESOURCES, f"{role} grants access to {resource}"
            assert not (resource in NEVER_READ and verb in READ_VERBS), f"{role} reads {resource}"


def test_by_default_jobs_are_managed_in_every_namespace_through_a_cluster_role(
    render: Render,
) -> None:
    roles = classify(render())
    cluster_job_roles = [name for name, g in roles.items() if name.startswith("ClusterRole/")
                         and any(where == JOBS for where, *_ in g)]  # fmt: skip
    assert cluster_job_roles == ["ClusterRole/psjob-operator"]
    namespaced_job_roles = [name for name, g in roles.items() if name.startswith("Role/")
                            and any(where == JOBS for where, *_ in g)]  # fmt: skip
    assert namespaced_job_roles == []


def test_watch_namespaces_confine_the_job_rules_to_roles_in_those_namespaces(
    render: Render,
) -> None:
    manifests = render({"watchNamespaces": WATCHED})
    roles = classify(manifests)
    assert not any(
        where == JOBS for name, g in roles.items() if name.startswith("ClusterRole/")
        for where, *_ in g
    ), "with watchNamespaces set, no ClusterRole may grant access to pods or PSJobs"  # fmt: skip
    job_roles = sorted(name for name, g in roles.items() if any(w == JOBS for w, *_ in g))
    assert job_roles == [f"Role/{ns}/psjob-operator" for ns in WATCHED]
    bindings = [m for m in manifests if m["kind"] == "RoleBinding"]
    bound = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings}
    assert {(ns, "psjob-operator") for ns in WATCHED} <= bound
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "psjob-operator",
            "namespace": "psjob-system",
        }


def test_the_leader_lease_is_granted_only_in_the_release_namespace(render: Render) -> None:
    lease_roles = [name for name, g in classify(render()).items() if any(w == LEASE for w, *_ in g)]
    assert lease_roles == ["Role/psjob-system/psjob-operator-leader-election"]


def test_rbac_create_false_renders_no_rbac(render: Render) -> None:
    kinds = {m["kind"] for m in render({"rbac": {"create": False}})}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
