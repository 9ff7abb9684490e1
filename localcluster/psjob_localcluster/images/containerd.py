"""Importing the archives into a containerd (the kubelet node's), once per image ID.

The node keeps its containerd root between runs, so an image containerd already holds under the
same reference and the same ID (config digest) is skipped: the multi-GB runtime image is unpacked
once per machine, not once per cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from psjob_localcluster.images.archives import BuiltImage

NAMESPACE = "k8s.io"
"""The namespace the CRI plugin (so the kubelet) reads images from."""


class ContainerdImportError(RuntimeError):
    """ctr failed; the message carries its output."""


def _ctr(ctr: Path | str | Sequence[str], address: Path, *args: str) -> str:
    prefix = [str(ctr)] if isinstance(ctr, (str, Path)) else list(ctr)
    command = [*prefix, "--address", str(address), "--namespace", NAMESPACE, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ContainerdImportError(f"`{' '.join(command)}` failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def image_ids(
    ctr: Path | str | Sequence[str], address: Path, references: set[str]
) -> dict[str, str]:
    """reference -> image ID (hex config digest) of those ``references`` containerd holds."""
    found = {}
    for line in _ctr(ctr, address, "images", "list").splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[0] in references:
            manifest = json.loads(_ctr(ctr, address, "content", "get", words[2]))
            found[words[0]] = str(manifest["config"]["digest"]).removeprefix("sha256:")
    return found


def import_images(
    ctr: Path | str | Sequence[str],
    address: Path,
    images: Iterable[BuiltImage],
    snapshotter: str = "overlayfs",
) -> list[BuiltImage]:
    """Import each image containerd lacks at its ID, unpacked for ``snapshotter``; return those.

    ``ctr`` is the ctr binary or a command prefix (e.g. one that enters the node's namespaces);
    ``address`` is containerd's socket.
    """
    wanted = list(images)
    present = image_ids(ctr, address, {image.reference for image in wanted})
    imported = []
    for image in wanted:
        if present.get(image.reference) == image.image_id:
            continue
        _ctr(ctr, address, "images", "import", f"--snapshotter={snapshotter}", str(image.archive))
        imported.append(image)
    return imported
