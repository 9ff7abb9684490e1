"""The kubelet node's addresses, and the one link between it and the machine.

The node's network namespace has a veth pair to the machine and a CNI bridge for its pods, and
no default route: a packet for an address nothing here answers has nowhere to go, instead of
leaving the machine through its default route. The API server listens on the machine's end of
the pair, so the kubelet, kube-proxy and in-cluster clients (the ``kubernetes`` Service's
endpoint) reach it, and it reaches the kubelet (``kubectl logs``) on the node's end. Pod traffic
that leaves the bridge is masqueraded to the node's address by the CNI bridge plugin, so the
machine only ever answers the node.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psjob_localcluster.node.sandbox import NodeSandbox
from psjob_localcluster.pki import SERVICE_CLUSTER_IP_RANGE


class NetworkError(RuntimeError):
    """The link could not be made; the message says what is in the way."""


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses of one kubelet node (one at a time per machine: see node.py's lock)."""

    host_link: str = "psjob-node0"
    host_address: str = "10.250.0.1"
    node_address: str = "10.250.0.2"
    link_prefix: int = 30
    pod_cidr: str = "10.244.0.0/24"
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = SERVICE_CLUSTER_IP_RANGE

    @property
    def dns_service_ip(self) -> str:
        """The tenth address of the Service range, as kubeadm picks it."""
        return str(ipaddress.ip_network(self.service_cidr)[10])


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _address_in_use(address: str) -> bool:
    listing = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
    return f" {address}/" in listing.stdout


def connect(sandbox: NodeSandbox, network: NodeNetwork) -> None:
    """Make the veth pair, address both ends and let the node forward between its links.

    The machine's end goes when the node's namespace does (a veth pair dies with either end).
    """
    if _address_in_use(network.host_address):
        raise NetworkError(
            f"{network.host_address} is already an address of this machine: another kubelet "
            f"node is running, or a stale `{network.host_link}` link is left (`ip link del "
            f"{network.host_link}`)"
        )
    _ip(
        "link",
        "add",
        network.host_link,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        str(sandbox.init_pid),
    )
    host_sysctl = f"/proc/sys/net/ipv6/conf/{network.host_link}/disable_ipv6"
    with open(host_sysctl, "w") as knob:  # no router solicitations from the machine's end
        knob.write("1")
    _ip("addr", "add", f"{network.host_address}/{network.link_prefix}", "dev", network.host_link)
    _ip("link", "set", network.host_link, "up")
    inside = [
        ["ip", "addr", "add", f"{network.node_address}/{network.link_prefix}", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
    ]
    for argv in inside:
        done = subprocess.run(sandbox.command(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NetworkError(f"`{' '.join(argv)}` in the node failed: {done.stderr.strip()}")


def routes_inside(sandbox: NodeSandbox) -> str:
    """The node's routing table (``ip route``), for checks that no route leads out."""
    done = subprocess.run(
        sandbox.command(["ip", "route"]), capture_output=True, text=True, check=True
    )
    return done.stdout


def pod_network_config(network: NodeNetwork, ipam_dir: Path) -> dict[str, Any]:
    """The CNI network list containerd gives every pod: a bridge with host-local addresses.

    ``ipMasq`` rewrites what pods send beyond their subnet to the node's own address, so the
    machine (the API server) only ever answers the node, never a pod address it has no route to.
    """
    return {
        "cniVersion": "1.0.0",
        "name": "psjob-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
