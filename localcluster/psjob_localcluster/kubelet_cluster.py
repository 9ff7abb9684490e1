"""A local cluster whose node is a real kubelet: containerd and runc run the pods as containers
of the images built from ``images/``, on a CNI bridge, with kube-proxy, CoreDNS and kube-router
enforcing NetworkPolicies.

    with kubelet_cluster(tmp_path) as cluster:
        cluster.kubectl("apply", "-f", "examples/digits.yaml")

The node lives in namespaces of its own (node/sandbox.py) linked to the machine by one veth
pair (node/network.py); the control plane runs on the machine and listens on the machine's end
of that pair. See docs/cluster.md, "The kubelet node".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from psjob_localcluster.cluster import RunningCluster
from psjob_localcluster.controlplane import ControlPlaneError, finish_start, launch_control_plane
from psjob_localcluster.images import NodeImages, ensure_node_images, import_images
from psjob_localcluster.node import dns, firewall
from psjob_localcluster.node.kubelet import KubeletSettings
from psjob_localcluster.node.network import NodeNetwork
from psjob_localcluster.node.node import (
    KubeletNode,
    open_node,
    start_node_agents,
    start_node_firewall,
    start_runtime,
)
from psjob_localcluster.objects import create
from psjob_localcluster.pki import issue_kubelet_node_pki
from psjob_localcluster.tools import KubeRouterTools, Tools, require_kube_router, require_tools


@dataclass
class KubeletCluster(RunningCluster):
    """A running control plane and kubelet node; ``stop()`` ends both."""

    node: KubeletNode
    images: NodeImages

    def pod_log_tails(self, namespace: str, lines: int = 20) -> str:
        """The tail of the latest log of every container run in ``namespace``."""
        return self.node.pod_log_tails(namespace, lines)

    def stop(self) -> None:
        """The node first (it stops the containers), then the control plane."""
        self.close_clients()
        try:
            self.node.stop()
        finally:
            self.plane.stop()


def _wait(cluster: KubeletCluster, what: str, probe: Callable[[], bool], deadline: float) -> None:
    while not probe():
        cluster.node.check_alive()
        cluster.plane.check_alive()
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"timed out waiting for {what}:\n{cluster.log_tails()}\n"
                f"{cluster.pod_log_tails(dns.NAMESPACE)}"
            )
        time.sleep(0.2)


def _node_ready(core: client.CoreV1Api, name: str) -> bool:
    nodes = core.list_node(field_selector=f"metadata.name={name}").items
    return any(
        c.type == "Ready" and c.status == "True"
        for node in nodes
        if node.status is not None
        for c in (node.status.conditions or [])
    )


def _dns_ready(apps: client.AppsV1Api) -> bool:
    deployment = apps.read_namespaced_deployment(dns.NAME, dns.NAMESPACE)
    return bool(deployment.status and deployment.status.ready_replicas == 1)


def start_kubelet_cluster(
    root: Path,
    *,
    tools: Tools | None = None,
    kube_router: KubeRouterTools | None = None,
    images: NodeImages | None = None,
    timeout: float = 300.0,
) -> KubeletCluster:
    """Start the control plane and a kubelet node under ``root``; wait until the node is Ready
    and cluster DNS answers. Builds the images first when the cache lacks them."""
    tools = tools or require_tools()
    kube_router = kube_router or require_kube_router()
    images = images or ensure_node_images()
    network = NodeNetwork()
    node = open_node(root / "node", network)
    try:
        plane = launch_control_plane(root, tools, address=network.host_address)
    except BaseException:
        node.stop()
        raise
    cluster = KubeletCluster(plane, node, images)
    try:
        containerd = start_runtime(node, images.pause.reference)
        import_images(containerd, images.for_node())
        # Counted from here: importing a changed 5.8 GB runtime image took most of the 300 s
        # under CI's load, and the control plane timed out while it waited (the import has a
        # bound of its own).
        deadline = time.monotonic() + timeout
        finish_start(plane, deadline)
        settings = KubeletSettings(
            node_name=node.name,
            network=network,
            server=plane.server,
            ca_file=plane.pki.ca.cert,
            credentials=issue_kubelet_node_pki(plane.pki, node.name, network.node_address),
            containerd_endpoint=containerd.endpoint,
            folder=node.folder,
        )
        start_node_agents(node, tools, settings)
        api = cluster.api_client()
        for manifest in dns.dns_manifests(images.coredns.reference, network.dns_service_ip):
            create(api, dns.NAMESPACE, manifest)
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        _wait(cluster, f"node {node.name} Ready", lambda: _node_ready(core, node.name), deadline)
        for manifest in firewall.kube_router_rbac():
            create(api, "default", manifest)
        start_node_firewall(node, kube_router, settings)
        _wait(cluster, "cluster DNS (CoreDNS) ready", lambda: _dns_ready(apps), deadline)
        _wait(
            cluster,
            "kube-router's first firewall sync",
            lambda: firewall.firewall_ready(node.sandbox),
            deadline,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def kubelet_cluster(root: Path, **options: object) -> Iterator[KubeletCluster]:
    """``start_kubelet_cluster`` that stops everything on exit, on errors and on Ctrl-C too."""
    cluster = start_kubelet_cluster(root, **options)  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.stop()
