"""The cluster DNS image ``localhost/psjob/coredns:<version>``: CoreDNS from its Go module.

The binary is ``go install``ed at the pinned version (CoreDNS's go.mod has no replace directives)
into a cache folder named after the version, once per machine, like the control plane's binaries
(psjob_localcluster.build): built under a temporary name and renamed when complete, under a file
lock. The image holds it alone, FROM scratch, as ``/coredns``, run as 65532 as upstream's image is.
Like upstream's, the binary carries the file capability ``cap_net_bind_service=ep`` so that the
non-root server can bind port 53: a pod must keep NET_BIND_SERVICE in its capabilities (upstream's
manifest drops ALL and adds NET_BIND_SERVICE), or the kernel refuses to execute the binary.
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.build import build_lock, go
from psjob_localcluster.images.buildah import Buildah, buildah_version
from psjob_localcluster.images.keys import JsonValue
from psjob_localcluster.images.scratch import commit_binary_image
from psjob_localcluster.tools import cache_root

COREDNS_MODULE = "github.com/coredns/coredns"
COREDNS_VERSION = "v1.15.0"
REFERENCE = f"localhost/psjob/coredns:{COREDNS_VERSION.removeprefix('v')}"
USER = "65532:65532"
LDFLAGS = "-s -w"

CAP_NET_BIND_SERVICE = 10
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
NET_BIND_SERVICE_XATTR = struct.pack(
    "<5I", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << CAP_NET_BIND_SERVICE, 0, 0, 0
)
"""``setcap cap_net_bind_service=ep`` as the kernel stores it (struct vfs_cap_data, revision 2)."""


def coredns_folder() -> Path:
    arch = platform.machine().lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
    return cache_root() / "coredns" / f"coredns-{COREDNS_VERSION}_linux-{arch}"


def ensure_coredns_binary() -> Path:
    """The pinned CoreDNS binary, built on first use (a few minutes on 2 cores)."""
    folder = coredns_folder()
    binary = folder / "coredns"
    if os.access(binary, os.X_OK):
        return binary
    with build_lock(folder):
        if os.access(binary, os.X_OK):
            return binary
        staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            go(
                "install",
                "-trimpath",
                "-ldflags",
                LDFLAGS,
                f"{COREDNS_MODULE}@{COREDNS_VERSION}",
                cwd=staging,
                env={"GOBIN": str(staging)},
            )
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return binary


@dataclass(frozen=True)
class CoreDnsImage:
    """The recipe (see archives.Recipe) of the CoreDNS image."""

    name: str = "coredns"
    reference: str = REFERENCE

    def inputs(self) -> dict[str, JsonValue]:
        return {
            "module": f"{COREDNS_MODULE}@{COREDNS_VERSION}",
            "ldflags": LDFLAGS,
            "capability": NET_BIND_SERVICE_XATTR.hex(),
            "user": USER,
            "buildah": buildah_version(),
        }

    def build(self, buildah: Buildah, workdir: Path) -> None:
        binary = workdir / "coredns"
        shutil.copy2(ensure_coredns_binary(), binary)
        os.setxattr(binary, "security.capability", NET_BIND_SERVICE_XATTR)
        commit_binary_image(
            buildah, binary, entrypoint="/coredns", user=USER, reference=self.reference
        )
