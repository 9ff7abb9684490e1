"""Cache keys: one short digest of everything an image is built from.

A key is the SHA-256 of a canonical JSON document of the image's inputs (file digests, build
arguments, the key of the image it starts from, the builder's version), so a warm run compares
strings instead of building, and a change of any input selects a new key and a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias

KEY_LENGTH = 20
"""Hex digits kept: 80 bits, plenty for a handful of builds per machine, short in file names."""

JsonValue: TypeAlias = str | int | bool | list["JsonValue"] | dict[str, "JsonValue"] | None


def input_key(inputs: Mapping[str, JsonValue]) -> str:
    """The digest of ``inputs`` (order of mapping keys does not matter)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (lock files and sources are small, wheels not)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_version(command: str, missing: Exception) -> str:
    """What ``command --version`` prints, a key input (another tool may build another image);
    raises ``missing`` when the command is not installed."""
    exe = shutil.which(command)
    if exe is None:
        raise missing
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()
