"""kube-router in firewall-only mode: the kubelet node's NetworkPolicy implementation.

kube-router's network policy controller turns NetworkPolicies into iptables chains and ipsets
in the node's network namespace (only the node's: its tables die with it). It filters what the
node forwards, bridged pod-to-pod traffic included (``bridge-nf-call-iptables``); its router
(BGP) and service proxy (IPVS) stay off: the CNI bridge and kube-proxy do those jobs here. It
reads pods, namespaces and NetworkPolicies as ``system:kube-router`` with the rights below, the
read-only part of upstream's ClusterRole for the firewall.
"""

from __future__ import annotations

import subprocess
from typing import Any

from psjob_localcluster.node.kubelet import KubeletSettings, agent_kubeconfig
from psjob_localcluster.node.sandbox import NodeSandbox
from psjob_localcluster.pki import KUBE_ROUTER_USER
from psjob_localcluster.procs import ManagedProcess, start_process
from psjob_localcluster.tools import KubeRouterTools

ROLE = "psjob-local:kube-router"

FORWARD_CHAIN = "KUBE-ROUTER-FORWARD"
"""The chain kube-router hooks into FORWARD once its first sync is done."""


def kube_router_rbac() -> list[dict[str, Any]]:
    """The ClusterRole and binding of ``system:kube-router``: watch what policies select."""
    read = ["get", "list", "watch"]
    rules = [
        {
            "apiGroups": [""],
            "resources": ["namespaces", "pods", "nodes", "services"],
            "verbs": read,
        },
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
    ]
    meta = {"name": ROLE}
    group = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": f"{group}/v1",
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": f"{group}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ROLE,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}
            ],
        },
    ]


def start_kube_router(
    sandbox: NodeSandbox, kube_router: KubeRouterTools, settings: KubeletSettings
) -> ManagedProcess:
    """kube-router inside the node's namespaces, enforcing NetworkPolicies and nothing else."""
    kubeconfig = agent_kubeconfig(settings, "kube-router", settings.credentials.kube_router)
    bridged = ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"]
    subprocess.run(sandbox.command(bridged), capture_output=True, text=True, check=True)
    argv = [
        str(kube_router.binary),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={settings.node_name}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-pod-egress=false",  # the CNI bridge masquerades already
        "--enable-ipv4=true",
        "--enable-ipv6=false",
        "--health-port=0",
        "--v=1",
    ]
    log = settings.folder.parent / "logs" / "kube-router.log"
    return start_process("kube-router", sandbox.command(argv), log)


def firewall_ready(sandbox: NodeSandbox) -> bool:
    """Whether kube-router has synced once: its chain hangs off FORWARD."""
    listing = subprocess.run(
        sandbox.command(["iptables", "-S", "FORWARD"]), capture_output=True, text=True, check=False
    )
    return f"-j {FORWARD_CHAIN}" in listing.stdout
