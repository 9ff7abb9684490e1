"""Fixtures for the chart, image and GitOps tests: the real helm and kstatus, and PSJob fixtures.

The PSJob objects in every phase are not written by hand: they come out of the operator's own
pure reconcile decision (`psjob_operator.plan.decide`), driven through a job's life the way the
operator drives it. So the Argo CD and kstatus tests judge the status the operator really writes.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from psjob_localcluster.tools import KUBERNETES_VERSION, cache_root, default_tools
from psjob_operator.models import PSJob, Recovery, Role
from psjob_operator.observe import PodView
from psjob_operator.plan import decide

from tests.support.pod_views import all_pod_views, pod_view

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "psjob-operator"
KSTATUS_SOURCE = Path(__file__).resolve().parent / "kstatus"
RELEASE_NAMESPACE = "psjob-system"

HelmRun = Callable[..., subprocess.CompletedProcess[str]]
Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The pinned helm that `make cluster-tools` builds (the same one the e2e tests use)."""
    helm = default_tools().helm
    if not os.access(helm, os.X_OK):
        pytest.skip(f"helm is not built yet ({helm}): run `make cluster-tools` once")
    return helm


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> HelmRun:
    """Run helm with its own empty config and cache folders, so no user setting leaks in."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(helm_binary), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
        return done

    return run


@pytest.fixture(scope="session")
def render(helm: HelmRun, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """`helm template` the chart with the given values; the manifests as a list of dicts."""
    folder = tmp_path_factory.mktemp("values")

    def template(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        values_file = folder / f"values-{len(list(folder.iterdir()))}.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        done = helm(
            "template", "psjob", str(CHART), "--namespace", RELEASE_NAMESPACE,
            "--kube-version", KUBERNETES_VERSION, "--values", str(values_file),
        )  # fmt: skip
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return template


@pytest.fixture(scope="session")
def kstatus_binary() -> Path:
    """kstatus from sigs.k8s.io/cli-utils (what Flux uses), built once per source version.

    The binary is cached under the project's tool cache, keyed by a hash of the Go sources, so
    only the first run on a machine pays the build (about half a minute).
    """
    # /usr/local/go/bin is where Go's own installer puts it, often not on a CI job's PATH.
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        pytest.skip("the Go toolchain is not installed: kstatus is built from its Go module")
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((KSTATUS_SOURCE / name).read_bytes())
    folder = cache_root() / "kstatus" / digest.hexdigest()[:16]
    binary = folder / "kstatus"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.access(binary, os.X_OK):
            partial = folder / "kstatus.partial"
            subprocess.run(
                [go, "build", "-trimpath", "-o", str(partial), "."],
                cwd=KSTATUS_SOURCE, check=True, timeout=900,
            )  # fmt: skip
            partial.rename(binary)
    return binary


# --- PSJobs in every phase, as the operator's reconcile decision leaves them -----------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _job(generation: int = 1, **spec: Any) -> PSJob:
    return PSJob.model_validate(
        {
            "apiVersion": "psjob.dev/v1alpha1",
            "kind": "PSJob",
            "metadata": {
                "name": "digits",
                "namespace": "ml",
                "uid": "u1",
                "generation": generation,
            },
            "spec": {
                "image": "ghcr.io/psjob/runtime:0.1.0",
                "servers": {"replicas": 1},
                "workers": {"replicas": 2, "restartPolicy": "ExitCode"},
                **spec,
            },
        }
    )


def _step(job: PSJob, pods: list[PodView], seconds: int = 0) -> PSJob:
    decision = decide(job, pods, T0 + timedelta(seconds=seconds))
    return job.model_copy(update={"status": decision.status})


def _as_object(job: PSJob) -> dict[str, Any]:
    body: dict[str, Any] = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def psjobs_in_every_phase() -> dict[str, dict[str, Any]]:
    """name -> PSJob object (as the API server would return it) in that situation."""
    fresh = _job()
    pending = _step(fresh, [])
    created = _step(pending, all_pod_views(pending, "Pending"))
    running = _step(created, all_pod_views(created))
    not_ready = all_pod_views(created)
    not_ready[1] = replace(not_ready[1], ready=False)
    running_not_ready = _step(created, not_ready)
    finished_workers = [
        pod_view(running, Role.SERVER, 0),
        pod_view(running, Role.WORKER, 0, "Succeeded"),
        pod_view(running, Role.WORKER, 1, "Succeeded"),
    ]
    succeeded = _step(running, finished_workers, 30)
    crashed = all_pod_views(running)
    crashed[2] = pod_view(running, Role.WORKER, 1, "Failed", exit_code=1)
    failed = _step(running, crashed, 30)
    lost_peer = all_pod_views(running)
    lost_peer[1] = pod_view(running, Role.WORKER, 0, "Failed", exit_code=75)
    recovering = _step(running, lost_peer, 30)  # in place, the default
    whole = running.spec.run_policy.model_copy(update={"recovery": Recovery.RESTART_JOB})
    restart_job = running.model_copy(
        update={"spec": running.spec.model_copy(update={"run_policy": whole})}
    )
    restarting = _step(restart_job, lost_peer, 30)
    suspend = running.spec.run_policy.model_copy(update={"suspend": True})
    to_suspend = running.model_copy(
        update={
            "metadata": running.metadata.model_copy(update={"generation": 2}),
            "spec": running.spec.model_copy(update={"run_policy": suspend}),
        }
    )
    suspended = _step(_step(to_suspend, all_pod_views(running), 40), [], 41)
    spec_changed = running.model_copy(
        update={"metadata": running.metadata.model_copy(update={"generation": 2})}
    )
    return {
        "new": _as_object(fresh),
        "pending": _as_object(pending),
        "created": _as_object(created),
        "running-not-ready": _as_object(running_not_ready),
        "running": _as_object(running),
        "recovering": _as_object(recovering),
        "restarting": _as_object(restarting),
        "succeeded": _as_object(succeeded),
        "failed": _as_object(failed),
        "suspended": _as_object(suspended),
        "spec-changed": _as_object(spec_changed),
    }


@pytest.fixture(scope="session")
def psjob_phases() -> dict[str, dict[str, Any]]:
    return psjobs_in_every_phase()
