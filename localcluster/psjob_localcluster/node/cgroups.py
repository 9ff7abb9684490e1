"""The kubelet node's cgroups: one root per node in every cgroup v1 hierarchy.

The kubelet (cgroupfs driver) nests every pod under ``cgroupRoot``; runc creates the containers'
cgroups below that. Processes leave with the node's pid namespace, but empty cgroup folders stay
until removed: ``remove_cgroup_root`` removes them, deepest first, so nothing of the node is left
in the machine's cgroup tree.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def v1_hierarchies(mounts: Path = Path("/proc/self/mounts")) -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (the kubelet needs them on these machines)."""
    found = []
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup":
            found.append(Path(fields[1]))
    return found


def create_cgroup_root(name: str) -> None:
    """The kubelet refuses a ``cgroupRoot`` that does not exist in every hierarchy."""
    for hierarchy in v1_hierarchies():
        (hierarchy / name.strip("/")).mkdir(exist_ok=True)


def remove_cgroup_root(name: str) -> list[Path]:
    """Remove the folder tree under ``name`` in every hierarchy; returns what could not go
    (a cgroup that still holds a process)."""
    left = []
    for hierarchy in v1_hierarchies():
        top = hierarchy / name.strip("/")
        if not top.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda walk: -walk[0].count("/")):
            with contextlib.suppress(FileNotFoundError):
                try:
                    os.rmdir(folder)
                except OSError:
                    left.append(Path(folder))
    return left
