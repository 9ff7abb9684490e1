"""Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback.

Everything lives under one root folder: certificates in ``pki/``, etcd data in ``etcd/``, one
log file per component in ``logs/`` and the admin kubeconfig ``admin.kubeconfig``. Ports are
picked free at start-up, so several clusters (parallel sessions on one machine) do not collide.
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from psjob_localcluster.kubeconfig import write_kubeconfig
from psjob_localcluster.pki import SERVICE_CLUSTER_IP_RANGE, ClusterPki, create_pki
from psjob_localcluster.procs import ManagedProcess, start_process
from psjob_localcluster.tools import Tools, require_tools

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOOPBACK = "127.0.0.1"


class ControlPlaneError(RuntimeError):
    """A component failed to start; the message carries its log tail."""


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port on ``address`` that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        data = path.read_bytes()[-200_000:]
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@dataclass
class ControlPlane:
    """A running control plane; ``stop()`` ends every process it started."""

    root: Path
    tools: Tools
    pki: ClusterPki
    api_port: int
    address: str = LOOPBACK
    """Where the API server listens and what it advertises: loopback for the process node, the
    machine's end of the kubelet node's link for a kubelet node (node/network.py)."""
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def serves_pod_network(self) -> bool:
        """Pods have routable addresses (a kubelet node), so Services get endpoints."""
        return self.address != LOOPBACK

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.admin.cert), str(self.pki.admin.key))
        return context

    def log_tails(self, lines: int = 30) -> str:
        """The tail of every log in the log folder, for a failing test's report."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            parts.append(f"===== {log.name} (last {lines} lines) =====\n{tail(log, lines)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the components in reverse start order (etcd last)."""
        for process in reversed(self.processes):
            process.stop(grace_seconds=5.0)

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise ControlPlaneError(
                    f"{process.name} exited with status {process.popen.returncode}; "
                    f"last lines of {process.log_path}:\n{tail(process.log_path, 40)}"
                )


def _component_kubeconfig(plane: ControlPlane, name: str, cert_pair_name: str) -> Path:
    pair = getattr(plane.pki, cert_pair_name)
    return write_kubeconfig(
        plane.root / f"{name}.kubeconfig",
        server=plane.server,
        ca_file=plane.pki.ca.cert,
        user=name,
        cert_file=pair.cert,
        key_file=pair.key,
    )


def _start_etcd(plane: ControlPlane) -> int:
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    plane.processes.append(
        start_process(
            "etcd",
            [
                str(plane.tools.path("etcd")),
                "--name=default",
                f"--data-dir={plane.root / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            plane.log_dir / "etcd.log",
        )
    )
    return client


def _start_apiserver(plane: ControlPlane, etcd_port: int) -> None:
    pki = plane.pki
    # the `kubernetes` Service's endpoint is the advertised address, which v1.37 refuses to
    # publish when it is loopback: the process node has no pod network to use it anyway
    endpoints = [] if plane.serves_pod_network else ["--endpoint-reconciler-type=none"]
    plane.processes.append(
        start_process(
            "kube-apiserver",
            [
                str(plane.tools.path("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={plane.address}",
                f"--advertise-address={plane.address}",
                *endpoints,
                f"--secure-port={plane.api_port}",
                f"--cert-dir={plane.root / 'apiserver-certs'}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
                f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
                f"--kubelet-certificate-authority={pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            plane.log_dir / "kube-apiserver.log",
        )
    )


def _start_controllers(plane: ControlPlane) -> tuple[int, int]:
    pki = plane.pki
    manager_port, scheduler_port = free_port(), free_port()
    manager_config = _component_kubeconfig(plane, "controller-manager", "controller_manager")
    # EndpointSlices refuse loopback addresses, and process-node pods have 127.B.x.y ones: there
    # the node agent serves the DNS records those controllers would feed
    controllers = (
        "*"
        if plane.serves_pod_network
        else "*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller"
    )
    plane.processes.append(
        start_process(
            "kube-controller-manager",
            [
                str(plane.tools.path("kube-controller-manager")),
                f"--kubeconfig={manager_config}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--controllers={controllers}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--bind-address=127.0.0.1",
                f"--secure-port={manager_port}",
                f"--cert-dir={plane.root / 'controller-manager-certs'}",
                "--profiling=false",
            ],
            plane.log_dir / "kube-controller-manager.log",
        )
    )
    scheduler_config = _component_kubeconfig(plane, "scheduler", "scheduler")
    plane.processes.append(
        start_process(
            "kube-scheduler",
            [
                str(plane.tools.path("kube-scheduler")),
                f"--kubeconfig={scheduler_config}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                f"--cert-dir={plane.root / 'scheduler-certs'}",
                "--profiling=false",
            ],
            plane.log_dir / "kube-scheduler.log",
        )
    )
    return manager_port, scheduler_port


def _get_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def _wait_for(
    plane: ControlPlane, what: str, url: str, context: ssl.SSLContext, deadline: float
) -> None:
    while not _get_ok(url, context):
        plane.check_alive()
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out waiting for {what} ({url})\n{plane.log_tails()}")
        time.sleep(0.1)


def launch_control_plane(
    root: Path, tools: Tools | None = None, address: str = LOOPBACK
) -> ControlPlane:
    """Make the certificates, start etcd and kube-apiserver on ``address``, write the admin
    kubeconfig; do not wait. Call ``finish_start`` next (the controllers need a ready API
    server)."""
    tools = tools or require_tools()
    root.mkdir(parents=True, exist_ok=True)
    pki = create_pki(root / "pki", api_address=address)
    plane = ControlPlane(root, tools, pki, free_port(address), address)
    try:
        _start_apiserver(plane, _start_etcd(plane))
        write_kubeconfig(
            plane.admin_kubeconfig,
            server=plane.server,
            ca_file=plane.pki.ca.cert,
            user="admin",
            cert_file=plane.pki.admin.cert,
            key_file=plane.pki.admin.key,
        )
    except BaseException:
        plane.stop()
        raise
    return plane


def finish_start(plane: ControlPlane, deadline: float) -> None:
    """Wait for the API server, start the controller manager and the scheduler, and wait until
    the cluster can run pods: both answer /healthz and the ``default`` ServiceAccount exists
    (pods need it to be admitted). Stops every process on failure."""
    try:
        admin = plane.admin_ssl_context()
        _wait_for(plane, "kube-apiserver", f"{plane.server}/readyz", admin, deadline)
        manager_port, scheduler_port = _start_controllers(plane)
        insecure = ssl._create_unverified_context()  # their serving certs are self-signed
        for name, port in (
            ("kube-controller-manager", manager_port),
            ("kube-scheduler", scheduler_port),
        ):
            _wait_for(plane, name, f"https://127.0.0.1:{port}/healthz", insecure, deadline)
        _wait_for(
            plane,
            "the default ServiceAccount",
            f"{plane.server}/api/v1/namespaces/default/serviceaccounts/default",
            admin,
            deadline,
        )
    except BaseException:
        plane.stop()
        raise


def start_control_plane(
    root: Path, tools: Tools | None = None, timeout: float = 90.0
) -> ControlPlane:
    """Start every component under ``root`` and wait until the cluster can run pods."""
    deadline = time.monotonic() + timeout
    plane = launch_control_plane(root, tools)
    finish_start(plane, deadline)
    return plane
