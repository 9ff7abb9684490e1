"""Make pods that share the machine's network namespace behave as if each had its own.

Each pod has its own loopback address (``ipam.py``) and resolves cluster names through
nss_wrapper (``dns.py``). One gap is left: a server that binds the wildcard address takes its
port on every address of the machine, so two pods could not listen on the same port, as torch's
TCPStore on the same MASTER_PORT in two jobs would. ``podbind.c``, preloaded into every pod
process, rewrites such a bind to the pod's own address. The agent compiles it at start-up with
the machine's C compiler (``make system-deps`` installs one).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from psjob_localcluster.agent.dns import NSS_WRAPPER_LIBRARY

SHIM_SOURCE = Path(__file__).with_name("podbind.c")
POD_IP_VARIABLE = "LOCALCLUSTER_POD_IP"


def build_bind_shim(library: Path) -> None:
    """Compile the bind shim to ``library``; a missing compiler is a clear error."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) for the pods' bind shim: run `make system-deps`")
    library.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"compiling {SHIM_SOURCE.name} failed: {done.stderr.strip()}")


def network_environment(pod_ip: str, bind_shim: Path) -> dict[str, str]:
    """The variables that give a process its pod's name lookups and wildcard binds."""
    return {"LD_PRELOAD": f"{NSS_WRAPPER_LIBRARY} {bind_shim}", POD_IP_VARIABLE: pod_ip}
