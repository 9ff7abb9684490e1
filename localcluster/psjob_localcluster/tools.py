"""Where the pinned control-plane binaries live, and which versions they are.

The binaries are built once per machine by ``make cluster-tools``
(``tests/cluster/build_tools.py``) into a cache folder outside the checkout, so that every
clone on the machine, CI's fresh clone included, reuses them. The folder name is derived from
the versions below: changing a version selects a new folder and triggers one new build.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
"""The k8s.io/kubernetes release whose kube-apiserver, controllers, scheduler and kubectl we run."""

ETCD_VERSION = "v3.7.0"
"""go.etcd.io/etcd/server/v3 as required by KUBERNETES_VERSION's go.mod (the build checks this)."""

HELM_VERSION = "v3.22.0"
"""helm.sh/helm/v3 release."""

KUEUE_VERSION = "v0.17.0"
"""sigs.k8s.io/kueue release whose manager the Kueue tests run (docs/kueue.md). It builds from its
own module graph: its controller-runtime does not compile against KUBERNETES_VERSION's client-go."""

KUBE_ROUTER_VERSION = "v2.10.0"
"""github.com/cloudnativelabs/kube-router/v2 release that enforces NetworkPolicies on the kubelet
node (firewall only). It builds from its own module (kuberouter/go.mod, pinned by go.sum)."""

KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)
"""Built from k8s.io/kubernetes; kubelet and kube-proxy run the kubelet node (docs/cluster.md)."""
ALL_COMMANDS = (*KUBE_COMMANDS, "etcd", "helm")


def cache_root() -> Path:
    """``$PSJOB_CACHE_DIR``, else ``$XDG_CACHE_HOME/psjob``, else ``~/.cache/psjob``."""
    explicit = os.environ.get("PSJOB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "psjob"


def _platform() -> str:
    arch = platform.machine().lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
    return f"linux-{arch}"


def tools_key() -> str:
    """The cache folder name: every pinned version plus the platform."""
    return f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_helm-{HELM_VERSION}_{_platform()}"


def kueue_key() -> str:
    """The Kueue cache folder name: its version plus the platform."""
    return f"kueue-{KUEUE_VERSION}_{_platform()}"


def kube_router_key() -> str:
    """The kube-router cache folder name: its version, a digest of its module, the platform."""
    module = Path(__file__).resolve().parent / "kuberouter"
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((module / name).read_bytes())
    return f"kube-router-{KUBE_ROUTER_VERSION}-{digest.hexdigest()[:12]}_{_platform()}"


class ToolsMissingError(RuntimeError):
    """The pinned binaries have not been built on this machine yet."""


@dataclass(frozen=True)
class Tools:
    """Paths of the pinned binaries in one cache folder."""

    bin_dir: Path

    def path(self, command: str) -> Path:
        """The absolute path of ``command`` (one of ALL_COMMANDS)."""
        if command not in ALL_COMMANDS:
            raise ValueError(f"unknown tool {command!r}; known: {', '.join(ALL_COMMANDS)}")
        return self.bin_dir / command

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    def missing(self) -> list[str]:
        """The commands that are not (yet) in the folder."""
        return [c for c in ALL_COMMANDS if not os.access(self.bin_dir / c, os.X_OK)]


def default_tools() -> Tools:
    """The tools for the pinned versions in the cache folder (they may not exist yet)."""
    return Tools(cache_root() / "cluster-tools" / tools_key() / "bin")


def require_tools() -> Tools:
    """The pinned tools, or a clear error that says how to build them."""
    tools = default_tools()
    missing = tools.missing()
    if missing:
        raise ToolsMissingError(
            f"control-plane binaries missing in {tools.bin_dir}: {', '.join(missing)}. "
            "Build them with `make cluster-tools` (about 7 minutes once per machine; "
            "PSJOB_CACHE_DIR or XDG_CACHE_HOME choose the cache folder)."
        )
    return tools


@dataclass(frozen=True)
class KueueTools:
    """The Kueue manager and the manifests of the same release, in one cache folder."""

    root: Path

    @property
    def manager(self) -> Path:
        return self.root / "bin" / "kueue"

    @property
    def crd_dir(self) -> Path:
        """The release's CRDs (config/components/crd/bases)."""
        return self.root / "config" / "crd"

    @property
    def webhooks(self) -> Path:
        """The release's webhook configurations (config/components/webhook/manifests.yaml)."""
        return self.root / "config" / "webhooks.yaml"

    def complete(self) -> bool:
        return os.access(self.manager, os.X_OK) and self.webhooks.is_file()


def default_kueue() -> KueueTools:
    """Kueue for the pinned version in the cache folder (it may not be built yet)."""
    return KueueTools(cache_root() / "kueue" / kueue_key())


def require_kueue() -> KueueTools:
    """The pinned Kueue, or a clear error that says how to build it."""
    kueue = default_kueue()
    if not kueue.complete():
        raise ToolsMissingError(
            f"the Kueue manager {KUEUE_VERSION} is missing in {kueue.root}. Build it with "
            "`make cluster-tools` (once per machine, beside the control plane)."
        )
    return kueue


@dataclass(frozen=True)
class KubeRouterTools:
    """kube-router, built into its own cache folder."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "kube-router"

    def complete(self) -> bool:
        return os.access(self.binary, os.X_OK)


def default_kube_router() -> KubeRouterTools:
    """kube-router for the pinned module in the cache folder (it may not be built yet)."""
    return KubeRouterTools(cache_root() / "kube-router" / kube_router_key())


def require_kube_router() -> KubeRouterTools:
    """kube-router, or a clear error that says how to build it."""
    kube_router = default_kube_router()
    if not kube_router.complete():
        raise ToolsMissingError(
            f"kube-router missing in {kube_router.root}: build it with `make cluster-tools`"
        )
    return kube_router
