"""containerd for the kubelet node: Debian's containerd 1.6 and runc, configured to stay in the
cluster's folders.

The root (content store, image snapshots, metadata) lives in the machine's psjob cache and is
kept between clusters, so the multi-GB runtime image is imported and unpacked once per machine;
the state (sockets, task state) lives in the cluster's folder. Containers of a node that ended
without cleaning up (killed harness) stay as records in the root: ``remove_leftovers`` deletes
them before the kubelet starts, and restarts containerd so that its CRI plugin forgets them too.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.node.sandbox import NodeSandbox
from psjob_localcluster.procs import ManagedProcess, start_process

NAMESPACE = "k8s.io"
"""The containerd namespace of the CRI plugin, where the kubelet's images and pods live."""
CNI_BIN_DIR = "/usr/lib/cni"
"""Where Debian's containernetworking-plugins installs bridge, host-local, loopback, portmap."""


class ContainerdError(RuntimeError):
    """containerd did not start or refused a command; the message carries its log tail."""


@dataclass(frozen=True)
class ContainerdPaths:
    root: Path
    state: Path
    config: Path
    socket: Path
    cni_conf_dir: Path
    log: Path


def containerd_paths(cache_root: Path, run_dir: Path) -> ContainerdPaths:
    return ContainerdPaths(
        root=cache_root / "root",
        state=run_dir / "state",
        config=run_dir / "config.toml",
        socket=run_dir / "containerd.sock",
        cni_conf_dir=run_dir / "net.d",
        log=run_dir.parent / "logs" / "containerd.log",
    )


def render_config(paths: ContainerdPaths, sandbox_image: str) -> str:
    """containerd's version 2 configuration.

    ``restrict_oom_score_adj``: the pause container asks for oom_score_adj -998, which needs
    CAP_SYS_RESOURCE (runc fails with "can't get final child's PID from pipe" without it).
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{paths.root}"
state = "{paths.state}"

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = "{paths.socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"""


@dataclass
class Containerd:
    """A running containerd inside the node's namespaces."""

    sandbox: NodeSandbox
    paths: ContainerdPaths
    process: ManagedProcess

    @property
    def endpoint(self) -> str:
        return f"unix://{self.paths.socket}"

    def ctr(self, *args: str, timeout: float = 600.0) -> str:
        """Run ``ctr`` against this containerd in the CRI namespace."""
        argv = ["ctr", f"--address={self.paths.socket}", f"--namespace={NAMESPACE}", *args]
        done = subprocess.run(
            self.sandbox.command(argv), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise ContainerdError(f"`{' '.join(argv[2:])}` failed: {done.stderr.strip()}")
        return done.stdout

    def containers(self) -> list[str]:
        return self.ctr("containers", "list", "--quiet").split()

    def remove_all_containers(self) -> int:
        """Kill and delete every task and container (pods and their sandboxes); images stay."""
        found = self.containers()
        for container in found:
            for argv in (
                ["tasks", "kill", "--signal=SIGKILL", container],
                ["tasks", "delete", "--force", container],
            ):
                with contextlib.suppress(ContainerdError):  # no task: the node ended before
                    self.ctr(*argv, timeout=30.0)
            self.ctr("containers", "delete", container, timeout=30.0)
        return len(found)

    def stop(self) -> None:
        self.process.stop(grace_seconds=5.0)


def _launch(sandbox: NodeSandbox, paths: ContainerdPaths, timeout: float) -> Containerd:
    process = start_process(
        "containerd",
        sandbox.command(["containerd", f"--config={paths.config}"]),
        paths.log,
    )
    daemon = Containerd(sandbox, paths, process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            daemon.ctr("version", timeout=5.0)
            return daemon
        except (ContainerdError, subprocess.TimeoutExpired):
            pass
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            tail = paths.log.read_text(errors="replace")[-3000:]
            raise ContainerdError(f"containerd did not start:\n{tail}") from None
        time.sleep(0.1)


def start_containerd(
    sandbox: NodeSandbox, paths: ContainerdPaths, sandbox_image: str, timeout: float = 30.0
) -> Containerd:
    """Write the configuration, start containerd and clear what a killed node left behind."""
    for folder in (paths.root, paths.state, paths.cni_conf_dir, paths.log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(render_config(paths, sandbox_image))
    daemon = _launch(sandbox, paths, timeout)
    if daemon.remove_all_containers():
        daemon.stop()  # its CRI plugin still holds the removed pods in memory
        daemon = _launch(sandbox, paths, timeout)
    return daemon
