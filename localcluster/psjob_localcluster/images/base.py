"""The base image: Debian bookworm's python3.11 from debootstrap, standing in for python:3.11-slim.

The Dockerfiles build ``FROM ${PYTHON_IMAGE}``; without a registry, that image is bootstrapped
here from the machine's apt mirror and trimmed to behave as the official slim image does for
them: ``python``, ``pip`` and ``python -m venv`` work, ``pip install`` into the system Python is
allowed (PEP 668's EXTERNALLY-MANAGED marker is removed, as the official image has none),
``useradd`` exists, PATH and LANG are set, and no apt lists, package caches or docs are kept.
Debian's python3 is 3.11.2 with pip 23.0.1; the packages are whatever the mirror serves when the
image is built (the key names the mirror and the package list, not the package versions).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.images.aptsources import debian_mirror
from psjob_localcluster.images.buildah import Buildah, buildah_version
from psjob_localcluster.images.keys import JsonValue, tool_version
from psjob_localcluster.images.mounts import unmount_under

REFERENCE = "localhost/psjob/python:3.11-bookworm"
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
    "passwd",
)
REMOVED = (
    "usr/lib/python3*/EXTERNALLY-MANAGED",
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/debconf/*-old",
    "var/log/*.log",
    "var/log/apt/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "dev/*",
    "etc/hostname",
)
"""Globs deleted from the rootfs; /dev is the runtime's to fill, the hostname the build host's."""

DPKG_EXCLUDES = """\
# As Debian's slim images: later `apt-get install`s in a Dockerfile keep the image small too.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
"""
ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
)
"""PATH must be set: the operator Dockerfile's ``ENV PATH=/opt/psjob/bin:$PATH`` extends it."""
CMD = '["python3"]'


class DebootstrapError(RuntimeError):
    """debootstrap failed or is missing; the message says which."""


def debootstrap_version() -> str:
    missing = DebootstrapError("debootstrap not found: run `make node-deps`")
    return tool_version("debootstrap", missing)


@dataclass(frozen=True)
class DebianPythonBase:
    """The recipe (see archives.Recipe) of ``localhost/psjob/python:3.11-bookworm``."""

    mirror: str
    name: str = "base"
    reference: str = REFERENCE

    @classmethod
    def from_machine(cls) -> DebianPythonBase:
        return cls(mirror=debian_mirror(SUITE))

    def inputs(self) -> dict[str, JsonValue]:
        return {
            "suite": SUITE,
            "variant": VARIANT,
            "packages": list(PACKAGES),
            "mirror": self.mirror,
            "arch": platform.machine(),
            "removed": list(REMOVED),
            "dpkg_excludes": DPKG_EXCLUDES,
            "env": list(ENV),
            "cmd": CMD,
            "debootstrap": debootstrap_version(),
            "buildah": buildah_version(),
        }

    def build(self, buildah: Buildah, workdir: Path) -> None:
        rootfs = workdir / "rootfs"
        bootstrap(rootfs, self.mirror)
        slim_down(rootfs)
        tarball = workdir / "rootfs.tar"
        subprocess.run(
            [
                "tar",
                "-C",
                str(rootfs),
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-cf",
                str(tarball),
                ".",
            ],
            check=True,
        )
        shutil.rmtree(rootfs)
        container = buildah.run("from", "scratch").strip()
        try:
            buildah.run("add", container, str(tarball), "/")
            env = [arg for value in ENV for arg in ("--env", value)]
            buildah.run("config", *env, "--cmd", CMD, container)
            buildah.run("commit", "--quiet", "--rm", container, self.reference)
        except BaseException:
            buildah.remove_container(container)
            raise


def bootstrap(rootfs: Path, mirror: str) -> None:
    """debootstrap into ``rootfs``; whatever it leaves mounted there is unmounted, even on error."""
    exe = shutil.which("debootstrap")
    if exe is None:
        raise DebootstrapError("debootstrap not found: run `make node-deps`")
    command = [exe, f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE]
    try:
        done = subprocess.run(
            [*command, str(rootfs), mirror], capture_output=True, text=True, check=False
        )
    finally:
        unmount_under(rootfs)
    if done.returncode != 0:
        log = rootfs / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-3000:] if log.is_file() else done.stderr[-3000:]
        raise DebootstrapError(f"debootstrap {SUITE} from {mirror} failed: {detail}")


def slim_down(rootfs: Path) -> None:
    for pattern in REMOVED:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (rootfs / "etc/dpkg/dpkg.cfg.d/psjob-slim").write_text(DPKG_EXCLUDES)
    for doc in (rootfs / "usr/share/doc").glob("*/*"):
        if doc.name != "copyright":
            shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()
    (rootfs / "etc/resolv.conf").write_text("")  # the runtime mounts the pod's over it
