"""A whole local cluster: the control plane plus a node agent process.

This is the API the pytest fixtures and ``python -m psjob_localcluster dev`` use::

    with local_cluster(tmp_path) as cluster:
        core = kubernetes.client.CoreV1Api(cluster.api_client())
        cluster.kubectl("get", "nodes")
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from psjob_localcluster.agent.nodes import NodeSpec
from psjob_localcluster.controlplane import (
    ControlPlane,
    ControlPlaneError,
    finish_start,
    launch_control_plane,
    tail,
)
from psjob_localcluster.kube import client_from_kubeconfig, close_client
from psjob_localcluster.podlogs import pod_log_tails
from psjob_localcluster.procs import (
    ManagedProcess,
    processes_with_environment,
    start_process,
    wait_until_gone,
)
from psjob_localcluster.tools import Tools, require_tools
from psjob_localcluster.waiting import wait_for

DEFAULT_NODES = (NodeSpec("node-0"), NodeSpec.parse("node-1:nvidia.com/gpu=4"))
"""node-1 also offers 4 nvidia.com/gpu, so GPU requests can be scheduled (nothing enforces them)."""


@dataclass
class RunningCluster:
    """What every kind of local cluster offers its users: the control plane and admin access."""

    plane: ControlPlane
    _clients: list[client.ApiClient] = field(default_factory=list, kw_only=True)

    @property
    def kubeconfig(self) -> Path:
        """An admin (system:masters) kubeconfig."""
        return self.plane.admin_kubeconfig

    @property
    def server(self) -> str:
        return self.plane.server

    @property
    def log_dir(self) -> Path:
        """One log per component: etcd, kube-apiserver, ..., the node's processes."""
        return self.plane.log_dir

    @property
    def tools(self) -> Tools:
        return self.plane.tools

    def api_client(self) -> client.ApiClient:
        """A new admin API client (closed when the cluster stops)."""
        api = client_from_kubeconfig(self.kubeconfig)
        self._clients.append(api)
        return api

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as admin; a failure raises with its stderr when ``check``."""
        done = subprocess.run(
            [str(self.tools.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
            )
        return done

    def wait_established(self, *crds: str, timeout: float = 60.0) -> None:
        """Wait until every named CRD is served. `kubectl wait --for=condition=Established` fails
        at once on a CRD whose status has no conditions yet, which a loaded API server shows."""

        def established() -> bool:
            answer = json.loads(self.kubectl("get", "crd", *crds, "-o", "json").stdout)
            items = (
                answer["items"] if answer.get("kind") == "List" else [answer]
            )  # one name: no List
            return all(
                any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
                for conditions in (
                    (item.get("status") or {}).get("conditions") or [] for item in items
                )
            )

        wait_for(established, f"CRDs {', '.join(crds)} to be Established", timeout)

    def log_tails(self, lines: int = 30) -> str:
        """The tail of every component's log (etcd, API server, ..., the node's processes)."""
        return self.plane.log_tails(lines)

    def close_clients(self) -> None:
        for api in self._clients:
            close_client(api)


@dataclass
class LocalCluster(RunningCluster):
    """A running control plane and node agent; ``stop()`` ends every process of both."""

    agent: ManagedProcess
    nodes: tuple[NodeSpec, ...]

    @property
    def pod_dir(self) -> Path:
        """Where the agent keeps each pod's hosts file, kubeconfig and container logs."""
        return self.plane.root / "agent" / "pods"

    def pod_log_tails(self, namespace: str, lines: int = 20) -> str:
        """The tail of the latest log of every container of every pod run in ``namespace``."""
        return pod_log_tails(self.pod_dir, namespace, lines)

    def stop(self) -> None:
        """The agent first (it stops the pods), then the control plane; then check that no
        process of this cluster is left (RuntimeError naming them if one is)."""
        self.close_clients()
        self.agent.stop(grace_seconds=10.0)
        self.plane.stop()
        pods = processes_with_environment(f"NSS_WRAPPER_HOSTS={self.pod_dir}/")
        own = [p.pid for p in self.plane.processes] + [self.agent.pid]
        left = wait_until_gone(own + pods, timeout=5.0)
        if left:
            raise RuntimeError(f"processes of the cluster in {self.plane.root} outlived it: {left}")


def _agent_argv(plane: ControlPlane, nodes: Sequence[NodeSpec], no_run: bool) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "psjob_localcluster",
        "agent",
        f"--kubeconfig={plane.admin_kubeconfig}",
        f"--state-dir={plane.root / 'agent'}",
        f"--ca-file={plane.pki.ca.cert}",
        f"--serving-cert={plane.pki.kubelet_serving.cert}",
        f"--serving-key={plane.pki.kubelet_serving.key}",
    ]
    for node in nodes:
        capacity = ",".join(f"{k}={v}" for k, v in node.capacity.items())
        argv.append(f"--node={node.name}:{capacity}")
    return [*argv, "--no-run"] if no_run else argv


def _wait_nodes_ready(cluster: LocalCluster, deadline: float) -> None:
    core = client.CoreV1Api(cluster.api_client())
    wanted = {n.name for n in cluster.nodes}
    while True:
        ready = {
            node.metadata.name
            for node in core.list_node().items
            if node.metadata
            and node.status
            and any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        }
        if wanted <= ready:
            return
        if not cluster.agent.alive():
            raise ControlPlaneError(
                f"the node agent exited ({cluster.agent.popen.returncode}):\n"
                f"{tail(cluster.agent.log_path, 40)}"
            )
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"nodes {sorted(wanted - ready)} not Ready in time:\n{cluster.log_tails()}"
            )
        time.sleep(0.1)


def start_cluster(
    root: Path,
    nodes: Sequence[NodeSpec] = DEFAULT_NODES,
    *,
    no_run: bool = False,
    tools: Tools | None = None,
    timeout: float = 90.0,
) -> LocalCluster:
    """Start the control plane and a node agent under ``root``; wait until the nodes are Ready.

    ``no_run=True`` starts the agent in no-run mode (pods are marked Running, no process runs).
    """
    deadline = time.monotonic() + timeout
    plane = launch_control_plane(root, tools or require_tools())
    try:
        # the agent imports the kubernetes client (seconds) while the API server starts
        agent = start_process(
            "node-agent",
            _agent_argv(plane, nodes, no_run),
            plane.log_dir / "node-agent.log",
        )
    except BaseException:
        plane.stop()
        raise
    try:
        finish_start(plane, deadline)
    except BaseException:
        agent.stop()
        raise
    cluster = LocalCluster(plane, agent, tuple(nodes))
    try:
        _wait_nodes_ready(cluster, deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def local_cluster(
    root: Path, nodes: Sequence[NodeSpec] = DEFAULT_NODES, *, no_run: bool = False
) -> Iterator[LocalCluster]:
    """``start_cluster`` that stops everything on exit, on errors and on Ctrl-C too."""
    cluster = start_cluster(root, nodes, no_run=no_run)
    try:
        yield cluster
    finally:
        cluster.stop()
