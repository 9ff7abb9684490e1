"""A throw-away certificate authority for one local cluster, made with the openssl command.

Every cluster gets fresh keys: nothing secret is cached or committed. EC P-256 keys keep the
whole set under a second. The service-account key signs and verifies ServiceAccount tokens.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
_DAYS = "3650"


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPki:
    """Every credential a local cluster needs."""

    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    apiserver_kubelet_client: CertPair
    kubelet_serving: CertPair
    service_account_key: Path
    service_account_public_key: Path


def _openssl(*args: str, stdin: str | None = None) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the `openssl` command is missing: run `make system-deps`")
    done = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _new_key(path: Path) -> Path:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)
    return path


def _issue(
    ca: CertPair, directory: Path, name: str, subject: str, sans: tuple[str, ...] = ()
) -> CertPair:
    """A leaf certificate for client and server authentication, signed by ``ca``."""
    key = _new_key(directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    extensions = directory / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    extensions.write_text("\n".join(lines) + "\n")
    cert = directory / f"{name}.crt"
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-set_serial",
        str(secrets.randbits(63)),
        "-days",
        _DAYS,
        "-sha256",
        "-extfile",
        str(extensions),
        "-out",
        str(cert),
    )
    csr.unlink()
    extensions.unlink()
    return CertPair(cert, key)


def create_pki(directory: Path, api_address: str = "127.0.0.1") -> ClusterPki:
    """Write a CA and every certificate the control plane and the node agent use; the API
    server's certificate names ``api_address`` too when it listens on another address."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _new_key(directory / "ca.key")
    ca_cert = directory / "ca.crt"
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        str(ca_key),
        "-subj",
        "/CN=psjob-local-cluster-ca",
        "-days",
        _DAYS,
        "-sha256",
        "-out",
        str(ca_cert),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )
    ca = CertPair(ca_cert, ca_key)
    loopback = ("IP:127.0.0.1", "DNS:localhost")
    sa_key, sa_public = (
        _new_key(directory / "service-account.key"),
        directory / "service-account.pub",
    )
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_public))
    return ClusterPki(
        ca=ca,
        apiserver=_issue(
            ca,
            directory,
            "apiserver",
            "/CN=kube-apiserver",
            (
                *loopback,
                *((f"IP:{api_address}",) if api_address != "127.0.0.1" else ()),
                f"IP:{KUBERNETES_SERVICE_IP}",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ),
        ),
        admin=_issue(ca, directory, "admin", "/O=system:masters/CN=psjob-local-admin"),
        controller_manager=_issue(
            ca, directory, "controller-manager", "/CN=system:kube-controller-manager"
        ),
        scheduler=_issue(ca, directory, "scheduler", "/CN=system:kube-scheduler"),
        apiserver_kubelet_client=_issue(
            ca,
            directory,
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
        ),
        kubelet_serving=_issue(ca, directory, "kubelet", "/CN=psjob-local-node-agent", loopback),
        service_account_key=sa_key,
        service_account_public_key=sa_public,
    )


KUBE_ROUTER_USER = "system:kube-router"
"""The user kube-router's client certificate names; node/firewall.py binds its ClusterRole."""


@dataclass(frozen=True)
class KubeletNodePki:
    """The credentials of one kubelet node: its kubelet's and kube-proxy's client certificates
    (the Node authorizer and the bootstrap RBAC roles know these names), kube-router's (bound
    to its own ClusterRole, node/firewall.py) and the kubelet's serving certificate, which the
    API server verifies against the cluster CA."""

    kubelet_client: CertPair
    kubelet_serving: CertPair
    kube_proxy: CertPair
    kube_router: CertPair


def issue_kubelet_node_pki(pki: ClusterPki, node_name: str, node_ip: str) -> KubeletNodePki:
    """Certificates for a kubelet node named ``node_name`` at ``node_ip``, next to the CA."""
    directory = pki.ca.cert.parent
    return KubeletNodePki(
        kubelet_client=_issue(
            pki.ca, directory, f"{node_name}-client", f"/O=system:nodes/CN=system:node:{node_name}"
        ),
        kubelet_serving=_issue(
            pki.ca,
            directory,
            f"{node_name}-serving",
            f"/CN={node_name}",
            (f"IP:{node_ip}", f"DNS:{node_name}"),
        ),
        kube_proxy=_issue(pki.ca, directory, "kube-proxy", "/CN=system:kube-proxy"),
        kube_router=_issue(pki.ca, directory, "kube-router", f"/CN={KUBE_ROUTER_USER}"),
    )
