"""One kubelet node: its namespaces, link, containerd, kubelet, kube-proxy and kube-router,
started and stopped together.

One kubelet node runs on a machine at a time: its addresses are fixed and its containerd root
(the unpacked images) is shared between runs, so a file lock in the cache serialises them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from psjob_localcluster.controlplane import tail
from psjob_localcluster.node.cgroups import create_cgroup_root, remove_cgroup_root
from psjob_localcluster.node.containerd import Containerd, containerd_paths, start_containerd
from psjob_localcluster.node.firewall import start_kube_router
from psjob_localcluster.node.kubelet import (
    CGROUP_ROOT,
    KubeletSettings,
    start_kube_proxy,
    start_kubelet,
)
from psjob_localcluster.node.leftovers import MachineState, differences, machine_state
from psjob_localcluster.node.network import NodeNetwork, connect, pod_network_config
from psjob_localcluster.node.sandbox import NodeSandbox, start_sandbox
from psjob_localcluster.podlogs import pod_log_tails
from psjob_localcluster.procs import ManagedProcess
from psjob_localcluster.tools import KubeRouterTools, Tools, cache_root

NODE_NAME = "kubelet-node"


class NodeError(RuntimeError):
    """A part of the kubelet node failed; the message names it and carries its log tail."""


def node_cache() -> Path:
    """The machine-wide folder of the kubelet node: containerd's root and the lock."""
    return cache_root() / "kubelet-node"


@dataclass
class KubeletNode:
    """A running kubelet node; ``stop()`` leaves nothing of it on the machine."""

    name: str
    folder: Path
    network: NodeNetwork
    sandbox: NodeSandbox
    lock: IO[str]
    machine_before: MachineState
    containerd: Containerd | None = None
    kubelet: ManagedProcess | None = None
    kube_proxy: ManagedProcess | None = None
    kube_router: ManagedProcess | None = None

    @property
    def processes(self) -> list[ManagedProcess]:
        started = [
            self.containerd.process if self.containerd else None,
            self.kubelet,
            self.kube_proxy,
            self.kube_router,
        ]
        return [process for process in started if process is not None]

    @property
    def pod_logs_dir(self) -> Path:
        return self.folder / "pod-logs"

    def check_alive(self) -> None:
        for process in [self.sandbox.holder, *self.processes]:
            if not process.alive():
                raise NodeError(
                    f"{process.name} exited with status {process.popen.returncode}; last lines "
                    f"of {process.log_path}:\n{tail(process.log_path, 40)}"
                )

    def pod_log_tails(self, namespace: str, lines: int = 20) -> str:
        """The tail of the latest log of every container run in ``namespace``."""
        return pod_log_tails(self.pod_logs_dir, namespace, lines)

    def _wait_machine_restored(self, timeout: float) -> list[str]:
        """The kernel frees a dead network namespace (and the machine's end of the veth pair)
        asynchronously: give it a moment before calling a difference a leftover."""
        deadline = time.monotonic() + timeout
        while True:
            remove_cgroup_root(CGROUP_ROOT)
            left = differences(self.machine_before, machine_state(CGROUP_ROOT))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def stop(self) -> None:
        """The kubelet first (no pod is restarted meanwhile), then every container (so the
        shared containerd root keeps no record of them), then the namespaces with whatever is
        left in them; then the cgroups, and the lock."""
        try:
            if self.kubelet is not None:
                self.kubelet.stop(grace_seconds=10.0)
            if self.containerd is not None:
                with contextlib.suppress(Exception):  # the namespaces' end kills them anyway
                    self.containerd.remove_all_containers()
            for process in reversed(self.processes):
                process.stop(grace_seconds=5.0)
            self.sandbox.stop()
            left = self._wait_machine_restored(timeout=15.0)
            if left:
                raise NodeError(f"the kubelet node left this on the machine: {'; '.join(left)}")
        finally:
            self.lock.close()


def open_node(folder: Path, network: NodeNetwork) -> KubeletNode:
    """Take the machine's kubelet-node lock, make the namespaces and the link to them."""
    node_cache().mkdir(parents=True, exist_ok=True)
    lock = open(node_cache() / "node.lock", "w")  # noqa: SIM115 (held for the node's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder.mkdir(parents=True, exist_ok=True)
        remove_cgroup_root(CGROUP_ROOT)  # empty leftovers of a node whose harness was killed
        before = machine_state(CGROUP_ROOT)
        sandbox = start_sandbox(folder, sys.executable)
    except BaseException:
        lock.close()
        raise
    node = KubeletNode(NODE_NAME, folder, network, sandbox, lock, before)
    try:
        connect(sandbox, network)
    except BaseException:
        node.stop()
        raise
    return node


def start_runtime(node: KubeletNode, sandbox_image: str) -> Containerd:
    """containerd with the pod network's CNI configuration."""
    paths = containerd_paths(node_cache() / "containerd", node.folder / "containerd")
    paths.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    network_config = pod_network_config(node.network, Path("/var/lib/cni/networks"))
    (paths.cni_conf_dir / "10-psjob-pods.conflist").write_text(json.dumps(network_config))
    node.containerd = start_containerd(node.sandbox, paths, sandbox_image)
    return node.containerd


def start_node_agents(node: KubeletNode, tools: Tools, settings: KubeletSettings) -> None:
    """The kubelet and kube-proxy, once the API server answers."""
    create_cgroup_root(CGROUP_ROOT)
    node.kubelet = start_kubelet(node.sandbox, tools, settings)
    node.kube_proxy = start_kube_proxy(node.sandbox, tools, settings)


def start_node_firewall(
    node: KubeletNode, kube_router: KubeRouterTools, settings: KubeletSettings
) -> None:
    """kube-router, once its Node object exists (it reads it at start and exits without it) and
    its ClusterRole is there (firewall.py)."""
    node.kube_router = start_kube_router(node.sandbox, kube_router, settings)
