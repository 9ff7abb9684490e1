"""The image cache: one docker-archive per image, named by the key of its inputs.

``ensure`` returns the archive of a recipe's current key, building it only when no finished
archive exists. An archive counts as finished once its record (a small JSON file) is written, and
both are written under temporary names and renamed, under a per-image file lock: parallel runs
build once and an interrupted build never looks finished. Archives of other keys are deleted once
the new one is complete, so each image has one archive on disk (the runtime's is several GB).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from psjob_localcluster.build import build_lock
from psjob_localcluster.images.buildah import Buildah
from psjob_localcluster.images.keys import JsonValue, input_key


class Recipe(Protocol):
    """How to build one image into a buildah store, and what the result depends on."""

    @property
    def name(self) -> str:
        """Short name: the archive's file name prefix (``base``, ``pause``, ...)."""

    @property
    def reference(self) -> str:
        """The image reference the build tags and the archive carries."""

    def inputs(self) -> dict[str, JsonValue]:
        """Everything that changes the image; hashed into its key."""

    def build(self, buildah: Buildah, workdir: Path) -> None:
        """Build and tag ``reference`` in ``buildah``'s store (``workdir`` is scratch space)."""


@dataclass(frozen=True)
class BuiltImage:
    """An image exported to an archive that ``ctr images import`` reads."""

    name: str
    reference: str
    key: str
    image_id: str
    archive: Path
    reused: bool
    seconds: float
    """Time this call spent on the image: the build and export, or the cache look-up."""

    @property
    def archive_bytes(self) -> int:
        return self.archive.stat().st_size


@dataclass(frozen=True)
class ImageCache:
    """Archives under ``folder/archives``, the buildah store under ``folder/storage``."""

    folder: Path

    @property
    def buildah(self) -> Buildah:
        return Buildah.with_storage(self.folder / "storage")

    def ensure(self, recipe: Recipe) -> BuiltImage:
        started = time.monotonic()
        key = recipe_key(recipe)
        archives = self.folder / "archives"
        record = archives / f"{recipe.name}-{key}.json"
        found = _read_record(record, started)
        if found is not None:
            return found
        with build_lock(archives / recipe.name):
            found = _read_record(record, started)
            if found is not None:
                return found
            work = self.folder / "tmp" / f"{recipe.name}-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                recipe.build(self.buildah, work)
                image_id = self.buildah.image_id(recipe.reference)
                if image_id is None:
                    raise RuntimeError(f"the {recipe.name} build did not tag {recipe.reference}")
                archive = record.with_suffix(".tar")
                partial = work / archive.name
                self.buildah.push_docker_archive(recipe.reference, partial)
                partial.rename(archive)
                details = {"reference": recipe.reference, "key": key, "image_id": image_id}
                partial_record = work / record.name
                partial_record.write_text(json.dumps(details, indent=2) + "\n")
                partial_record.rename(record)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            _remove_other_keys(archives, recipe.name, key)
        return BuiltImage(
            recipe.name, recipe.reference, key, image_id, archive, False, time.monotonic() - started
        )


def recipe_key(recipe: Recipe) -> str:
    """The cache key: the recipe's inputs, its name and the reference it tags."""
    return input_key({"name": recipe.name, "reference": recipe.reference, **recipe.inputs()})


def ensure_in_store(buildah: Buildah, image: BuiltImage) -> None:
    """Load ``image`` from its archive when the store lacks it (a Dockerfile builds FROM it)."""
    if buildah.image_id(image.reference) != image.image_id:
        buildah.load_docker_archive(image.archive)


def _read_record(record: Path, started: float) -> BuiltImage | None:
    archive = record.with_suffix(".tar")
    if not record.is_file() or not archive.is_file():
        return None
    details = json.loads(record.read_text())
    name = record.name.removesuffix(f"-{details['key']}.json")
    return BuiltImage(
        name=name,
        reference=details["reference"],
        key=details["key"],
        image_id=details["image_id"],
        archive=archive,
        reused=True,
        seconds=time.monotonic() - started,
    )


def _remove_other_keys(archives: Path, name: str, key: str) -> None:
    for stale in archives.glob(f"{name}-*"):
        if stale.suffix in (".tar", ".json") and stale.stem != f"{name}-{key}":
            stale.unlink(missing_ok=True)
