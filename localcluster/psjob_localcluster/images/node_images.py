"""Every image the kubelet node runs, built or reused: ``ensure_node_images()``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.images.archives import BuiltImage, ImageCache
from psjob_localcluster.images.base import DebianPythonBase
from psjob_localcluster.images.coredns import CoreDnsImage
from psjob_localcluster.images.dockerfiles import DockerfileImage
from psjob_localcluster.images.pause import PauseImage
from psjob_localcluster.tools import cache_root

REPOSITORY = Path(__file__).resolve().parents[3]
"""The checkout this (editable) package lives in: the Dockerfiles and their build context."""
OPERATOR_IMAGE = "ghcr.io/psjob/operator"
RUNTIME_IMAGE = "ghcr.io/psjob/runtime"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.M)


@dataclass(frozen=True)
class NodeImages:
    """The archives of the node's images; ``base`` is only the others' starting point."""

    base: BuiltImage
    pause: BuiltImage
    coredns: BuiltImage
    operator: BuiltImage
    runtime: BuiltImage

    def all(self) -> tuple[BuiltImage, ...]:
        return (self.base, self.pause, self.coredns, self.operator, self.runtime)

    def for_node(self) -> tuple[BuiltImage, ...]:
        """What the node's containerd needs (the base is never run)."""
        return (self.pause, self.coredns, self.operator, self.runtime)


def psjob_version(repository: Path) -> str:
    """The operator package's version: the tag the chart and the examples expect."""
    text = (repository / "operator" / "psjob_operator" / "__init__.py").read_text()
    found = VERSION_LINE.search(text)
    if found is None:
        raise ValueError("no __version__ line in operator/psjob_operator/__init__.py")
    return found.group(1)


def default_cache() -> ImageCache:
    return ImageCache(cache_root() / "images")


def ensure_node_images(
    repository: Path = REPOSITORY, cache: ImageCache | None = None
) -> NodeImages:
    """Build what is missing or out of date, reuse the rest (seconds when nothing changed)."""
    if not (repository / "images" / "operator" / "Dockerfile").is_file():
        raise FileNotFoundError(f"{repository} is not a psjob checkout (no images/operator)")
    cache = cache or default_cache()
    version = psjob_version(repository)
    pause = cache.ensure(PauseImage())
    coredns = cache.ensure(CoreDnsImage())
    base = cache.ensure(DebianPythonBase.from_machine())
    operator = cache.ensure(
        DockerfileImage("operator", f"{OPERATOR_IMAGE}:{version}", repository, base)
    )
    runtime = cache.ensure(
        DockerfileImage(
            "runtime",
            f"{RUNTIME_IMAGE}:{version}",
            repository,
            base,
            {"TORCH_INDEX_URL": ""},
        )
    )
    return NodeImages(base, pause, coredns, operator, runtime)
