"""What building the node images needs from the machine, named so a skip can say what is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

COMMANDS = {
    "buildah": "buildah (make node-deps)",
    "debootstrap": "debootstrap (make node-deps)",
    "gcc": "gcc (make system-deps)",
    "tar": "tar",
}


def missing_prerequisites() -> list[str]:
    """Human-readable names of what is missing; empty when the images can be built here."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (debootstrap and buildah's overlay storage need it)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        missing.append("the overlay filesystem")
    missing += [label for command, label in COMMANDS.items() if shutil.which(command) is None]
    if shutil.which("go") is None and shutil.which("go", path="/usr/local/go/bin") is None:
        missing.append("Go >= 1.26 (for CoreDNS)")
    return missing
