"""`kubectl psjob` run by the real kubectl, found on PATH as kubectl-psjob, against a real job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.operator.support import OperatorProcess, PSJobs, eventually, job_manifest

pytestmark = pytest.mark.cluster

PLUGIN_DIR = Path(sys.executable).parent
"""Where `make venv` installs the operator package's console scripts, kubectl-psjob among them."""


def talker(role: str, release: Path | None) -> list[str]:
    """Print a line, then wait: for `release` to exist (then say bye and exit), or forever."""
    wait = (
        f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.2)\nprint('bye')"
        if release
        else "time.sleep(3600)"
    )
    code = f"import pathlib, time\nprint('hello from the {role}', flush=True)\n{wait}"
    return ["python", "-c", code]


def kubectl(psjobs: PSJobs, *args: str) -> list[str]:
    """The argv and environment a user has: KUBECONFIG set, the plugin on PATH."""
    return [str(psjobs.cluster.tools.kubectl), *args]


def environment(psjobs: PSJobs) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(psjobs.cluster.kubeconfig),
        "PATH": f"{PLUGIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run(psjobs: PSJobs, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kubectl(psjobs, *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(psjobs),
        check=False,
    )


def test_kubectl_psjob_shows_status_and_prefixed_logs_of_a_running_job(
    operator: OperatorProcess, psjobs: PSJobs, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    psjobs.apply(
        job_manifest(
            "talk",
            servers={"replicas": 1, "command": talker("server", None)},
            workers={"replicas": 2, "command": talker("worker", release)},
        )
    )
    psjobs.wait_phase("talk", "Running", timeout=90)
    eventually(
        lambda: all("hello" in psjobs.logs(f"talk-{p}") for p in ("server-0", "worker-1")),
        "the pods to say hello",
    )

    listed = run(psjobs, "plugin", "list")
    assert str(PLUGIN_DIR / "kubectl-psjob") in listed.stdout, listed.stderr

    status = run(psjobs, "psjob", "status", "talk", "-n", psjobs.namespace)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"psjob/talk in namespace {psjobs.namespace}: Running")
    rows = [line.split() for line in lines if line.startswith("talk-")]
    assert [row[:4] for row in rows] == [
        ["talk-server-0", "server", "0", "Running"],
        ["talk-worker-0", "worker", "0", "Running"],
        ["talk-worker-1", "worker", "1", "Running"],
    ]
    assert all(row[6] != "-" for row in rows), status.stdout  # the node each one runs on
    assert "\033" not in status.stdout  # a pipe gets plain text

    logs = run(psjobs, "psjob", "logs", "talk", "-n", psjobs.namespace)
    assert logs.returncode == 0, logs.stderr
    assert "[server-0] hello from the server" in logs.stdout.splitlines()
    assert "[worker-1] hello from the worker" in logs.stdout.splitlines()

    # Following the workers lasts until they end: here, once the test lets them go.
    follower = subprocess.Popen(
        kubectl(psjobs, "psjob", "logs", "talk", "-f", "--role=worker", "-n", psjobs.namespace),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(psjobs),
    )
    try:
        release.touch()
        out, err = follower.communicate(timeout=90)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    followed = out.splitlines()
    for index in (0, 1):
        assert f"[worker-{index}] hello from the worker" in followed, out
        assert f"[worker-{index}] bye" in followed, out
    assert not any(line.startswith("[server-") for line in followed)


def test_kubectl_psjob_names_a_missing_job_and_its_namespace(
    psjob_crd: None, psjobs: PSJobs
) -> None:
    missing = run(psjobs, "psjob", "status", "nope", "-n", psjobs.namespace)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f'kubectl-psjob: psjob "nope" not found in namespace "{psjobs.namespace}"'
    ]
    assert missing.stdout == ""
