"""What the kubelet node could leave on the machine, compared before and after it ran.

The node keeps everything in namespaces of its own, so the machine's network links, mount table,
iptables rules and cgroup tree must read the same after ``KubeletNode.stop()`` as before it
started; the node's stop raises naming any difference, so every test session on the kubelet
node checks it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.node.cgroups import v1_hierarchies


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.stdout


def _iptables_rules() -> frozenset[str]:
    """Every rule of every table (counters and comments about dates left out)."""
    rules = set()
    for save in ("iptables-save", "ip6tables-save"):
        for line in _run([save]).splitlines():
            if line.startswith(("-A", "-N", "-I")) or (line.startswith(":") and "psjob" in line):
                rules.add(f"{save}: {line}")
    return frozenset(rules)


@dataclass(frozen=True)
class MachineState:
    links: frozenset[str]
    mounts: frozenset[str]
    rules: frozenset[str]
    cgroups: frozenset[str]


def machine_state(cgroup_root: str) -> MachineState:
    """The machine's links, mount points, iptables rules and the node's cgroup folders."""
    links = frozenset(
        line.split(":")[1].strip().split("@")[0] for line in _run(["ip", "-o", "link"]).splitlines()
    )
    mounts = frozenset(
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )
    cgroups = frozenset(
        str(hierarchy / cgroup_root.strip("/"))
        for hierarchy in v1_hierarchies()
        if (hierarchy / cgroup_root.strip("/")).exists()
    )
    return MachineState(links, mounts, _iptables_rules(), cgroups)


def differences(before: MachineState, after: MachineState) -> list[str]:
    """What ``after`` has that ``before`` did not, one line per kind."""
    found = []
    for kind in ("links", "mounts", "rules", "cgroups"):
        added = sorted(getattr(after, kind) - getattr(before, kind))
        if added:
            found.append(f"{kind}: {', '.join(added[:10])}")
    return found
