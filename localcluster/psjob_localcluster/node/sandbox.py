"""The kubelet node's own namespaces: network, mount and pid, held by one small init process.

Everything of the node (containerd, the shims, the containers, kubelet, kube-proxy, the CNI bridge
and its iptables rules) runs inside them, so the machine's own network, mount table and process
list never see it, and ending the init ends all of it: the kernel kills every process of a pid
namespace when its first process exits, and drops the network namespace, its bridge, its veth
pair and its iptables rules with the last process in it. In the mount namespace /run and /var/lib
are fresh tmpfs, so the pod network namespaces containerd pins under /run/netns and the CNI
caches under /var/lib/cni vanish with it too.

The chain that survives a harness killed with SIGKILL: the harness starts ``unshare`` with
``setpriv --pdeathsig KILL``, and ``unshare --kill-child`` gives the init a parent-death signal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.procs import ManagedProcess, start_process

INIT = r"""
import os, signal, subprocess, sys

for target in ("/run", "/var/lib"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", target], check=True)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
open(sys.argv[1], "w").close()
while True:
    signal.pause()
"""
"""PID 1 of the node: private /run and /var/lib, then reap orphans (the containerd shims) until
told to stop."""


class SandboxError(RuntimeError):
    """The node's namespaces could not be made; the message names what is missing."""


@dataclass
class NodeSandbox:
    """The running init and how to start commands inside its namespaces."""

    holder: ManagedProcess
    init_pid: int

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the node's network, mount and pid namespaces."""
        namespaces = ["--net", "--mount", "--pid"]
        return ["nsenter", f"--target={self.init_pid}", *namespaces, "--", *argv]

    @property
    def netns_path(self) -> Path:
        return Path(f"/proc/{self.init_pid}/ns/net")

    def stop(self) -> None:
        """End the init: every process still in the node dies with it."""
        self.holder.stop(grace_seconds=5.0)


def _child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


def start_sandbox(root: Path, python: str, timeout: float = 10.0) -> NodeSandbox:
    """Start the init under ``root`` and wait until its mounts are in place."""
    ready = root / "sandbox.ready"
    ready.unlink(missing_ok=True)
    argv = [
        "unshare",
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation=private",
        "--kill-child=KILL",
        "--",
        python,
        "-I",
        "-c",
        INIT,
        str(ready),
    ]
    holder = start_process("node-sandbox", argv, root / "logs" / "node-sandbox.log")
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if not holder.alive() or time.monotonic() > deadline:
            holder.stop()
            log = holder.log_path.read_text(errors="replace")[-2000:]
            raise SandboxError(f"the node's namespaces did not come up:\n{log}")
        time.sleep(0.02)
    init_pid = _child_of(holder.pid)
    if init_pid is None:
        holder.stop()
        raise SandboxError("the node's init process vanished right after start")
    return NodeSandbox(holder, init_pid)
