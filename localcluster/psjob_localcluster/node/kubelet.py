"""The kubelet and kube-proxy of the kubelet node: their configuration files and processes.

Both run inside the node's namespaces with the cluster's CA: the kubelet registers with its own
client certificate (``system:node:<name>``, so the Node authorizer applies) and serves
``kubectl logs``/``exec``/``port-forward`` with a certificate the API server verifies; kube-proxy
programs the node's iptables (only the node's: its network namespace has its own tables) so that
ClusterIPs, the ``kubernetes`` Service and cluster DNS work for pods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psjob_localcluster.kubeconfig import write_kubeconfig
from psjob_localcluster.node.network import NodeNetwork
from psjob_localcluster.node.sandbox import NodeSandbox
from psjob_localcluster.pki import CertPair, KubeletNodePki
from psjob_localcluster.procs import ManagedProcess, start_process
from psjob_localcluster.tools import Tools

CGROUP_ROOT = "/psjob-kubelet-node"
"""Every pod cgroup nests under this one, so stopping the node can remove them all."""


@dataclass(frozen=True)
class KubeletSettings:
    """What the kubelet and kube-proxy need to know about the cluster and the node."""

    node_name: str
    network: NodeNetwork
    server: str
    ca_file: Path
    credentials: KubeletNodePki
    containerd_endpoint: str
    folder: Path

    @property
    def root_dir(self) -> Path:
        return self.folder / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.folder / "pod-logs"


def kubelet_config(settings: KubeletSettings, resolv_conf: Path) -> dict[str, Any]:
    """KubeletConfiguration: cgroup v1 through cgroupfs (these machines), the cluster's DNS,
    and no image garbage collection or disk eviction for images the node cannot pull again."""
    serving = settings.credentials.kubelet_serving
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        "address": settings.network.node_address,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(settings.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "clusterDomain": "cluster.local",
        "clusterDNS": [settings.network.dns_service_ip],
        "resolvConf": str(resolv_conf),
        "containerRuntimeEndpoint": settings.containerd_endpoint,
        "podLogsDir": str(settings.pod_logs_dir),
        "failSwapOn": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "volumePluginDir": str(settings.folder / "volume-plugins"),
    }


def kube_proxy_config(settings: KubeletSettings, kubeconfig: Path) -> dict[str, Any]:
    """KubeProxyConfiguration: iptables mode; conntrack left as the kernel has it (those sysctls
    are the machine's, not the node's); every Service packet masqueraded, so a pod reaching a
    Service backed by a pod on the same bridge gets its replies through the node."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": settings.network.cluster_cidr,
        "hostnameOverride": settings.node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "iptables": {"masqueradeAll": True},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
    }


def agent_kubeconfig(settings: KubeletSettings, user: str, pair: CertPair) -> Path:
    """A kubeconfig for one of the node's agents, with its client certificate."""
    return write_kubeconfig(
        settings.folder / f"{user}.kubeconfig",
        server=settings.server,
        ca_file=settings.ca_file,
        user=user,
        cert_file=pair.cert,
        key_file=pair.key,
    )


def start_kubelet(sandbox: NodeSandbox, tools: Tools, settings: KubeletSettings) -> ManagedProcess:
    settings.root_dir.mkdir(parents=True, exist_ok=True)
    resolv_conf = settings.folder / "resolv.conf"
    resolv_conf.write_text("# the kubelet node has no DNS server beyond the cluster's own\n")
    config = settings.folder / "kubelet-config.yaml"
    config.write_text(json.dumps(kubelet_config(settings, resolv_conf), indent=2))
    kubeconfig = agent_kubeconfig(settings, "kubelet", settings.credentials.kubelet_client)
    argv = [
        str(tools.path("kubelet")),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={settings.root_dir}",
        f"--hostname-override={settings.node_name}",
        f"--node-ip={settings.network.node_address}",
        "--v=1",
    ]
    return start_process(
        "kubelet", sandbox.command(argv), settings.folder.parent / "logs" / "kubelet.log"
    )


def start_kube_proxy(
    sandbox: NodeSandbox, tools: Tools, settings: KubeletSettings
) -> ManagedProcess:
    kubeconfig = agent_kubeconfig(settings, "kube-proxy", settings.credentials.kube_proxy)
    config = settings.folder / "kube-proxy-config.yaml"
    config.write_text(json.dumps(kube_proxy_config(settings, kubeconfig), indent=2))
    argv = [str(tools.path("kube-proxy")), f"--config={config}", "--v=1"]
    return start_process(
        "kube-proxy", sandbox.command(argv), settings.folder.parent / "logs" / "kube-proxy.log"
    )
