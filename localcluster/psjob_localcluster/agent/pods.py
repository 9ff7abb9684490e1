"""Run one pod's containers as local processes and report them like a kubelet.

Each pod has a worker thread that owns its processes and serializes everything that happens
to the pod: updates and deletion from the watch, process exits from waiter threads, restart
timers. Processes are started from that thread, which lives at least as long as they do (their
``setpriv --pdeathsig`` ties them to it), and each is reaped by a waiter thread, so an exit is
always reported and never left as a zombie.

What a container image would provide is not there: the command runs in the agent's Python
environment (the virtualenv's ``bin`` first on PATH), in the pod's folder when ``workingDir``
does not exist here. Volumes, probes, ``terminationMessagePath`` files, exec and port-forward
are not supported; a running process counts as ready.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from psjob_localcluster.agent.dns import (
    ClusterRecords,
    PodIdentity,
    dns_environment,
    render_hosts,
    write_atomically,
)
from psjob_localcluster.agent.envbuild import ContainerConfigError, PodFacts, build_env, expand
from psjob_localcluster.agent.ipam import LoopbackPool
from psjob_localcluster.agent.nodes import now
from psjob_localcluster.agent.podnet import network_environment
from psjob_localcluster.agent.status import (
    STRATEGIC_MERGE_PATCH,
    ConditionClock,
    ContainerRecord,
    exit_code_of,
    log_tail_message,
    pod_status_patch,
    running_state,
    terminated_state,
    waiting_state,
)
from psjob_localcluster.agent.tokens import wants_token, write_service_account_kubeconfig
from psjob_localcluster.procs import ManagedProcess, start_process

log = logging.getLogger("localcluster.agent")
CONFIG_RETRY_SECONDS = 2.0
BACKOFF_START_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
SHUTDOWN_GRACE_SECONDS = 3.0


@dataclass
class AgentContext:
    """What every pod worker shares."""

    core: client.CoreV1Api
    pool: LoopbackPool
    records: ClusterRecords
    state_dir: Path
    server: str
    ca_file: Path
    api_port: int
    allocatable: dict[str, dict[str, str]]
    """Per node name: its allocatable resources (for resourceFieldRef without limits)."""
    bind_shim: Path
    """The compiled podbind.c (see podnet.py)."""
    workers: dict[str, PodWorker] = field(default_factory=dict)
    """Per pod uid."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            for worker in self.workers.values():
                if worker.namespace == namespace and worker.name == name:
                    return worker
        return None


@dataclass
class _Container:
    spec: client.V1Container
    record: ContainerRecord
    process: ManagedProcess | None = None
    started_at: str = ""
    restart_at: float | None = None
    logs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _map_lookup(core: client.CoreV1Api, secret: bool) -> Any:
    def lookup(namespace: str, name: str) -> dict[str, str] | None:
        try:
            obj = (core.read_namespaced_secret if secret else core.read_namespaced_config_map)(
                name, namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {key: str(value) for key, value in (obj.data or {}).items()}

    return lookup


def _base_environment() -> dict[str, str]:
    """What the process inherits from the agent: the project's Python first on PATH."""
    python_bin = str(Path(sys.executable).parent)
    inherited = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {"PATH": f"{python_bin}:{inherited}"}
    for name in ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class PodWorker(threading.Thread):
    """Owns one pod: its address, hosts file, identity, processes and status."""

    def __init__(self, context: AgentContext, pod: client.V1Pod) -> None:
        assert pod.metadata is not None and pod.spec is not None
        super().__init__(name=f"pod-{pod.metadata.namespace}/{pod.metadata.name}", daemon=True)
        self.context = context
        self.pod = pod
        self.namespace: str = pod.metadata.namespace or "default"
        self.name: str = pod.metadata.name or ""
        self.uid: str = pod.metadata.uid or ""
        self.dir = context.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.init = [
            _Container(c, ContainerRecord(c.name, c.image or ""))
            for c in pod.spec.init_containers or []
        ]
        self.main = [
            _Container(c, ContainerRecord(c.name, c.image or "")) for c in pod.spec.containers
        ]
        self.main_started = False
        self.pod_ip: str | None = None
        self.start_time: str | None = None
        self.phase = "Pending"
        self.config_error: str | None = None
        self.clock = ConditionClock()
        self.hosts_file = self.dir / "hosts"
        self.finished = threading.Event()
        """Set when the pod object is gone and every process has been stopped."""

    @property
    def containers(self) -> list[_Container]:
        """Init containers, then the main ones."""
        return self.init + self.main

    # ----- inputs (any thread) -----
    def update(self, pod: client.V1Pod) -> None:
        self.events.put(("update", pod))

    def deleted(self, pod: client.V1Pod) -> None:
        self.events.put(("deleted", pod))

    def dns_changed(self) -> None:
        self.events.put(("dns", None))

    def shutdown(self) -> None:
        self.events.put(("shutdown", None))

    # ----- queries for the log server -----
    def container_logs(self, container: str) -> list[Path]:
        for item in self.containers:
            if item.record.name == container:
                return list(item.logs)
        raise KeyError(container)

    def container_running(self, container: str) -> bool:
        return any(c.record.name == container and c.record.running for c in self.containers)

    # ----- the worker loop -----
    def run(self) -> None:
        try:
            if self.pod.metadata is not None and self.pod.metadata.deletion_timestamp is not None:
                self._delete_object()  # deleted before it ever ran here
                return
            self._start()
            while True:
                try:
                    kind, payload = self.events.get(timeout=self._next_timer())
                except queue.Empty:
                    self._timers()
                    continue
                if kind == "update":
                    self.pod = payload
                    if payload.metadata.deletion_timestamp is not None:
                        self._terminate(self._grace(payload))
                        self._delete_object()
                        return
                    if self.phase == "Pending" and self.pod_ip is None:
                        self._start()
                elif kind == "exited":
                    self._exited(*payload)
                elif kind == "dns":
                    self._write_hosts()
                elif kind in ("deleted", "shutdown"):
                    self._terminate(SHUTDOWN_GRACE_SECONDS)
                    return
                self._timers()
        except Exception:
            log.exception("pod worker %s/%s failed", self.namespace, self.name)
            self._terminate(SHUTDOWN_GRACE_SECONDS)
        finally:
            self._cleanup()

    def _next_timer(self) -> float | None:
        due = [c.restart_at for c in self.containers if c.restart_at is not None]
        if self.config_error is not None:
            due.append(time.monotonic() + CONFIG_RETRY_SECONDS)
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _timers(self) -> None:
        if self.config_error is not None and self.pod_ip is not None:
            self._start_containers()
        for item in self.containers:
            if item.restart_at is not None and time.monotonic() >= item.restart_at:
                item.restart_at = None
                self._launch(item)
                self._report()

    # ----- start-up -----
    def _start(self) -> None:
        status = self.pod.status
        if status is not None and status.phase not in (None, "Pending"):
            self.phase = status.phase  # terminal or left over from an earlier agent
            if status.phase == "Running":
                self.phase = "Failed"
                self._report(
                    message="the local node agent restarted and lost this pod's processes",
                    reason="NodeAgentRestarted",
                )
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pod_ip = self.context.pool.allocate()
        self.start_time = now()
        self._write_hosts()
        self._start_containers()

    def _identity(self) -> PodIdentity:
        spec = self.pod.spec
        hostname = (spec.hostname if spec and spec.hostname else self.name)[:63]
        return PodIdentity(
            self.namespace, hostname, spec.subdomain if spec else None, self.pod_ip or "127.0.0.1"
        )

    def _write_hosts(self) -> None:
        if self.pod_ip is None:
            return
        write_atomically(
            self.hosts_file, render_hosts(self._identity(), self.context.records.all())
        )

    def _environment(
        self, container: client.V1Container, kubeconfig: Path | None
    ) -> dict[str, str]:
        identity = self._identity()
        base = _base_environment()
        base["HOSTNAME"] = identity.hostname
        base["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        base["KUBERNETES_SERVICE_PORT"] = str(self.context.api_port)
        if kubeconfig is not None:
            base["KUBECONFIG"] = str(kubeconfig)
        node = (self.pod.spec.node_name if self.pod.spec else None) or ""
        facts = PodFacts(self.pod_ip or "", "127.0.0.1", self.context.allocatable.get(node, {}))
        env = build_env(
            self.pod,
            container,
            facts,
            config_maps=_map_lookup(self.context.core, secret=False),
            secrets=_map_lookup(self.context.core, secret=True),
            base=base,
        )
        env.update(dns_environment(identity, self.hosts_file))
        env.update(network_environment(identity.address, self.context.bind_shim))
        return env

    def _start_containers(self) -> None:
        kubeconfig = None
        try:
            if wants_token(self.pod):
                kubeconfig = write_service_account_kubeconfig(
                    self.context.core,
                    self.pod,
                    self.dir / "kubeconfig",
                    server=self.context.server,
                    ca_file=self.context.ca_file,
                )
            prepared = [
                (item, self._environment(item.spec, kubeconfig)) for item in self.containers
            ]
        except (ContainerConfigError, ApiException) as error:
            message = (
                str(error)
                if isinstance(error, ContainerConfigError)
                else (f"cannot prepare the container: {error.status} {error.reason}")
            )
            if message != self.config_error:
                for item in self.containers:
                    item.record.state = waiting_state("CreateContainerConfigError", message)
                self._report()
            self.config_error = message
            return
        self.config_error = None
        for item, env in prepared:
            item.env = env
        self._advance()

    def _advance(self) -> None:
        """Run the init containers one after the other, each to success, then the main ones."""
        for item in self.init:
            if item.record.exit_code == 0:
                continue
            if item.process is None and item.restart_at is None:
                self._launch(item)
            self._report()
            return
        if not self.main_started:
            self.main_started = True
            for item in self.main:
                self._launch(item)
            if any(c.process is not None for c in self.main):
                self.phase = "Running"
        self._report()

    def _launch(self, item: _Container) -> None:
        env, spec = item.env, item.spec
        argv = [expand(a, env) for a in [*(spec.command or []), *(spec.args or [])]]
        if not spec.command:
            item.record.state = waiting_state(
                "CreateContainerError",
                "the local node agent cannot run an image's entrypoint: give the container a "
                "`command`",
            )
            return
        workdir = Path(spec.working_dir) if spec.working_dir else self.dir
        log_path = self.dir / spec.name / f"{item.record.restart_count}.log"
        try:
            process = start_process(
                f"{self.name}/{spec.name}",
                argv,
                log_path,
                env=env,
                cwd=workdir if workdir.is_dir() else self.dir,
            )
        except OSError as error:
            item.record.state = waiting_state("RunContainerError", f"{argv[0]}: {error}")
            return
        log.info(
            "%s/%s: container %s started, pid %d, address %s",
            self.namespace,
            self.name,
            spec.name,
            process.pid,
            self.pod_ip,
        )
        item.process, item.started_at = process, now()
        item.logs.append(log_path)
        item.record.container_id = f"local-process://{process.pid}"
        item.record.state = running_state(item.started_at)
        threading.Thread(
            target=self._wait, args=(item, process), daemon=True, name=f"wait-{process.pid}"
        ).start()

    def _wait(self, item: _Container, process: ManagedProcess) -> None:
        returncode = process.popen.wait()
        self.events.put(("exited", (item, process, returncode)))

    # ----- process exits -----
    def _exited(self, item: _Container, process: ManagedProcess, returncode: int) -> None:
        if item.process is not process:
            return  # already accounted for by _terminate
        process.signal_group(signal.SIGKILL)  # children the container left behind
        item.process = None
        code = exit_code_of(returncode)
        log.info(
            "%s/%s: container %s exited with %d", self.namespace, self.name, item.spec.name, code
        )
        message = ""
        if code != 0 and item.spec.termination_message_policy == "FallbackToLogsOnError":
            message = log_tail_message(item.logs[-1].read_bytes())
        item.record.state = terminated_state(
            code, item.started_at, now(), item.record.container_id, message
        )
        policy = (self.pod.spec.restart_policy if self.pod.spec else None) or "Always"
        is_init = item in self.init
        if is_init and code == 0:
            self._advance()
            return
        if is_init and policy == "Never":
            self.phase = "Failed"  # an init container failed: the main ones never run
        elif policy == "Always" or (policy != "Never" and code != 0):
            delay = min(BACKOFF_START_SECONDS * 2**item.record.restart_count, BACKOFF_MAX_SECONDS)
            item.record.last_state = item.record.state
            item.record.state = waiting_state(
                "CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container"
            )
            item.record.restart_count += 1
            item.restart_at = time.monotonic() + delay
        elif all(c.record.exit_code is not None for c in self.main):
            failed = any(c.record.exit_code != 0 for c in self.main)
            self.phase = "Failed" if failed else "Succeeded"
        self._report()

    # ----- deletion and shutdown -----
    @staticmethod
    def _grace(pod: client.V1Pod) -> float:
        grace = pod.metadata.deletion_grace_period_seconds if pod.metadata else None
        if grace is None and pod.spec is not None:
            grace = pod.spec.termination_grace_period_seconds
        return float(30 if grace is None else grace)

    def _terminate(self, grace: float) -> None:
        """SIGTERM every running container, SIGKILL what is left after ``grace`` seconds."""
        running = [c for c in self.containers if c.process is not None]
        for item in running:
            assert item.process is not None
            item.process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for item in running:
            process = item.process
            assert process is not None
            try:
                returncode = process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                process.signal_group(signal.SIGKILL)
                returncode = process.popen.wait()
            process.signal_group(signal.SIGKILL)
            item.process = None
            item.record.state = terminated_state(
                exit_code_of(returncode), item.started_at, now(), item.record.container_id
            )
        for item in self.containers:
            item.restart_at = None
        if running:
            self._report(quiet=True)

    def _delete_object(self) -> None:
        """The kubelet's last word: delete with grace 0 once every process has stopped."""
        log.info("%s/%s: deleting the pod object", self.namespace, self.name)
        try:
            self.context.core.delete_namespaced_pod(
                self.name,
                self.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)
                ),
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _cleanup(self) -> None:
        with self.context.lock:
            self.context.workers.pop(self.uid, None)
        if self.pod_ip is not None:
            self.context.pool.release(self.pod_ip)
        (self.dir / "kubeconfig").unlink(missing_ok=True)
        self.finished.set()

    # ----- status -----
    def _report(
        self, *, message: str | None = None, reason: str | None = None, quiet: bool = False
    ) -> None:
        patch = pod_status_patch(
            self.phase,
            [c.record for c in self.main],
            init_containers=[c.record for c in self.init],
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            message=message,
            reason=reason,
            clock=self.clock,
        )
        try:
            self.context.core.patch_namespaced_pod_status(
                self.name, self.namespace, patch, _content_type=STRATEGIC_MERGE_PATCH
            )
        except ApiException as error:
            if not quiet and error.status != 404:
                log.warning(
                    "status of %s/%s: %s %s", self.namespace, self.name, error.status, error.reason
                )
