"""Cluster DNS for pods that run as local processes, through nss_wrapper hosts files.

Pod processes run with ``LD_PRELOAD=libnss_wrapper.so`` and ``NSS_WRAPPER_HOSTS`` naming their
own hosts file, so ``getaddrinfo`` answers cluster names from that file and falls back to the
machine's resolver for everything else; the machine's own configuration is never touched.
``NSS_WRAPPER_HOSTNAME`` makes ``gethostname()`` return the pod's hostname, which the file maps
to the pod's address, as in a real pod (gloo picks its listening address that way).

The records come from EndpointSlices, as CoreDNS serves them: ``<svc>.<ns>.svc`` lists the
ready endpoints (all of them with ``publishNotReadyAddresses``), and an endpoint with a
hostname (a pod with ``hostname`` + ``subdomain`` matching a headless service) also gets
``<hostname>.<svc>.<ns>.svc``. Every name also exists with ``.cluster.local`` appended, and the
shorter forms a pod's DNS search path would complete are added for names in the pod's
namespace. Each line is written twice, plain IPv4 and ``::ffff:`` IPv4-mapped, because torch's
TCPStore resolves with AF_INET6 + AI_V4MAPPED and does not fall back.

Without kube-proxy a ClusterIP service's name resolves to its endpoints' pod addresses too,
so a client must use the target port, not the service port.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
NSS_WRAPPER_LIBRARY = "libnss_wrapper.so"


@dataclass(frozen=True)
class Record:
    """One name (without the cluster domain) and its address, in a namespace."""

    namespace: str
    relative: tuple[str, ...]
    """Labels before ``<ns>.svc``: ``(svc,)`` or ``(hostname, svc)``."""
    address: str


def records_from_slice(endpoint_slice: dict[str, Any]) -> list[Record]:
    """The DNS records an EndpointSlice (as a raw API dict) yields."""
    meta = endpoint_slice.get("metadata") or {}
    service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    if not service or endpoint_slice.get("addressType") != "IPv4":
        return []
    namespace = meta.get("namespace", "default")
    records = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        hostname = endpoint.get("hostname")
        for address in endpoint.get("addresses") or []:
            records.append(Record(namespace, (service,), address))
            if hostname:
                records.append(Record(namespace, (hostname, service), address))
    return records


class ClusterRecords:
    """The records of every EndpointSlice, keyed by slice, safe to update from a watch."""

    def __init__(self) -> None:
        self._by_slice: dict[tuple[str, str], list[Record]] = {}
        self._lock = threading.Lock()

    def set_slice(self, endpoint_slice: dict[str, Any], deleted: bool = False) -> bool:
        """Store (or drop) one slice's records; True when the records changed."""
        meta = endpoint_slice.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        new = [] if deleted else records_from_slice(endpoint_slice)
        with self._lock:
            old = self._by_slice.get(key, [])
            if new:
                self._by_slice[key] = new
            else:
                self._by_slice.pop(key, None)
            return old != new

    def all(self) -> list[Record]:
        with self._lock:
            return [r for records in self._by_slice.values() for r in records]


@dataclass(frozen=True)
class PodIdentity:
    """What a pod's own hosts lines need."""

    namespace: str
    hostname: str
    subdomain: str | None
    address: str

    @property
    def fqdn(self) -> str | None:
        if not self.subdomain:
            return None
        return f"{self.hostname}.{self.subdomain}.{self.namespace}.svc.{CLUSTER_DOMAIN}"


def _names(record: Record, own_namespace: str) -> list[str]:
    base = ".".join(record.relative)
    names = [f"{base}.{record.namespace}.svc.{CLUSTER_DOMAIN}", f"{base}.{record.namespace}.svc"]
    if record.namespace == own_namespace:  # what the pod's DNS search path would complete
        names += [f"{base}.{record.namespace}", base]
    return names


def render_hosts(pod: PodIdentity, records: Iterable[Record]) -> str:
    """The hosts file of one pod: localhost, the pod's own names, then the cluster's."""
    by_address: dict[str, list[str]] = defaultdict(list)
    own = [n for n in (pod.fqdn, pod.hostname) if n]
    by_address[pod.address].extend(own)
    for record in records:
        for name in _names(record, pod.namespace):
            if name not in by_address[record.address]:
                by_address[record.address].append(name)
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    for address, names in by_address.items():
        # one name per line: several lines may carry the same name (a service's endpoints)
        for name in names:
            lines += [f"{address} {name}", f"::ffff:{address} {name}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace the file in one step; nss_wrapper reloads a hosts file whose inode changed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def dns_environment(pod: PodIdentity, hosts_file: Path) -> dict[str, str]:
    """The variables that route a process's name lookups through its hosts file."""
    return {
        "LD_PRELOAD": NSS_WRAPPER_LIBRARY,
        "NSS_WRAPPER_HOSTS": str(hosts_file),
        "NSS_WRAPPER_HOSTNAME": pod.hostname,
    }
