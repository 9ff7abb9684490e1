"""`python -m psjob_localcluster dev` (make dev-cluster) runs a usable cluster and, on Ctrl-C,
leaves no process behind: control plane, node agent and pod processes all end."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest
from psjob_localcluster.procs import process_exists, wait_until_gone
from psjob_localcluster.tools import require_tools
from psjob_localcluster.waiting import wait_for

pytestmark = pytest.mark.cluster


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_dev_cluster_runs_pods_and_ctrl_c_stops_every_process() -> None:
    kubectl = str(require_tools().kubectl)
    dev = subprocess.Popen(
        [sys.executable, "-m", "psjob_localcluster", "dev"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()

        def read_output() -> None:  # in a thread: a stalled start must not block the test
            for line in dev.stdout or []:
                lines.put(line)

        threading.Thread(target=read_output, daemon=True).start()

        def export_line() -> str | None:
            while not lines.empty():
                line = lines.get()
                if line.startswith("export KUBECONFIG="):
                    return line
            return None

        export = wait_for(export_line, "the export KUBECONFIG line", timeout=120)
        kubeconfig = export.strip().split("=", 1)[1]

        def kubectl_run(*args: str) -> str:
            return subprocess.run(
                [kubectl, f"--kubeconfig={kubeconfig}", *args],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout

        kubectl_run(
            "run",
            "sleeper",
            "--image=python:3.11-slim",
            "--restart=Never",
            "--command",
            "--",
            "python",
            "-c",
            "import time; time.sleep(600)",
        )
        kubectl_run(
            "wait", "--for=jsonpath={.status.phase}=Running", "pod/sleeper", "--timeout=60s"
        )
        pids = _descendants(dev.pid)
        pod_pid = int(
            kubectl_run(
                "get", "pod", "sleeper", "-o", "jsonpath={.status.containerStatuses[0].containerID}"
            ).rsplit("/", 1)[1]
        )
        assert pod_pid in pids and process_exists(pod_pid)
        assert len(pids) >= 6  # etcd, apiserver, controller manager, scheduler, agent, pod

        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
        assert wait_until_gone(pids, timeout=5) == []
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
