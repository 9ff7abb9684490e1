"""The node agent: plays the kubelet for the pods the scheduler binds to its nodes.

It registers the nodes, renews their Leases, serves container logs, watches pods bound to its
nodes (one worker thread per pod, see ``pods.py``) and EndpointSlices (for the pods' hosts
files, see ``dns.py``). In *no-run* mode it starts no process: a bound pod is marked Running
with an address at once, and a deleted one is released at once, which is what scale
benchmarks of a controller need.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from psjob_localcluster.agent.dns import NSS_WRAPPER_LIBRARY, ClusterRecords
from psjob_localcluster.agent.ipam import LoopbackPool
from psjob_localcluster.agent.logserver import LogServer
from psjob_localcluster.agent.nodes import (
    RENEW_SECONDS,
    STATUS_EVERY_RENEWALS,
    NodeRegistrar,
    NodeSpec,
    now,
)
from psjob_localcluster.agent.podnet import build_bind_shim
from psjob_localcluster.agent.pods import SHUTDOWN_GRACE_SECONDS, AgentContext, PodWorker
from psjob_localcluster.agent.status import (
    STRATEGIC_MERGE_PATCH,
    ContainerRecord,
    pod_status_patch,
    running_state,
)
from psjob_localcluster.agent.watch import watch_forever
from psjob_localcluster.kube import client_from_kubeconfig

log = logging.getLogger("localcluster.agent")
REGISTER_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to know, from the command line."""

    kubeconfig: Path
    state_dir: Path
    ca_file: Path
    serving_cert: Path
    serving_key: Path
    nodes: tuple[NodeSpec, ...]
    no_run: bool = False
    loopback_block: int | None = None


def require_nss_wrapper() -> None:
    """Fail early, naming the fix, when the dynamic loader cannot preload nss_wrapper."""
    probe = subprocess.run(
        ["true"],
        env={"LD_PRELOAD": NSS_WRAPPER_LIBRARY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or NSS_WRAPPER_LIBRARY in probe.stderr:
        raise RuntimeError(
            f"{NSS_WRAPPER_LIBRARY} cannot be preloaded (pods resolve cluster names through it): "
            "run `make system-deps` (Debian package libnss-wrapper)"
        )


class NodeAgent:
    """Start with ``start()``, stop every pod process with ``stop()``."""

    def __init__(self, agent_config: AgentConfig) -> None:
        self.config = agent_config
        self.api = client_from_kubeconfig(agent_config.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        server = self.api.configuration.host
        self.context = AgentContext(
            core=self.core,
            pool=LoopbackPool(agent_config.loopback_block),
            records=ClusterRecords(),
            state_dir=agent_config.state_dir,
            server=server,
            ca_file=agent_config.ca_file,
            api_port=int(server.rsplit(":", 1)[1]),
            allocatable={n.name: n.capacity for n in agent_config.nodes},
            bind_shim=agent_config.state_dir / "libpodbind.so",
        )
        self.node_names = {n.name for n in agent_config.nodes}
        self.stopping = threading.Event()
        self.log_server = LogServer(
            self.context.find,
            cert=agent_config.serving_cert,
            key=agent_config.serving_key,
            client_ca=agent_config.ca_file,
        )
        self.registrar = NodeRegistrar(self.api, list(agent_config.nodes), self.log_server.port)
        self._no_run_addresses: dict[str, str] = {}

    def start(self) -> None:
        if not self.config.no_run:
            require_nss_wrapper()
            build_bind_shim(self.context.bind_shim)
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_server.start()
        self._register(timeout=REGISTER_TIMEOUT_SECONDS)
        self._thread(self._heartbeat, "heartbeat")
        if not self.config.no_run:
            self._thread(
                lambda: watch_forever(
                    self.core.list_service_for_all_namespaces, self._on_service, self.stopping
                ),
                "watch-services",
            )
        pods = self.core.list_pod_for_all_namespaces
        self._thread(lambda: watch_forever(pods, self._on_pod, self.stopping), "watch-pods")
        log.info(
            "node agent ready: nodes %s, pod addresses 127.%d.0.0/16, logs on port %d%s",
            ", ".join(sorted(self.node_names)),
            self.context.pool.block,
            self.log_server.port,
            " (no-run mode)" if self.config.no_run else "",
        )

    def stop(self) -> None:
        """Stop every pod process (SIGTERM, a short grace, SIGKILL) and the servers."""
        self.stopping.set()
        with self.context.lock:
            workers = list(self.context.workers.values())
        for worker in workers:
            worker.shutdown()
        for worker in workers:
            worker.finished.wait(SHUTDOWN_GRACE_SECONDS + 2.0)
        self.log_server.stop()

    def _register(self, timeout: float) -> None:
        """Register the nodes, retrying while the API server is still starting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.registrar.register()
                return
            except Exception as error:  # connection refused, 5xx, namespace not there yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot register the nodes: {error}") from error
                time.sleep(0.2)

    def _thread(self, target: Any, name: str) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    def _heartbeat(self) -> None:
        beats = 0
        while not self.stopping.wait(RENEW_SECONDS):
            beats += 1
            try:
                self.registrar.heartbeat(post_status=beats % STATUS_EVERY_RENEWALS == 0)
            except Exception:
                log.exception("node heartbeat failed")

    def _on_service(self, event: str, raw: dict[str, Any]) -> None:
        if self.context.records.set_service(raw, deleted=event == "DELETED"):
            self._dns_changed()

    def _dns_changed(self) -> None:
        with self.context.lock:
            workers = list(self.context.workers.values())
        for worker in workers:
            worker.dns_changed()

    def _on_pod(self, event: str, raw: dict[str, Any]) -> None:
        if (raw.get("spec") or {}).get("nodeName") not in self.node_names:
            return
        if self.config.no_run:
            self._on_pod_no_run(event, raw)
            return
        if self.context.records.set_pod(raw, deleted=event == "DELETED"):
            self._dns_changed()
        pod = client.V1Pod.from_dict(raw)
        assert pod is not None and pod.metadata is not None
        uid = pod.metadata.uid or ""
        with self.context.lock:
            worker = self.context.workers.get(uid)
            if worker is None and event != "DELETED" and not self.stopping.is_set():
                worker = PodWorker(self.context, pod)
                self.context.workers[uid] = worker
                worker.start()
                return
        if worker is not None:
            if event == "DELETED":
                worker.deleted(pod)
            else:
                worker.update(pod)

    def _on_pod_no_run(self, event: str, raw: dict[str, Any]) -> None:
        meta, status = raw["metadata"], raw.get("status") or {}
        uid, name, namespace = meta["uid"], meta["name"], meta["namespace"]
        try:
            if event == "DELETED" or meta.get("deletionTimestamp"):
                address = self._no_run_addresses.pop(uid, None)
                if address is not None:
                    self.context.pool.release(address)
                if event != "DELETED":
                    self.core.delete_namespaced_pod(
                        name,
                        namespace,
                        body=client.V1DeleteOptions(
                            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                        ),
                    )
            elif uid not in self._no_run_addresses and status.get("phase") in (None, "Pending"):
                address = self.context.pool.allocate()
                self._no_run_addresses[uid] = address
                started = now()
                records = [
                    ContainerRecord(
                        c["name"],
                        c.get("image", ""),
                        running_state(started),
                        container_id=f"no-run://{uid}/{c['name']}",
                    )
                    for c in raw["spec"]["containers"]
                ]
                patch = pod_status_patch("Running", records, pod_ip=address, start_time=started)
                self.core.patch_namespaced_pod_status(
                    name, namespace, patch, _content_type=STRATEGIC_MERGE_PATCH
                )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("no-run pod %s/%s: %s %s", namespace, name, error.status, error.reason)
