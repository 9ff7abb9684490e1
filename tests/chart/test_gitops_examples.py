"""examples/gitops: the Argo CD and Flux manifests point at real paths, with values the chart takes.

The chart is rendered by the real helm with the values each GitOps manifest carries, and the jobs
folder is built by the pinned kubectl's kustomize; every PSJob in it passes `psjob validate`'s
models. (That the API server accepts them too is checked on the real control plane in
tests/e2e/test_helm_install.py.)
"""

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from psjob_localcluster.tools import default_tools
from psjob_operator.validation import load_psjobs

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
Render = Callable[..., list[dict[str, Any]]]


def load(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((GITOPS / relative).read_text())
    return document


def test_every_gitops_file_is_yaml_with_a_kind() -> None:
    files = sorted(GITOPS.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["kind"], path


def test_argocd_application_installs_the_chart_with_values_it_accepts(render: Render) -> None:
    app = load("argocd/psjob-operator-application.yaml")
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    manifests = render(source["helm"]["valuesObject"])
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == source["helm"]["valuesObject"]["replicaCount"]
    assert app["spec"]["destination"]["namespace"] == "psjob-system"


def test_flux_helmrelease_installs_the_chart_and_upgrades_its_crd(render: Render) -> None:
    release = load("flux/psjob-operator-helmrelease.yaml")
    chart = release["spec"]["chart"]["spec"]
    assert (ROOT / chart["chart"] / "Chart.yaml").is_file()
    source = load("flux/psjob-source.yaml")
    assert (chart["sourceRef"]["kind"], chart["sourceRef"]["name"]) == ("GitRepository", "psjob")
    assert source["metadata"]["name"] == "psjob"
    assert release["spec"]["upgrade"]["crds"] == "CreateReplace"
    manifests = render(release["spec"]["values"])
    assert any(m["kind"] == "PodDisruptionBudget" for m in manifests)


def test_jobs_are_shipped_from_the_same_folder_by_argocd_and_flux() -> None:
    argocd = load("argocd/psjob-jobs-application.yaml")["spec"]
    flux = load("flux/psjob-jobs-kustomization.yaml")["spec"]
    assert argocd["source"]["path"] == flux["path"].removeprefix("./") == "examples/gitops/jobs"
    assert argocd["destination"]["namespace"] == flux["targetNamespace"] == "ml-jobs"
    assert flux["wait"] is True


@pytest.fixture(scope="module")
def built_jobs() -> list[dict[str, Any]]:
    kubectl = default_tools().kubectl
    if not kubectl.exists():
        pytest.skip(f"kubectl is not built yet ({kubectl}): run `make cluster-tools` once")
    done = subprocess.run(
        [str(kubectl), "kustomize", str(GITOPS / "jobs")],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_jobs_kustomization_builds_valid_psjobs_in_their_namespace(
    built_jobs: list[dict[str, Any]],
) -> None:
    psjobs = [d for d in built_jobs if d["kind"] == "PSJob"]
    assert [j["metadata"]["name"] for j in psjobs] == ["digits"]
    assert all(j["metadata"]["namespace"] == "ml-jobs" for j in psjobs)
    (job,) = load_psjobs(yaml.safe_dump_all(psjobs), "examples/gitops/jobs")
    assert job.spec.workers.replicas == 2


def test_docs_show_the_tested_health_check() -> None:
    lua = (GITOPS / "argocd" / "psjob-health.lua").read_text()
    indented = "".join(f"   {line}" if line.strip() else line for line in lua.splitlines(True))
    assert indented in (ROOT / "docs" / "gitops.md").read_text(), "docs/gitops.md: copy it over"
    chart_readme = (ROOT / "charts" / "psjob-operator" / "README.md").read_text()
    assert f"```lua\n{lua}```" in chart_readme, "the chart's README: copy psjob-health.lua over"
