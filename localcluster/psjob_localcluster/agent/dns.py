"""Cluster DNS for pods that run as local processes, through nss_wrapper hosts files.

Pod processes run with ``LD_PRELOAD=libnss_wrapper.so`` and ``NSS_WRAPPER_HOSTS`` naming their
own hosts file, so ``getaddrinfo`` answers cluster names from that file and falls back to the
machine's resolver for everything else; the machine's own configuration is never touched.
``NSS_WRAPPER_HOSTNAME`` makes ``gethostname()`` return the pod's hostname, which the file maps
to the pod's address, as in a real pod (gloo picks its listening address that way).

The records are what CoreDNS would serve from the EndpointSlices of each Service, computed here
from Services and pods directly: the API server refuses loopback addresses in EndpointSlices, so
with 127.B.x.y pod addresses there are none (the harness disables the endpoint controllers).
``<svc>.<ns>.svc`` lists the selected pods that are ready (all live ones with
``publishNotReadyAddresses``), and a selected pod with ``hostname`` + ``subdomain`` equal to the
service's name also gets ``<hostname>.<svc>.<ns>.svc``. Every name also exists with
``.cluster.local`` appended, and the shorter forms a pod's DNS search path would complete are
added for names in the pod's namespace. Each line is written twice, plain IPv4 and ``::ffff:``
IPv4-mapped, because torch's TCPStore resolves with AF_INET6 + AI_V4MAPPED and does not fall
back.

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


@dataclass(frozen=True)
class _Service:
    selector: tuple[tuple[str, str], ...]
    publish_not_ready: bool


@dataclass(frozen=True)
class _Pod:
    labels: tuple[tuple[str, str], ...]
    address: str
    ready: bool
    hostname: str | None
    subdomain: str | None


def _service_of(raw: dict[str, Any]) -> _Service | None:
    spec = raw.get("spec") or {}
    selector = spec.get("selector")
    if not selector or spec.get("type") == "ExternalName":
        return None  # no selector: its endpoints are managed by hand, not by pods
    return _Service(tuple(sorted(selector.items())), bool(spec.get("publishNotReadyAddresses")))


def _pod_of(raw: dict[str, Any]) -> _Pod | None:
    meta, spec, status = raw.get("metadata") or {}, raw.get("spec") or {}, raw.get("status") or {}
    address = status.get("podIP")
    if (
        not address
        or meta.get("deletionTimestamp")
        or status.get("phase") in ("Succeeded", "Failed")
    ):
        return None  # as the endpoint controller: no address, terminating or finished
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return _Pod(
        tuple(sorted((meta.get("labels") or {}).items())),
        address,
        ready,
        spec.get("hostname"),
        spec.get("subdomain"),
    )


class ClusterRecords:
    """Services and pods seen by the watches, and the DNS records they make."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, str], _Service] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._records: list[Record] = []
        self._lock = threading.Lock()

    def set_service(self, raw: dict[str, Any], deleted: bool = False) -> bool:
        """Store (or drop) a Service; True when the records changed."""
        return self._store(self._services, raw, None if deleted else _service_of(raw))

    def set_pod(self, raw: dict[str, Any], deleted: bool = False) -> bool:
        """Store (or drop) a pod; True when the records changed."""
        return self._store(self._pods, raw, None if deleted else _pod_of(raw))

    def _store(self, table: dict[tuple[str, str], Any], raw: dict[str, Any], value: Any) -> bool:
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            records = self._compute()
            changed = records != self._records
            self._records = records
            return changed

    def _compute(self) -> list[Record]:
        records = []
        for (namespace, service), spec in sorted(self._services.items()):
            wanted = set(spec.selector)
            for (pod_namespace, _), pod in sorted(self._pods.items()):
                if pod_namespace != namespace or not wanted <= set(pod.labels):
                    continue
                if not (pod.ready or spec.publish_not_ready):
                    continue
                records.append(Record(namespace, (service,), pod.address))
                if pod.hostname and pod.subdomain == service:
                    records.append(Record(namespace, (pod.hostname, service), pod.address))
        return records

    def all(self) -> list[Record]:
        with self._lock:
            return list(self._records)


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
    """The variables that route a process's name lookups through its hosts file (with
    ``NSS_WRAPPER_LIBRARY`` preloaded)."""
    return {
        "NSS_WRAPPER_HOSTS": str(hosts_file),
        "NSS_WRAPPER_HOSTNAME": pod.hostname,
    }
