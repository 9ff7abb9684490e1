"""The chart's opt-in PodMonitor and Grafana dashboard, judged against what the code exports.

The PodMonitor is checked against a server pod rendered by the operator's own `render_pod`, and
every metric a dashboard query names against the names the runtime really writes (its
`metrics.render`, fed a reading with every field set) and the operator really registers (its
prometheus_client registry), so a renamed metric fails here instead of leaving an empty panel.
"""

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase
from psjob_operator import contract
from psjob_operator import metrics as operator_metrics
from psjob_operator.models import PSJob, Role
from psjob_operator.render import render_pod
from psjob_runtime import metrics as runtime_metrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "psjob-operator"
DASHBOARD_FILE = CHART / "dashboards" / "psjob.json"
Render = Callable[..., list[dict[str, Any]]]
HelmRun = Callable[..., subprocess.CompletedProcess[str]]

MONITORING = {"podMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
METRIC_NAME = re.compile(r"\bpsjob_[a-z_]+\b")
LABEL_VALUES = re.compile(
    r"^label_values\((?P<metric>psjob_[a-z_]+)(\{[^}]*\})?,\s*(?P<label>\w+)\)$"
)


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def only(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(manifests, kind)
    return found


def rendered_pod(role: Role) -> dict[str, Any]:
    """Pod 0 of the role in a job of 2 servers and 2 workers, exactly as the operator creates it."""
    job = PSJob.model_validate(
        {
            "apiVersion": contract.API_VERSION,
            "kind": contract.KIND,
            "metadata": {"name": "digits", "namespace": "team-a", "uid": "u1"},
            "spec": {
                "image": "ghcr.io/psjob/runtime:0.1.0",
                "servers": {"replicas": 2},
                "workers": {"replicas": 2},
            },
        }
    )
    pod: dict[str, Any] = render_pod(job, role, 0)
    return pod


def server_pod() -> dict[str, Any]:
    return rendered_pod(Role.SERVER)


def runtime_exposition() -> str:
    """Server 0's /metrics text with every optional number present (ssp, a checkpoint written)."""
    reading = runtime_metrics.ServerReading(
        updates=12,
        received_bytes=4096,
        sent_bytes=8192,
        table_rows=100,
        table_bytes=6400,
        checkpoint_seconds=0.25,
        staleness=1,
        max_staleness=3,
    )
    progress = {"step": 40, "samplesPerSecond": 512.0, "loss": 0.7, "workersReporting": 2}
    labels = {"job": "digits", "namespace": "team-a", "role": "server", "index": "0"}
    return runtime_metrics.render(labels, reading, progress)


def runtime_series() -> dict[str, set[str]]:
    """Sample name -> its label names, from the runtime's own text."""
    series: dict[str, set[str]] = {}
    for line in runtime_exposition().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} \S+$", line)
        assert match, f"not a sample line: {line!r}"
        names = {pair.split("=", 1)[0] for pair in match["labels"].split(",")}
        series.setdefault(match["name"], set()).update(names)
    return series


SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def operator_series() -> dict[str, set[str]]:
    """Sample name -> its label names, for every sample the operator's /metrics can carry.

    Families with labels have no samples until a job sets them, so the names come from each
    registered family's type, as prometheus_client writes them (a counter `x` is served as
    `x_total`), and the label names from the metric objects of the module.
    """
    label_names = {
        metric._name: set(metric._labelnames)
        for metric in vars(operator_metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }
    series: dict[str, set[str]] = {}
    for family in operator_metrics.REGISTRY.collect():
        for suffix in SAMPLE_SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            series[f"{family.name}{suffix}"] = label_names[family.name] | extra
    return series


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def panel_expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows' nested panels included."""
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in board["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


# --- Rendering on and off -------------------------------------------------------------------


def test_neither_is_rendered_by_default(render: Render) -> None:
    manifests = render()
    assert not of_kind(manifests, "PodMonitor")
    assert not of_kind(manifests, "ConfigMap")


def test_each_is_rendered_only_when_enabled(render: Render) -> None:
    pod_monitor_only = render({"metrics": {"podMonitor": {"enabled": True}}})
    assert len(of_kind(pod_monitor_only, "PodMonitor")) == 1
    assert not of_kind(pod_monitor_only, "ConfigMap")
    dashboard_only = render({"metrics": {"grafanaDashboard": {"enabled": True}}})
    assert len(of_kind(dashboard_only, "ConfigMap")) == 1
    assert not of_kind(dashboard_only, "PodMonitor")


def test_helm_lint_is_clean_with_both_enabled(helm: HelmRun, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"metrics": MONITORING, "watchNamespaces": ["team-a"]}))
    done = helm("lint", "--strict", str(CHART), "--values", str(values))
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


# --- The PodMonitor against the pods the operator creates ------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels is evaluated here"
    return bool(selector["matchLabels"].items() <= labels.items())


def test_pod_monitor_selects_the_operators_server_pods_and_no_worker(render: Render) -> None:
    monitor = only(render({"metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "psjob-system"
    selector = monitor["spec"]["selector"]
    assert selects(selector, server_pod()["metadata"]["labels"])
    assert not selects(selector, rendered_pod(Role.WORKER)["metadata"]["labels"])


def test_pod_monitor_scrapes_the_servers_named_metrics_port(render: Render) -> None:
    monitor = only(render({"metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = [
        c for c in server_pod()["spec"]["containers"] if c["name"] == contract.MAIN_CONTAINER
    ]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["port"] == contract.PROGRESS_PORT_NAME
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "30s"


def test_pod_monitor_takes_job_and_namespace_from_the_pod_not_from_the_scrape(
    render: Render,
) -> None:
    """Prometheus keeps its target's `job` and `namespace` and renames the runtime's to
    exported_*; the target's job comes from the operator's pod label, so a job's pods cannot
    pass their numbers off as another job's. The renamed copies go, and `role` and `index`
    (no target label of that name) stay the runtime's: no relabelling duplicates them."""
    monitor = only(render({"metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor")
    spec = monitor["spec"]
    assert spec["jobLabel"] == contract.LABEL_JOB_NAME
    assert spec["jobLabel"] in server_pod()["metadata"]["labels"]
    (endpoint,) = spec["podMetricsEndpoints"]
    assert not endpoint.get("honorLabels")
    assert endpoint["metricRelabelings"] == [
        {"action": "labeldrop", "regex": "exported_(job|namespace)"}
    ]
    assert "relabelings" not in endpoint and "podTargetLabels" not in spec
    assert {"job", "namespace", "role", "index"} <= runtime_series()["psjob_server_updates_total"]


def test_pod_monitor_looks_where_the_operator_watches(render: Render) -> None:
    everywhere = only(render({"metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor")
    assert everywhere["spec"]["namespaceSelector"] == {"any": True}
    namespaced = only(
        render(
            {
                "watchNamespaces": ["team-a", "team-b"],
                "metrics": {"podMonitor": {"enabled": True}},
            }
        ),
        "PodMonitor",
    )
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_pod_monitor_interval_and_labels_are_the_users(render: Render) -> None:
    monitor = only(
        render(
            {
                "metrics": {
                    "podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "p"}}
                }
            }
        ),
        "PodMonitor",
    )
    assert monitor["metadata"]["labels"]["release"] == "p"
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"


def test_service_monitor_keeps_the_operators_per_job_labels(render: Render) -> None:
    """psjob_job_step{namespace, job} names the PSJob, not the operator's Service."""
    monitor = only(render({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


# --- The dashboard ConfigMap ------------------------------------------------------------------


def test_dashboard_config_map_holds_the_dashboard_for_the_sidecar(render: Render) -> None:
    config_map = only(render({"metrics": {"grafanaDashboard": {"enabled": True}}}), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "psjob-system"
    (content,) = config_map["data"].values()
    assert json.loads(content) == dashboard()
    assert len(content.encode()) < 1_000_000, "a ConfigMap holds at most 1 MiB"


def test_dashboard_labels_annotations_and_namespace_are_the_users(render: Render) -> None:
    config_map = only(
        render(
            {
                "metrics": {
                    "grafanaDashboard": {
                        "enabled": True,
                        "namespace": "monitoring",
                        "labels": {"grafana_dashboard": None, "dashboards": "psjob"},
                        "annotations": {"grafana_folder": "Training"},
                    }
                }
            }
        ),
        "ConfigMap",
    )
    metadata = config_map["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["dashboards"] == "psjob"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "Training"}


# --- The dashboard's queries against the names the code exports ------------------------------


def test_the_runtime_text_carries_every_documented_name() -> None:
    """The fixture reading leaves no number out: every server and job metric is in the text."""
    text = (ROOT / "docs" / "runtime.md").read_text()
    documented = set(re.findall(r"`(psjob_(?:server|job)_[a-z_]+)`", text))
    assert documented and documented <= set(runtime_series())


def test_every_metric_a_panel_queries_is_exported() -> None:
    exported = set(runtime_series()) | set(operator_series())
    unknown = [
        (title, name)
        for title, expr in panel_expressions(dashboard())
        for name in METRIC_NAME.findall(expr)
        if name not in exported
    ]
    assert not unknown, f"panels query metrics nobody exports: {unknown}"


def test_every_panel_has_a_query_and_the_issues_panels_are_there() -> None:
    board = dashboard()
    queried = {name for _, expr in panel_expressions(board) for name in METRIC_NAME.findall(expr)}
    assert {
        "psjob_jobs",
        "psjob_job_restarts_total",
        "psjob_job_samples_per_second",
        "psjob_job_loss",
        "psjob_job_step",
        "psjob_server_updates_total",
        "psjob_server_received_bytes_total",
        "psjob_server_sent_bytes_total",
        "psjob_server_checkpoint_duration_seconds",
    } <= queried
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == "${datasource}"


def test_panels_filter_only_by_labels_their_metric_carries() -> None:
    """A selector on a label the series lacks matches nothing (or, with .*, hides nothing)."""
    runtime, operator = runtime_series(), operator_series()
    for title, expr in panel_expressions(dashboard()):
        for name, selector in re.findall(r"\b(psjob_[a-z_]+)\{([^}]*)\}", expr):
            used = set(re.findall(r"(\w+)\s*=~?", selector))
            carried = runtime.get(name, set()) | operator.get(name, set())
            assert used <= carried, f"{title!r}: {name} has no label {used - carried}"


def test_variables_query_labels_that_the_exported_series_carry() -> None:
    board_variables = variables(dashboard())
    assert board_variables["datasource"]["type"] == "datasource"
    assert board_variables["datasource"]["query"] == "prometheus"
    runtime, operator = runtime_series(), operator_series()
    for name in ("namespace", "job"):
        variable = board_variables[name]
        assert variable["datasource"]["uid"] == "${datasource}"
        match = LABEL_VALUES.match(variable_query(variable))
        assert match, f"${name}: not a label_values query: {variable_query(variable)!r}"
        metric, label = match["metric"], match["label"]
        assert label == name
        assert label in runtime[metric], f"the runtime's {metric} has no label {label}"
        assert label in operator[metric], f"the operator's {metric} has no label {label}"
