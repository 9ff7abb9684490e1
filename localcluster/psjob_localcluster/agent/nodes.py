"""Register Nodes and keep them Ready, as a kubelet does with its node status and Lease.

The node lifecycle controller in kube-controller-manager marks a node NotReady (and taints it)
when its Lease in ``kube-node-lease`` is not renewed within the grace period (40 s by default):
the agent renews every 10 s.
"""

from __future__ import annotations

import datetime as dt
import platform
import re
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from psjob_localcluster.tools import KUBERNETES_VERSION

LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
STATUS_EVERY_RENEWALS = 6
AGENT_LABEL = "psjob.dev/local-node-agent"
MERGE_PATCH = "application/merge-patch+json"
_DEFAULT_CAPACITY = {"cpu": "32", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
_RESOURCE_NAME = re.compile(r"^([a-z0-9.-]+/)?[a-z0-9][a-z0-9._-]*$")


def now() -> str:
    """RFC 3339 in UTC with seconds precision, as metav1.Time serializes."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """RFC 3339 with microseconds, as metav1.MicroTime (Lease renewTime) requires."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeSpec:
    """A node to register: its name, capacity and labels."""

    name: str
    capacity: dict[str, str] = field(default_factory=lambda: dict(_DEFAULT_CAPACITY))
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NodeSpec:
        """``NAME[:RESOURCE=QTY,...]``, e.g. ``gpu-0:cpu=8,memory=32Gi,nvidia.com/gpu=2``."""
        name, _, rest = text.partition(":")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
            raise ValueError(f"--node {text!r}: node name {name!r} is not a DNS-1123 name")
        capacity = dict(_DEFAULT_CAPACITY)
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not _RESOURCE_NAME.match(key) or not value:
                raise ValueError(
                    f"--node {text!r}: expected RESOURCE=QUANTITY items like cpu=8, got {item!r}"
                )
            capacity[key] = value
        return cls(name, capacity)


def _ready_conditions(since: str) -> list[dict[str, str]]:
    stamp = now()
    pressure = [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ]
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": reason,
            "message": "local node agent",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since,
        }
        for kind, reason in pressure
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "local node agent is posting ready status",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since,
        }
    )
    return conditions


def node_status(spec: NodeSpec, kubelet_port: int, since: str) -> dict[str, object]:
    arch = platform.machine().lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
    return {
        "capacity": spec.capacity,
        "allocatable": spec.capacity,
        "conditions": _ready_conditions(since),
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": spec.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "psjob local node agent",
            "containerRuntimeVersion": "local-process://1",
            "kubeletVersion": KUBERNETES_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": arch,
        },
    }


class NodeRegistrar:
    """Creates the nodes, posts their status and renews their Leases."""

    def __init__(self, api: client.ApiClient, nodes: list[NodeSpec], kubelet_port: int) -> None:
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.nodes = nodes
        self.kubelet_port = kubelet_port
        self.since = now()

    def register(self) -> None:
        arch = platform.machine().lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
        for spec in self.nodes:
            labels = {
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                AGENT_LABEL: "true",
                **spec.labels,
            }
            body = client.V1Node(metadata=client.V1ObjectMeta(name=spec.name, labels=labels))
            try:
                self.core.create_node(body)
            except ApiException as error:
                if error.status != 409:
                    raise
                self.core.patch_node(
                    spec.name, {"metadata": {"labels": labels}}, _content_type=MERGE_PATCH
                )
            self.post_status(spec)
            self.renew_lease(spec)

    def post_status(self, spec: NodeSpec) -> None:
        self.core.patch_node_status(
            spec.name,
            {"status": node_status(spec, self.kubelet_port, self.since)},
            _content_type=MERGE_PATCH,
        )

    def renew_lease(self, spec: NodeSpec) -> None:
        body = {
            "spec": {
                "holderIdentity": spec.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now_micro(),
            }
        }
        try:
            self.coordination.patch_namespaced_lease(
                spec.name, "kube-node-lease", body, _content_type=MERGE_PATCH
            )
        except ApiException as error:
            if error.status != 404:
                raise
            lease = client.V1Lease(
                metadata=client.V1ObjectMeta(name=spec.name, namespace="kube-node-lease"),
                spec=client.V1LeaseSpec(
                    holder_identity=spec.name, lease_duration_seconds=LEASE_SECONDS
                ),
            )
            self.coordination.create_namespaced_lease("kube-node-lease", lease)
            self.coordination.patch_namespaced_lease(
                spec.name, "kube-node-lease", body, _content_type=MERGE_PATCH
            )

    def heartbeat(self, post_status: bool) -> None:
        """Renew every Lease; with ``post_status`` also refresh the Ready condition's heartbeat
        time (a kubelet reports an unchanged status only every few minutes: Leases carry
        liveness)."""
        for spec in self.nodes:
            self.renew_lease(spec)
            if post_status:
                self.post_status(spec)
