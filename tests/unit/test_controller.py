"""The reconciler's error handling, against a stand-in for the API server."""

import asyncio
import logging
import threading
import tracemalloc
from typing import Any, cast

import pytest
from kubernetes.client import ApiException
from psjob_operator.controller import Reconciler, retry_delay
from psjob_operator.kube import Kube, Manifest
from psjob_operator.models import PSJob, Role
from psjob_operator.plan import Event

from tests.support.pod_views import pod_view

KEY = ("ns", "j")


class FakeKube:
    """Records events; refuses status writes while `refuse` holds an HTTP status."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.refuse: int | None = None

    def patch_status(self, namespace: str, name: str, version: str, status: Manifest) -> Manifest:
        if self.refuse is not None:
            raise ApiException(status=self.refuse, reason="Service Unavailable")
        return job_body(str(int(version) + 1), status=status)

    def post_event(self, job: Manifest, event: Event) -> None:
        self.events.append(event)

    def create(self, manifest: Manifest) -> bool:
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        pass


def job_body(version: str, **changes: Any) -> Manifest:
    return {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u", "resourceVersion": version},
        "spec": {"image": "img"},
        **changes,
    }


def reconcile(reconciler: Reconciler, body: Manifest | None = None) -> None:
    """A watch event with `body`, or without one the retry timer firing; then wait it out."""

    async def once() -> None:
        if body is None:
            reconciler.trigger(KEY)
        else:
            reconciler.observe_job(body, deleted=False)
        while reconciler.running:
            await asyncio.sleep(0.01)
        for timer in reconciler.timers.values():
            timer.cancel()
        reconciler.timers.clear()

    asyncio.run(once())


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(cast(Kube, kube), api_threads=1)


def test_an_invalid_job_gets_one_warning_event_per_version(
    reconciler: Reconciler, kube: FakeKube
) -> None:
    invalid = job_body("7", spec={"image": "img", "workers": {"restartPolicy": "Sometimes"}})
    reconcile(reconciler, invalid)
    reconcile(reconciler)
    (event,) = kube.events
    assert (event.type, event.reason) == ("Warning", "FailedValidation")
    assert "spec.workers.restartPolicy" in event.message
    reconcile(reconciler, {**invalid, "metadata": {**invalid["metadata"], "resourceVersion": "8"}})
    assert len(kube.events) == 2


def test_failed_reconciles_back_off_per_job_and_a_success_resets_it(
    reconciler: Reconciler, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psjob.operator")
    kube.refuse = 503
    reconcile(reconciler, job_body("1"))
    reconcile(reconciler)
    reconcile(reconciler)
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == [
        "reconcile of ns/j failed (1 in a row), retrying in 1s",
        "reconcile of ns/j failed (2 in a row), retrying in 2s",
        "reconcile of ns/j failed (3 in a row), retrying in 4s",
    ]
    kube.refuse = None
    reconcile(reconciler)
    kube.refuse = 503
    reconcile(reconciler, job_body("3", spec={"image": "img2"}))
    assert caplog.records[-1].getMessage().startswith("reconcile of ns/j failed (1 in a row)")


def test_the_retry_delay_grows_to_five_minutes_and_stays_there() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 9, 10, 5000)] == [1, 2, 4, 256, 300, 300]


class RecordingKube(FakeKube):
    """Counts pod creations; refuses each one with `pod_refusal` when set (a quota, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.pods_asked = 0
        self.pod_refusal: int | None = None
        self.lock = threading.Lock()

    def create(self, manifest: Manifest) -> bool:
        if manifest["kind"] == "Pod":
            with self.lock:
                self.pods_asked += 1
            if self.pod_refusal is not None:
                raise ApiException(status=self.pod_refusal, reason="Forbidden")
        return True


def big_job(servers: int, workers: int) -> Manifest:
    replicas = {"command": ["python", "-m", "psjob_runtime"]}
    spec = {
        "image": "img",
        "servers": {**replicas, "replicas": servers},
        "workers": {**replicas, "replicas": workers},
    }
    return job_body("1", spec=spec)


def test_a_big_job_is_created_without_holding_all_its_pods_in_memory() -> None:
    """Each pod of a job with S servers lists every server's address (about 58 bytes each):
    10,000 + 10,000 pods of 590 KB would be 11.8 GB if all were rendered at once."""
    kube = RecordingKube()
    reconciler = Reconciler(cast(Kube, kube), api_threads=4)
    job = big_job(servers=400, workers=600)  # 1,000 pods of 23 KB: 23 MB all at once
    tracemalloc.start()
    try:
        reconcile(reconciler, job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kube.pods_asked == 1000
    assert peak < 8 * 2**20, f"creating 1,000 pods peaked at {peak / 2**20:.1f} MiB"


def test_a_refused_pod_creation_stops_the_creation_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="psjob.operator")
    kube = RecordingKube()
    kube.pod_refusal = 403
    reconciler = Reconciler(cast(Kube, kube), api_threads=4)
    reconcile(reconciler, big_job(servers=2, workers=498))
    assert 1 <= kube.pods_asked <= 4, "at most one creation per API thread was in flight"
    assert "failed (1 in a row)" in caplog.records[-1].getMessage()


class DeletedDuringTheWrite(FakeKube):
    """A status write that returns only after the job's deletion reached the reconciler."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.deleted = threading.Event()

    def patch_status(self, namespace: str, name: str, version: str, status: Manifest) -> Manifest:
        self.writing.set()
        self.deleted.wait(10)
        return super().patch_status(namespace, name, version, status)


def test_a_job_deleted_while_its_reconcile_acts_leaves_no_metric_or_cache_behind() -> None:
    kube = DeletedDuringTheWrite()
    reconciler = Reconciler(cast(Kube, kube), api_threads=1)
    body = job_body("1")

    async def scenario() -> None:
        reconciler.observe_job(body, deleted=False)
        while not kube.writing.is_set():
            await asyncio.sleep(0.01)
        reconciler.observe_job(body, deleted=True)
        kube.deleted.set()
        while reconciler.running:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert KEY not in reconciler.jobs
    assert KEY not in reconciler.phases and KEY not in reconciler.progress_shown
    assert KEY not in reconciler.timers


class KeepingKube(FakeKube):
    """Keeps the pods it was asked to create."""

    def __init__(self) -> None:
        super().__init__()
        self.pods: list[Manifest] = []

    def create(self, manifest: Manifest) -> bool:
        if manifest["kind"] == "Pod":
            self.pods.append(manifest)
        return True


def test_a_pod_lost_moments_after_its_creation_is_recreated_in_place_at_once() -> None:
    """The operator skips a pod it created moments ago that the watch does not show yet; a
    replacement under the same name is another pod (its incarnation) and is created at once."""
    kube = KeepingKube()
    reconciler = Reconciler(cast(Kube, kube), api_threads=1)
    reconcile(reconciler, job_body("1"))
    assert [p["metadata"]["name"] for p in kube.pods] == ["j-server-0", "j-worker-0"]
    job = PSJob.model_validate(reconciler.jobs[KEY])
    worker = pod_view(job, Role.WORKER, 0)
    reconciler.pods = {KEY: [pod_view(job, Role.SERVER, 0, deleting=True), worker]}
    reconcile(reconciler)
    assert [e.reason for e in kube.events][-1] == "Recovering"
    reconciler.pods = {KEY: [worker]}  # the deleted server is gone
    reconcile(reconciler)
    assert [p["metadata"]["name"] for p in kube.pods] == ["j-server-0", "j-worker-0", "j-server-0"]
    assert kube.pods[-1]["metadata"]["annotations"]["psjob.dev/incarnation"] == "1"
    reconcile(reconciler)  # the watch still lags: not created twice
    assert len(kube.pods) == 3
