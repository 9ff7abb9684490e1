"""Fixtures for the tests on the kubelet node (see docs/cluster.md, "The kubelet node").

- ``kubelet_cluster`` (session): a ``KubeletCluster``: the control plane and a real kubelet node
  (containerd, runc, CNI bridge, kube-proxy, CoreDNS) running the images built from images/.
- ``kube`` (session): an admin ``kubernetes.client.ApiClient`` for it.
- ``namespace`` (function): a fresh namespace, deleted after the test.
- ``operator_namespace`` (session): the chart installed with its defaults into a "restricted"
  namespace, ``psjob-system``; uninstalled at the end.

Every test here runs on one pytest-xdist worker (one kubelet node per machine); a failing test's
report shows the tail of every component's log and of its namespace's container logs. When the
machine cannot run a kubelet node, the tests skip with one line naming what is missing, except
under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from psjob_localcluster.kubelet_cluster import KubeletCluster, kubelet_cluster
from psjob_localcluster.node.prerequisites import missing_prerequisites

from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.reports import failure_sections

KUBELET = Path(__file__).resolve().parent
ROOT = KUBELET.parents[1]
_CLUSTER = pytest.StashKey[KubeletCluster]()
_NAMESPACE = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def kubelet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeletCluster]:
    """The session's kubelet-node cluster, stopped (containers, network, mounts) at the end."""
    missing = missing_prerequisites()
    if missing:
        message = f"the kubelet node needs {'; '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with kubelet_cluster(tmp_path_factory.mktemp("kubelet")) as running:
        request.config.stash[_CLUSTER] = running
        yield running


@pytest.fixture(scope="session")
def kube(kubelet: KubeletCluster) -> client.ApiClient:
    """An admin API client for the kubelet-node cluster."""
    return kubelet.api_client()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace named after the test, ready for pods; deleted afterwards."""
    core = client.CoreV1Api(kube)
    name = create_namespace(core, request.node.name)
    request.node.stash[_NAMESPACE] = name
    yield name
    delete_namespace(core, name)


RELEASE = "psjob"


def _helm(kubelet: KubeletCluster, home: Path, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubelet.kubeconfig)}
    env |= {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CONFIG", "CACHE", "DATA")}
    done = subprocess.run(
        [str(kubelet.tools.helm), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def operator_namespace(
    kubelet: KubeletCluster, kube: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The chart installed with its defaults into a "restricted" namespace; uninstalled after."""
    core = client.CoreV1Api(kube)
    name = "psjob-system"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    home = tmp_path_factory.mktemp("helm")
    chart = str(ROOT / "charts" / "psjob-operator")
    _helm(kubelet, home, "install", RELEASE, chart, "-n", name, "--wait", "--timeout", "180s")
    yield name
    _helm(kubelet, home, "uninstall", RELEASE, "-n", name, "--wait", "--timeout", "120s")
    delete_namespace(core, name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(KUBELET):
            item.add_marker(pytest.mark.kubelet)
            item.add_marker(pytest.mark.xdist_group("kubelet-node"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    running = item.config.stash.get(_CLUSTER, None)
    if report.failed and running is not None and item.path.is_relative_to(KUBELET):
        report.sections += failure_sections(running, item.stash.get(_NAMESPACE, None))
    return report
