"""The real Kueue manager against a local cluster, its webhooks reached over loopback TLS.

In a cluster Kueue runs as a pod behind the Service ``kueue-webhook-service``; the API server
calls its webhooks (and the CRDs' conversion webhook) through that Service, and Kueue's internal
certificate management issues the serving certificate for the Service's DNS name. Here the
manager is a process on the machine, and the API server must never send anything to a Service
address (no kube-proxy: such packets would leave the machine). So:

- the webhook configurations and the conversion webhooks point at ``https://127.0.0.1:<port>``
  (URL-based client configs) instead of the Service;
- the certificate Secret Kueue's internal certificate management reads is made beforehand, with
  a serving certificate for both the Service's name and 127.0.0.1, and its files are put in the
  manager's certificate folder, as the kubelet mounts the Secret into Kueue's pod. Kueue finds
  the certificate valid and keeps it; the API server, which trusts that CA through the
  caBundles, verifies the loopback address. (Turning internal certificate management off is not
  an option: the manager then reads its metrics certificate from a fixed /etc path.)
- only Kueue's own webhooks (kueue.x-k8s.io) are configured: the job integrations' webhooks
  would intercept every Pod and Job of the cluster.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from psjob_localcluster.cluster import RunningCluster
from psjob_localcluster.controlplane import free_port, tail
from psjob_localcluster.procs import ManagedProcess, start_process
from psjob_localcluster.tools import KueueTools, require_kueue
from psjob_localcluster.waiting import wait_for

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
SECRET = "kueue-webhook-server-cert"
CONFIGURATION_NAMES = {
    "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
    "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration",
}
"""The names Kueue's certificate management injects its CA into (from SERVICE's prefix)."""
CONVERTED_CRDS = (
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
)
"""The CRDs whose versions Kueue converts (config/components/crd/patches/webhook_in_*)."""
KUEUE_GROUP = "kueue.x-k8s.io"

Manifest = dict[str, Any]


class KueueError(RuntimeError):
    """Kueue did not start; the message holds the tail of its log."""


@dataclass(frozen=True)
class KueueCerts:
    ca: Path
    ca_key: Path
    cert: Path
    key: Path


@dataclass
class RunningKueue:
    process: ManagedProcess
    webhook_port: int

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def stop(self) -> None:
        self.process.stop(grace_seconds=10.0)


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise KueueError("the `openssl` command is missing: run `make system-deps`")
    done = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KueueError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def issue_certs(directory: Path) -> KueueCerts:
    """A CA as Kueue's certificate rotator makes one (RSA, PKCS#1, named kueue-ca) and a
    serving certificate for the webhook Service's DNS name and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = KueueCerts(*(directory / n for n in ("ca.crt", "ca.key", "tls.crt", "tls.key")))
    _openssl("genrsa", "-traditional", "-out", str(certs.ca_key), "2048")
    _openssl(
        "req", "-x509", "-new", "-key", str(certs.ca_key), "-subj", "/O=kueue/CN=kueue-ca",
        "-days", "3650", "-sha256", "-out", str(certs.ca),
        "-addext", "subjectAltName=DNS:kueue-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,digitalSignature,keyEncipherment",
    )  # fmt: skip
    _openssl("genrsa", "-traditional", "-out", str(certs.key), "2048")
    csr, extensions = directory / "tls.csr", directory / "tls.ext"
    _openssl("req", "-new", "-key", str(certs.key), "-subj", f"/CN={SERVICE}", "-out", str(csr))
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{SERVICE}.{NAMESPACE}.svc,IP:127.0.0.1\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(certs.ca), "-CAkey", str(certs.ca_key),
        "-set_serial", "2", "-days", "3650", "-sha256", "-extfile", str(extensions),
        "-out", str(certs.cert),
    )  # fmt: skip
    return certs


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def certificate_secret(certs: KueueCerts) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "data": {
            "ca.crt": _b64(certs.ca),
            "ca.key": _b64(certs.ca_key),
            "tls.crt": _b64(certs.cert),
            "tls.key": _b64(certs.key),
        },
    }


def loopback_crds(kueue: KueueTools, port: int, ca_bundle: str) -> list[Manifest]:
    """The release's CRDs; the converted ones call the manager on 127.0.0.1:`port`."""
    crds = []
    for path in sorted(kueue.crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["metadata"]["name"] in CONVERTED_CRDS:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/convert",
                        "caBundle": ca_bundle,
                    },
                    "conversionReviewVersions": ["v1"],
                },
            }
        crds.append(crd)
    return crds


def loopback_webhooks(kueue: KueueTools, port: int, ca_bundle: str) -> list[Manifest]:
    """Kueue's own webhooks (kueue.x-k8s.io objects only), called on 127.0.0.1:`port`."""
    configurations = []
    for document in yaml.safe_load_all(kueue.webhooks.read_text()):
        if not document:
            continue
        configuration = copy.deepcopy(document)
        configuration["metadata"] = {"name": CONFIGURATION_NAMES[configuration["kind"]]}
        webhooks = []
        for webhook in configuration["webhooks"]:
            groups = {g for rule in webhook.get("rules", []) for g in rule.get("apiGroups", [])}
            if groups != {KUEUE_GROUP}:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": ca_bundle,
            }
            webhooks.append(webhook)
        configuration["webhooks"] = webhooks
        configurations.append(configuration)
    return configurations


def manager_configuration(webhook_port: int, health_port: int, cert_dir: Path) -> Manifest:
    """Kueue's Configuration: loopback only, no leader election, no metrics endpoint, and only
    the batch/job integration (PSJobs are queued by the psjob operator, not by Kueue)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": SERVICE,
            "webhookSecretName": SECRET,
        },
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
    }


def _apply(cluster: RunningCluster, manifests: list[Manifest]) -> None:
    """Server-side apply: the Workload CRD is larger than client-side apply's annotation."""
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=psjob-localcluster",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        timeout=120,
    )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _webhook_answers(cluster: RunningCluster) -> bool:
    """The API server reaches the mutating webhook: a dry-run ResourceFlavor passes through it."""
    flavor = {
        "apiVersion": f"{KUEUE_GROUP}/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": "psjob-webhook-probe"},
    }
    done = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-",
        input_text=json.dumps(flavor), check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return False
    finalizers = json.loads(done.stdout)["metadata"].get("finalizers", [])
    return "kueue.x-k8s.io/resource-in-use" in finalizers


def start_kueue(
    cluster: RunningCluster, root: Path, kueue: KueueTools | None = None, timeout: float = 120.0
) -> RunningKueue:
    """Install Kueue's CRDs and webhooks into ``cluster`` and start its manager; return once
    the API server gets answers from its webhooks."""
    kueue = kueue or require_kueue()
    root.mkdir(parents=True, exist_ok=True)
    certs = issue_certs(root / "pki")
    ca_bundle = _b64(certs.ca)
    webhook_port, health_port = free_port(), free_port()
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    _apply(cluster, [namespace, certificate_secret(certs)])
    _apply(cluster, loopback_crds(kueue, webhook_port, ca_bundle))
    cluster.wait_established(*CONVERTED_CRDS)
    _apply(cluster, loopback_webhooks(kueue, webhook_port, ca_bundle))
    serving = root / "serving"
    serving.mkdir(exist_ok=True)
    for path in (certs.ca, certs.cert, certs.key):
        shutil.copyfile(path, serving / path.name)
    config = root / "kueue-config.yaml"
    config.write_text(yaml.safe_dump(manager_configuration(webhook_port, health_port, serving)))
    argv = [
        str(kueue.manager),
        f"--config={config}",
        "--feature-gates=VisibilityOnDemand=false",
        "--zap-log-level=2",
    ]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    process = start_process("kueue", argv, root / "kueue.log", env=env, cwd=root)
    running = RunningKueue(process, webhook_port)
    try:
        wait_for(lambda: _ready(health_port) or _exited(process), "Kueue's /readyz", timeout)
        wait_for(lambda: _webhook_answers(cluster) or _exited(process), "Kueue's webhooks", timeout)
    except (TimeoutError, KueueError) as error:
        running.stop()
        raise KueueError(f"{error}:\n{tail(process.log_path, 60)}") from None
    return running


def _exited(process: ManagedProcess) -> bool:
    if process.alive():
        return False
    raise KueueError(f"the Kueue manager exited ({process.popen.returncode})")
