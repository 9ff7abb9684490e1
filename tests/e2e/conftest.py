"""Fixtures for tests on the real control plane (see docs/cluster.md).

- ``cluster`` (session): a ``psjob_localcluster.LocalCluster``: etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler and a node agent with nodes node-0 and node-1.
- ``api_client`` (session): an admin ``kubernetes.client.ApiClient`` for it.
- ``namespace`` (function): a fresh namespace (its default ServiceAccount exists), deleted
  after the test without waiting.

A test that uses ``cluster`` gets the ``cluster`` marker, and when it fails its report
shows the tail of every component's log and of its namespace's pod logs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from psjob_localcluster import LocalCluster, local_cluster

from tests.support.namespaces import create_namespace, delete_namespace
from tests.support.reports import failure_sections

E2E = Path(__file__).resolve().parent
_CLUSTER = pytest.StashKey[LocalCluster]()
_NAMESPACE = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """The session's local cluster, stopped (every process) when the session ends."""
    with local_cluster(tmp_path_factory.mktemp("cluster")) as running:
        request.config.stash[_CLUSTER] = running
        yield running


@pytest.fixture(scope="session")
def api_client(cluster: LocalCluster) -> client.ApiClient:
    """An admin API client for the session's cluster."""
    return cluster.api_client()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace named after the test, ready for pods; deleted afterwards."""
    core = client.CoreV1Api(api_client)
    name = create_namespace(core, request.node.name)
    request.node.stash[_NAMESPACE] = name
    yield name
    delete_namespace(core, name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need the control plane, and keep every test of this directory on one
    pytest-xdist worker (``make test`` runs two): one control plane serves them all, while the
    other worker runs the CPU-bound runtime tests beside them."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.xdist_group("control-plane"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    running = item.config.stash.get(_CLUSTER, None)
    if report.failed and running is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections += failure_sections(running, item.stash.get(_NAMESPACE, None))
    return report
