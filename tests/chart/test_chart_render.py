"""The psjob-operator chart as users install it: lint, rendered manifests, values and CRD drift.

Every manifest here is rendered by the real helm (`helm template`), for the default values and for
the namespaced, high-availability and metrics variants.
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psjob_operator
import pytest
import yaml
from psjob_localcluster.tools import KUBERNETES_VERSION
from psjob_operator.crd import crd_yaml
from psjob_operator.isolation import parse_peers

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "psjob-operator"
Render = Callable[..., list[dict[str, Any]]]
HelmRun = Callable[..., subprocess.CompletedProcess[str]]

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "ha": {"replicaCount": 2},
    "metrics": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
}


def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


def kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def operator_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_is_clean(variant: str, helm: HelmRun, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[variant]))
    done = helm("lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_default_install_renders_the_operator_and_nothing_optional(render: Render) -> None:
    assert kinds(render()) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Lease",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]


def test_operator_pod_meets_the_restricted_pod_security_profile(render: Render) -> None:
    pod = only(render(), "Deployment")["spec"]["template"]["spec"]
    container = operator_container(render())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert all("hostPath" not in volume for volume in pod.get("volumes", []))
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    # With a read-only root, Python and the client still get a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_operator_container_runs_psjob_operator_with_leader_election(render: Render) -> None:
    container = operator_container(render())
    assert container["command"] == ["psjob", "operator"]
    assert container["args"] == [
        "--http-port=8080",
        "--leader-election-namespace=psjob-system",
        "--leader-election-id=psjob-operator",
        "--log-format=json",
        "--pod-policy=unrestricted",
        "--network-policy=on",
        '--network-policy-peers=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name"'
        ':"psjob-system"}},"podSelector":{"matchLabels":{"app.kubernetes.io/instance":"psjob",'
        '"app.kubernetes.io/name":"psjob-operator"}}}]',
    ]
    assert container["image"] == f"ghcr.io/psjob/operator:{psjob_operator.__version__}"
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in container["env"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_the_leader_lease_belongs_to_the_release_and_is_the_one_the_operator_uses(
    render: Render,
) -> None:
    manifests = render()
    lease = only(manifests, "Lease")
    assert lease["metadata"]["namespace"] == "psjob-system"
    assert (
        f"--leader-election-id={lease['metadata']['name']}" in operator_container(manifests)["args"]
    )
    (limited, _) = only([m for m in manifests if m["kind"] == "Role"], "Role")["rules"]
    assert limited["resourceNames"] == [lease["metadata"]["name"]]
    assert limited["verbs"] == ["get", "update"]


def test_probes_hit_the_health_endpoint_on_the_served_port(render: Render) -> None:
    container = operator_container(render({"httpPort": 9090}))
    assert "--http-port=9090" in container["args"]
    assert container["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_the_pod_runs_as_the_charts_service_account(render: Render) -> None:
    manifests = render()
    account = only(manifests, "ServiceAccount")["metadata"]["name"]
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account == "psjob-operator"
    for binding in (m for m in manifests if m["kind"].endswith("Binding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "psjob-system"}
        ]


def test_an_existing_service_account_is_used_as_is(render: Render) -> None:
    manifests = render({"serviceAccount": {"create": False, "name": "platform-sa"}})
    assert "ServiceAccount" not in kinds(manifests)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-sa"


def test_namespaced_variant_passes_each_namespace_to_the_operator(render: Render) -> None:
    args = operator_container(render(VARIANTS["namespaced"]))["args"]
    assert args[-2:] == ["--namespace=team-a", "--namespace=team-b"]


def test_pod_policy_restricted_reaches_the_operator(render: Render) -> None:
    """The chart's way to keep the operator from creating host-level pods (docs/security.md)."""
    args = operator_container(render({"podPolicy": "restricted"}))["args"]
    assert "--pod-policy=restricted" in args
    assert "--pod-policy=unrestricted" not in args


def test_kueue_support_reaches_the_operator_only_when_enabled(render: Render) -> None:
    """Without --kueue the operator ignores queue labels (docs/kueue.md); the chart passes it."""
    assert "--kueue" in operator_container(render({"kueue": {"enabled": True}}))["args"]
    assert "--kueue" not in operator_container(render({}))["args"]


def test_ha_variant_runs_two_spread_replicas_with_a_disruption_budget(render: Render) -> None:
    manifests = render(VARIANTS["ha"])
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = only(manifests, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_metrics_service_and_service_monitor_reach_the_operator_port(render: Render) -> None:
    manifests = render(VARIANTS["metrics"])
    pod_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(manifests, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in operator_container(manifests)["ports"]}
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"


def test_metrics_service_can_be_turned_off(render: Render) -> None:
    assert "Service" not in kinds(render({"metrics": {"service": {"enabled": False}}}))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"image": {"pullpolicy": "Always"}}, "additional properties 'pullpolicy' not allowed"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"podPolicy": "strict"}, "/podPolicy"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "set metrics.service.enabled=true",
        ),
        ({"metrics": {"podMonitor": {"interval": "often"}}}, "/metrics/podMonitor/interval"),
        ({"metrics": {"podMonitor": {"enable": True}}}, "additional properties 'enable'"),
        (
            {"metrics": {"grafanaDashboard": {"namespace": "Grafana"}}},
            "/grafanaDashboard/namespace",
        ),
        ({"metrics": {"grafanaDashboard": {"labels": {"folder": 1}}}}, "/grafanaDashboard/labels"),
    ],
    ids=["unknown-key", "misspelt-nested-key", "wrong-type", "bad-enum", "bad-pod-policy",
         "bad-namespace", "missing-account-name", "monitor-without-service",
         "bad-pod-monitor-interval", "misspelt-pod-monitor-key", "bad-dashboard-namespace",
         "non-string-dashboard-label"],
)  # fmt: skip
def test_bad_values_fail_naming_the_key(
    values: dict[str, Any], message: str, helm: HelmRun, tmp_path: Path
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = helm(
        "template", "psjob", str(CHART), "--kube-version", KUBERNETES_VERSION,
        "--values", str(values_file), check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_chart_crd_is_the_generated_crd() -> None:
    chart_crd = (CHART / "crds" / "psjob.dev_psjobs.yaml").read_text()
    assert chart_crd == crd_yaml(), (
        "charts/psjob-operator/crds/ is stale: run `make crds` and "
        "`cp crds/psjob.dev_psjobs.yaml charts/psjob-operator/crds/`"
    )


def test_chart_app_version_is_the_operator_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == psjob_operator.__version__


def declared_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """Dotted path -> whether it is a group of keys (has declared properties of its own)."""
    paths: dict[str, bool] = {}
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        paths[path] = "properties" in node
        paths.update(declared_paths(node, f"{path}."))
    return paths


def values_lines() -> list[tuple[str, bool]]:
    """(dotted path, has a comment directly above) for every key line of values.yaml."""
    found: list[tuple[str, bool]] = []
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "-")) and ":" in stripped:
            indent = len(line) - len(line.lstrip())
            while stack and stack[-1][0] >= indent:
                stack.pop()
            key = stripped.split(":", 1)[0]
            stack.append((indent, key))
            found.append((".".join(k for _, k in stack), previous.startswith("#")))
        if stripped:
            previous = stripped
    return found


def test_every_value_is_in_the_schema_and_commented_in_values_yaml() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    declared = declared_paths(schema)
    lines = dict(values_lines())
    undocumented = [
        path for path, is_group in declared.items()
        if path in lines and not is_group and not lines[path]
    ]  # fmt: skip
    assert not undocumented, f"values.yaml keys without a comment above them: {undocumented}"
    missing = [p for p in declared if p != "global" and p not in lines]
    assert not missing, f"keys in values.schema.json but not in values.yaml: {missing}"


def test_network_policy_values_reach_the_operator_as_flags_it_accepts(render: Render) -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    args = operator_container(render({"networkPolicy": {"metricsFrom": [monitoring]}}))["args"]
    (flag,) = [arg for arg in args if arg.startswith("--network-policy-peers=")]
    operator, scraper = parse_peers(flag.split("=", 1)[1])
    assert scraper == monitoring
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "psjob-operator"
    off = operator_container(render({"networkPolicy": {"enabled": False}}))["args"]
    assert "--network-policy=off" in off
    assert not [arg for arg in off if arg.startswith("--network-policy-peers")]
