"""Images FROM scratch that hold one static binary: the pause and CoreDNS images."""

from __future__ import annotations

import json
from pathlib import Path

from psjob_localcluster.images.buildah import Buildah


def commit_binary_image(
    buildah: Buildah, binary: Path, *, entrypoint: str, user: str, reference: str
) -> None:
    """An image of ``binary`` at ``entrypoint``, run as ``user`` (file capabilities are kept)."""
    container = buildah.run("from", "scratch").strip()
    try:
        buildah.run("copy", container, str(binary), entrypoint)
        buildah.run("config", "--entrypoint", json.dumps([entrypoint]), "--user", user, container)
        buildah.run("commit", "--quiet", "--rm", container, reference)
    except BaseException:
        buildah.remove_container(container)
        raise
