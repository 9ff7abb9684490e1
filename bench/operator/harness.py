"""The stage: a no-run local cluster, the PSJob CRD, and `psjob operator` as its own process.

Pods are marked Running by the node agent without starting anything (docs/cluster.md, no-run
mode), so thousands fit on a small machine and the figures measure the control plane and the
operator, not training. The operator watches only `OPERATOR_NAMESPACE`; the kubectl reference
runs in `REFERENCE_NAMESPACE`, so the operator does no work while the reference is measured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from psjob_localcluster import LocalCluster, NodeSpec, local_cluster
from psjob_localcluster.procs import ManagedProcess, start_process
from psjob_localcluster.waiting import wait_for

from bench.operator.recorder import GROUP, PLURAL, VERSION, Recorder
from tests.e2e.operator.support import free_port, healthy

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "psjob-bench"
REFERENCE_NAMESPACE = "kubectl-reference"
NODES = (NodeSpec.parse("big-0:pods=10000"), NodeSpec.parse("big-1:pods=10000"))
"""Room for the schema's largest job: 10,000 servers and 10,000 workers (`--largest`)."""
IMAGE = "psjob/runtime:bench"
COMMAND = ["python", "-m", "psjob_runtime"]
"""Never run (no-run mode), but a realistic pod spec is what the API server stores."""

Manifest = dict[str, Any]


def job_manifest(name: str, servers: int, workers: int) -> Manifest:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PSJob",
        "metadata": {"name": name},
        "spec": {
            "image": IMAGE,
            "servers": {"replicas": servers, "command": COMMAND},
            "workers": {"replicas": workers, "command": COMMAND},
        },
    }


def rss_bytes(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stage:
    cluster: LocalCluster
    api: client.ApiClient
    operator: ManagedProcess
    operator_pid: int
    """The operator's own process (under py-spy when profiling, `operator` is py-spy)."""

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str, input_text: str | None = None) -> float:
        """Run kubectl as admin; the seconds it took."""
        started = time.monotonic()
        self.cluster.kubectl(*args, input_text=input_text, timeout=600)
        return time.monotonic() - started

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the operator and by each process of the cluster."""
        processes = [*self.cluster.plane.processes, self.cluster.agent]
        used = {p.name: cpu_seconds(p.pid) for p in processes}
        return {"psjob-operator": cpu_seconds(self.operator_pid), **used}

    def recorder(self, namespace: str) -> Recorder:
        return Recorder(self.api, namespace)

    def render(self, manifests: list[Manifest], namespace: str) -> str:
        """`psjob render` of the jobs: exactly the Services and Pods the operator creates."""
        text = yaml.safe_dump_all(
            [{**m, "metadata": {**m["metadata"], "namespace": namespace}} for m in manifests]
        )
        return subprocess.run(
            [sys.executable, "-m", "psjob_operator.cli", "render", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def clean(self, namespace: str) -> None:
        """Delete every PSJob, pod and service of `namespace` at once and wait until gone.

        The jobs go first and their DELETED events reach the operator before the pods are
        deleted, so it does not recreate them.
        """
        recorder = self.recorder(namespace)
        try:
            self.custom.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL
            )
            recorder.wait("PSJobs deleted", lambda d: not d.present_jobs, timeout=120)
            time.sleep(0.5)
            self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
            self.core.delete_collection_namespaced_service(namespace)
            recorder.wait("pods deleted", lambda d: not d.present_pods, timeout=300)
        finally:
            recorder.stop()

    def warm_up(self) -> None:
        """One small job end to end: imports, watches and connection pools are warm."""
        recorder = self.recorder(OPERATOR_NAMESPACE)
        try:
            text = yaml.safe_dump(job_manifest("warm-up", 1, 2))
            self.kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", "-", input_text=text)
            recorder.wait(
                "warm-up job Running",
                lambda d: (s := d.last("warm-up")) is not None and s.phase == "Running",
                timeout=120,
            )
        finally:
            recorder.stop()
        self.clean(OPERATOR_NAMESPACE)

    def server_version(self) -> str:
        info = client.VersionApi(self.api).get_code()
        return str(info.git_version)


def _child_pid(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return int(wait_for(lambda: children.read_text().split(), "py-spy's child")[0])


def start_operator(
    cluster: LocalCluster, log_dir: Path, profile: Path | None
) -> tuple[ManagedProcess, int]:
    """The operator process and its pid; under `py-spy record` when `profile` names a file."""
    port = free_port()
    spy = [] if profile is None else [str(Path(sys.executable).parent / "py-spy")]
    if spy:
        spy += ["record", "--rate", "100", "--format", "raw", "--threads", "-o", str(profile), "--"]
    argv = [
        *spy,
        sys.executable,
        "-m",
        "psjob_operator.cli",
        "operator",
        f"--namespace={OPERATOR_NAMESPACE}",
        f"--http-port={port}",
    ]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
    operator = start_process("psjob-operator", argv, log_dir / "operator.log", env=env)
    wait_for(lambda: healthy(port), "the operator's /healthz", timeout=60)
    return operator, _child_pid(operator.pid) if spy else operator.pid


def stop_operator(operator: ManagedProcess, pid: int) -> None:
    """SIGTERM to the operator alone first: py-spy then writes its profile and exits."""
    if pid != operator.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            operator.popen.wait(timeout=60)
    operator.stop(grace_seconds=10)


@contextmanager
def stage(root: Path, profile: Path | None = None) -> Iterator[Stage]:
    """A cluster with the CRD, both namespaces and a warm operator; all stopped on exit.

    With `profile`, py-spy samples the operator (every thread, 100 Hz) into that file.
    """
    with local_cluster(root / "cluster", NODES, no_run=True) as cluster:
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        cluster.wait_established("psjobs.psjob.dev")
        for namespace in (OPERATOR_NAMESPACE, REFERENCE_NAMESPACE):
            cluster.kubectl("create", "namespace", namespace)
        api = cluster.api_client()
        core = client.CoreV1Api(api)
        for namespace in (OPERATOR_NAMESPACE, REFERENCE_NAMESPACE):

            def accounts(namespace: str = namespace) -> list[Any]:
                return list(core.list_namespaced_service_account(namespace).items)

            wait_for(accounts, f"the default ServiceAccount of {namespace}")
        operator, pid = start_operator(cluster, root, profile)
        try:
            bench = Stage(cluster, api, operator, pid)
            bench.warm_up()
            yield bench
        finally:
            stop_operator(operator, pid)
