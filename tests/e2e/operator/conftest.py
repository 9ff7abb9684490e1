"""Fixtures for the operator on the real control plane.

- ``psjob_crd`` (session): the generated CRD, applied with kubectl and Established.
- ``start_operator`` (function): starts `psjob operator` processes watching only the test's
  namespace (several for the HA test); each is stopped after the test.
- ``operator`` (function): one running operator for the test's namespace.
- ``psjobs`` (function): apply, read and wait for PSJobs and their pods (support.PSJobs).
- ``kueue`` (session): the real Kueue manager (pinned release, `make cluster-tools`) with its
  CRDs and webhooks installed, its webhooks reached over loopback TLS.

When a test that started operators fails, its report shows the tail of each operator's log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from psjob_localcluster import LocalCluster
from psjob_localcluster.controlplane import tail
from psjob_localcluster.kueue import RunningKueue, start_kueue
from psjob_localcluster.procs import start_process
from psjob_localcluster.waiting import wait_for

from tests.e2e.operator.support import ROOT, OperatorProcess, PSJobs, free_port, healthy

_OPERATOR_LOGS = pytest.StashKey[list[Path]]()
_KUEUE = pytest.StashKey[RunningKueue]()


@pytest.fixture(scope="session")
def psjob_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.wait_established("psjobs.psjob.dev")


@pytest.fixture(scope="session")
def kueue(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    psjob_crd: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningKueue]:
    running = start_kueue(cluster, tmp_path_factory.mktemp("kueue"))
    request.config.stash[_KUEUE] = running
    yield running
    running.stop()


@pytest.fixture
def start_operator(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    psjob_crd: None,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []
    logs = request.node.stash.setdefault(_OPERATOR_LOGS, [])

    def start(*extra: str) -> OperatorProcess:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "psjob_operator.cli",
            "operator",
            f"--namespace={namespace}",
            f"--http-port={port}",
            *extra,
        ]
        log = tmp_path / f"operator-{len(started)}.log"
        logs.append(log)
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
        operator = OperatorProcess(
            start_process(f"operator-{len(started)}", argv, log, env=env), port
        )
        started.append(operator)
        wait_for(lambda: healthy(port), "the operator's /healthz", timeout=60)
        return operator

    yield start
    for operator in started:
        operator.process.stop(grace_seconds=10)


@pytest.fixture
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator()


@pytest.fixture
def psjobs(cluster: LocalCluster, namespace: str, api_client: client.ApiClient) -> PSJobs:
    return PSJobs(cluster, namespace, api_client)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for log in item.stash.get(_OPERATOR_LOGS, []):
            report.sections.append((f"{log.name} (tail)", tail(log, 60)))
        running = item.config.stash.get(_KUEUE, None)
        if running is not None and "kueue" in getattr(item, "fixturenames", ()):
            report.sections.append(("kueue.log (tail)", tail(running.log_path, 60)))
    return report
