"""Start and stop the processes of a local cluster so that none outlives its owner.

Each process runs in its own session (so a signal reaches its children too) and is started
through ``setpriv --pdeathsig KILL``: if the owner dies without cleaning up (SIGKILL, a crash),
the kernel kills the process as well. ``setpriv`` execs the command, so the pid is the
command's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _pdeathsig_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("`setpriv` (util-linux) is missing: run `make system-deps`")
    return [setpriv, "--pdeathsig", "KILL", "--"]


@dataclass
class ManagedProcess:
    """One started process, its log file and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the process and everything in its session (children it forked)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def stop(self, grace_seconds: float = 5.0) -> int:
        """SIGTERM, wait up to ``grace_seconds``, then SIGKILL; returns the exit status."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # also reaps leftovers of a process that exited
        return self.popen.wait()


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [*_pdeathsig_prefix(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return ManagedProcess(name, popen, log_path)


def wait_until_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Poll until none of ``pids`` exists (zombies count as gone); returns those left."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        left = [p for p in left if process_exists(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return left


def process_exists(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) does not count."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_with_environment(entry: str) -> list[int]:
    """Pids of live processes (of this user) whose environment holds ``entry`` (NAME=value...),
    e.g. the pods of one cluster, which all name a hosts file in its folder."""
    found = []
    needle = b"\0" + entry.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                text = b"\0" + environ.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in text and process_exists(int(pid)):
            found.append(int(pid))
    return found
