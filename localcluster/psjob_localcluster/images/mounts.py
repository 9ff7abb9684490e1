"""Unmounting what a tool left mounted below a folder, before the folder is deleted."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mount_points_under(folder: Path) -> list[str]:
    """Mount points at or below ``folder``, deepest first."""
    prefix = str(folder.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(folder: Path) -> None:
    """Lazily unmount every mount point at or below ``folder`` (debootstrap's /proc, a shim's
    rootfs), so that deleting the folder cannot reach into a mounted file system."""
    for point in mount_points_under(folder):
        subprocess.run(["umount", "-l", point], check=False)
