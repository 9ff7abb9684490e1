"""Fixtures for the tests on the kubelet node (see docs/cluster.md, "The kubelet node").

- ``kubelet_cluster`` (session): a ``KubeletCluster``: the control plane and a real kubelet node
  (containerd, runc, CNI bridge, kube-proxy, CoreDNS) running the images built from images/.
- ``kube`` (session): an admin ``kubernetes.client.ApiClient`` for it.
- ``namespace`` (function): a fresh namespace, deleted after the test.

Every test here runs on one pytest-xdist worker (one kubelet node per machine); a failing test's
report shows the tail of every component's log and of its namespace's container logs. When the
machine cannot run a kubelet node, the tests skip with one line naming what is missing, except
under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from psjob_localcluster.kubelet_cluster import KubeletCluster, kubelet_cluster
from psjob_localcluster.node.prerequisites import missing_prerequisites

from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.reports import failure_sections

KUBELET = Path(__file__).resolve().parent
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
