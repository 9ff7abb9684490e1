"""What a machine needs for the kubelet node, checked before anything starts.

The kubelet-node tests skip with this list when something is missing (CI fails instead), so a
developer on a laptop without root gets one line saying why, not a traceback from deep inside
containerd.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from psjob_localcluster.images import missing_prerequisites as image_prerequisites
from psjob_localcluster.node.cgroups import v1_hierarchies
from psjob_localcluster.node.containerd import CNI_BIN_DIR

COMMANDS = {
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "iptables": "iptables",
    "ipset": "ipset",
    "conntrack": "conntrack",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
}
"""Commands the node runs, and the Debian package of each."""
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def missing_prerequisites() -> list[str]:
    """One short phrase per missing piece; empty when the kubelet node (and its images, which
    it builds when the cache lacks them) can run here."""
    missing = image_prerequisites()
    packages = sorted({pkg for cmd, pkg in COMMANDS.items() if shutil.which(cmd) is None})
    if packages:
        missing.append(f"Debian packages {', '.join(packages)} (`make node-deps`)")
    if any(not (Path(CNI_BIN_DIR) / plugin).exists() for plugin in CNI_PLUGINS):
        missing.append("CNI plugins in /usr/lib/cni (`make node-deps`)")
    if not v1_hierarchies():
        missing.append("cgroup v1 hierarchies (the pinned kubelet runs on cgroup v1 here)")
    return missing
