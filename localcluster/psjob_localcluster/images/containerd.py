"""Importing the archives into a containerd (the kubelet node's), once per image ID.

The node keeps its containerd root between runs, so an image containerd already holds under the
same reference and the same ID (config digest) is skipped: the multi-GB runtime image is unpacked
once per machine, not once per cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from psjob_localcluster.images.archives import BuiltImage

NAMESPACE = "k8s.io"
"""The namespace the CRI plugin (so the kubelet) reads images from."""
IMPORT_TIMEOUT = 1800.0
"""ctr reads a whole archive to import it: about 90 s for the 5.8 GB runtime image here."""


class CtrRunner(Protocol):
    """Runs ``ctr <args>`` against one containerd in the CRI namespace and returns its stdout
    (the kubelet node's ``Containerd`` is one, running it inside the node's namespaces)."""

    def ctr(self, *args: str, timeout: float = ...) -> str: ...


class CtrError(RuntimeError):
    """ctr failed; the message carries its output."""


@dataclass(frozen=True)
class Ctr:
    """``ctr`` on this machine against the containerd listening on ``address``."""

    address: Path
    command: tuple[str, ...] = ("ctr",)

    def ctr(self, *args: str, timeout: float = 600.0) -> str:
        argv = [*self.command, "--address", str(self.address), "--namespace", NAMESPACE, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise CtrError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-2000:]}")
        return done.stdout


def image_ids(containerd: CtrRunner, references: set[str]) -> dict[str, str]:
    """reference -> image ID (hex config digest) of those ``references`` containerd holds."""
    found = {}
    for line in containerd.ctr("images", "list").splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[0] in references:
            manifest = json.loads(containerd.ctr("content", "get", words[2]))
            found[words[0]] = str(manifest["config"]["digest"]).removeprefix("sha256:")
    return found


def import_images(
    containerd: CtrRunner, images: Iterable[BuiltImage], snapshotter: str = "overlayfs"
) -> list[BuiltImage]:
    """Import each image containerd lacks at its ID, unpacked for ``snapshotter``; return those."""
    wanted = list(images)
    present = image_ids(containerd, {image.reference for image in wanted})
    imported = []
    for image in wanted:
        if present.get(image.reference) == image.image_id:
            continue
        containerd.ctr(
            "images",
            "import",
            f"--snapshotter={snapshotter}",
            str(image.archive),
            timeout=IMPORT_TIMEOUT,
        )
        imported.append(image)
    return imported
