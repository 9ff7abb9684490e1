"""What every benchmark report states about the machine: its figures mean little without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def describe() -> dict[str, Any]:
    """Cores, memory, CPU model and Python version; each benchmark adds its own versions."""
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), ""
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[1]) / 2**20, 1),
        "cpu": model,
        "python": platform.python_version(),
    }
