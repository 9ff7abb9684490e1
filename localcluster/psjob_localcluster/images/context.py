"""The build-context files a Dockerfile copies, and their digest.

Only what ``COPY``/``ADD`` take from the context (after ``.dockerignore``) can change an image,
so only those files enter its cache key: a change to ``runtime/`` rebuilds the runtime image, not
the operator image. ``COPY --from=<stage>`` reads another stage, not the context, and is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from psjob_localcluster.images.dockerignore import DockerIgnore
from psjob_localcluster.images.keys import file_digest

CONTINUATION = re.compile(r"\\\n")


class DockerfileError(ValueError):
    """A Dockerfile instruction this module cannot resolve to context files."""


def copied_sources(dockerfile_text: str) -> tuple[str, ...]:
    """The context paths of every ``COPY``/``ADD`` that reads the build context, in order."""
    sources: list[str] = []
    for line in CONTINUATION.sub(" ", dockerfile_text).splitlines():
        words = line.strip().split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        arguments = words[1:]
        flags = [word for word in arguments if word.startswith("--")]
        if any(flag.startswith("--from=") for flag in flags):
            continue
        operands = [word for word in arguments if not word.startswith("--")]
        if operands and operands[0].startswith("["):
            operands = json.loads(" ".join(operands))
        for source in operands[:-1]:
            if "$" in source or "://" in source:
                raise DockerfileError(f"cannot key a build on {words[0]} source {source!r}")
            sources.append(source.removeprefix("./").removeprefix("/").rstrip("/") or ".")
    return tuple(sources)


def context_files(context: Path, sources: tuple[str, ...], ignore: DockerIgnore) -> list[str]:
    """Relative paths of the files the sources name, as the builder would send them."""
    found: set[str] = set()
    for source in sources:
        matches = sorted(context.glob(source)) if any(c in source for c in "*?[") else None
        for top in matches if matches is not None else [context / source]:
            if not top.exists() and not top.is_symlink():
                raise DockerfileError(f"{source!r} is not in the build context {context}")
            paths = [top] if not top.is_dir() else _walk(top)
            for path in paths:
                relative = path.relative_to(context).as_posix()
                if not ignore.excludes(relative):
                    found.add(relative)
    return sorted(found)


def _walk(folder: Path) -> list[Path]:
    files: list[Path] = []
    for parent, _, names in os.walk(folder):
        files.extend(Path(parent) / name for name in names)
    return files


def context_digest(context: Path, dockerfile_text: str) -> str:
    """SHA-256 over path, permission bits and content (or link target) of every copied file."""
    ignore = DockerIgnore.of_context(context)
    digest = hashlib.sha256()
    for relative in context_files(context, copied_sources(dockerfile_text), ignore):
        path = context / relative
        info = path.lstat()
        link = stat.S_ISLNK(info.st_mode)
        content = "link:" + os.readlink(path) if link else file_digest(path)
        digest.update(f"{relative}\0{stat.S_IMODE(info.st_mode):o}\0{content}\n".encode())
    return digest.hexdigest()
