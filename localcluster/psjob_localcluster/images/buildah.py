"""buildah with a storage of its own: images are built daemonless, never in the machine's store.

Every call passes ``--root``/``--runroot``/``--storage-driver``, so nothing lands in
/var/lib/containers. The root (layers, images, the ``--layers`` build cache) lives in the psjob
cache and survives between runs; the runroot holds mount counts and locks, which must not survive
a reboot, so it lives on /run (a tmpfs) as containers/storage expects.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.images.keys import tool_version

STORAGE_DRIVER = "overlay"
"""Checked here: overlay works as root on these machines (vfs copies every layer in full)."""


class BuildahError(RuntimeError):
    """A buildah command failed; the message carries its output's tail."""


@dataclass(frozen=True)
class Buildah:
    """One buildah storage: ``root`` persistent, ``runroot`` per boot."""

    root: Path
    runroot: Path
    driver: str = STORAGE_DRIVER

    @classmethod
    def with_storage(cls, root: Path) -> Buildah:
        """Storage under ``root``, with its runroot under /run named after ``root``."""
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        return cls(root=root, runroot=Path("/run/psjob-buildah") / tag)

    def command(self, *args: str) -> list[str]:
        exe = shutil.which("buildah")
        if exe is None:
            raise BuildahError("buildah not found: run `make node-deps`")
        storage = ["--root", str(self.root), "--runroot", str(self.runroot)]
        return [exe, *storage, "--storage-driver", self.driver, *args]

    def run(self, *args: str, quiet: bool = True) -> str:
        """Run one buildah command; ``quiet=False`` streams its output (long builds)."""
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            self.command(*args),
            text=True,
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.PIPE if quiet else None,
            env={**os.environ, "BUILDAH_ISOLATION": "oci"},
            check=False,
        )
        if done.returncode != 0:
            detail = (done.stderr or "").strip()[-3000:] if quiet else "see the output above"
            raise BuildahError(f"`buildah {' '.join(args)}` failed ({done.returncode}): {detail}")
        return done.stdout or ""

    def remove_container(self, container: str) -> None:
        """Best effort, on the way out of a failed build: the original error matters more."""
        subprocess.run(self.command("rm", container), capture_output=True, check=False)

    def image_id(self, reference: str) -> str | None:
        """The ID (config digest, hex) of a local image, or None when the store lacks it."""
        found = subprocess.run(
            self.command("inspect", "--type", "image", "--format", "{{.FromImageID}}", reference),
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip() or None if found.returncode == 0 else None

    def push_docker_archive(self, reference: str, archive: Path) -> None:
        """A docker-archive tagged ``reference``: what ``ctr images import`` names correctly."""
        archive.unlink(missing_ok=True)
        self.run("push", "--quiet", reference, f"docker-archive:{archive}:{reference}")

    def load_docker_archive(self, archive: Path) -> None:
        """Put an exported image back into the store, under the tag the archive carries."""
        self.run("pull", "--quiet", f"docker-archive:{archive}")


def buildah_version() -> str:
    """The builder's version, part of every key: another buildah may build another image."""
    return tool_version("buildah", BuildahError("buildah not found: run `make node-deps`"))
