"""The operator's copy of a Workload: Kueue's answer, once it came through the watch, is never
replaced by the older copy a call returned while the watch was faster."""

import asyncio
from collections.abc import Callable
from typing import Any

from psjob_operator.queueing import KueueApi, Queueing

from tests.unit.test_kueue_workload import queued_job, workload

Manifest = dict[str, Any]
KEY = ("ns", "j")


def with_identity(manifest: Manifest, resource_version: str) -> Manifest:
    job = queued_job()
    metadata = {
        "name": "psjob-j-01234567",
        "namespace": "ns",
        "uid": "workload-uid",
        "resourceVersion": resource_version,
        "labels": {"psjob.dev/job-name": "j"},
        "ownerReferences": [{"uid": job.metadata.uid}],
    }
    return {**manifest, "metadata": metadata}


class RacingApi(KueueApi):
    """Answers with the Workload as it was when the call began; the watch is faster."""

    def __init__(self, returned: Manifest) -> None:
        self.returned = returned

    def get_workload(self, namespace: str, name: str) -> Manifest | None:
        return None

    def create_workload(self, manifest: Manifest) -> Manifest:
        return self.returned

    def patch_workload_status(self, workload: Manifest, patch: Manifest) -> Manifest:
        return self.returned


def queueing_whose_watch_answers_during_calls(api: KueueApi, watched: Manifest) -> Queueing:
    async def call(function: Callable[..., Any], *args: Any) -> Any:
        answer = function(*args)
        queueing.observe(watched, deleted=False)  # the watch delivers while the call returns
        return answer

    queueing = Queueing(api, call)
    return queueing


def test_kueues_answer_seen_by_the_watch_during_the_create_is_kept() -> None:
    created = with_identity({"spec": {}}, "1")
    inadmissible = with_identity(
        workload(("QuotaReserved", "False", "Inadmissible")), resource_version="2"
    )
    queueing = queueing_whose_watch_answers_during_calls(RacingApi(created), inadmissible)

    admission = asyncio.run(queueing.admission(KEY, queued_job()))

    assert admission is not None
    assert admission.reason == "Inadmissible"
    assert "QuotaReserved Inadmissible" in admission.message
    assert queueing.workloads[KEY] is inadmissible


def test_a_created_workload_is_kept_when_the_watch_brought_nothing() -> None:
    created = with_identity({"spec": {}}, "1")
    queueing = Queueing(RacingApi(created), lambda function, *args: _now(function(*args)))

    admission = asyncio.run(queueing.admission(KEY, queued_job()))

    assert admission is not None and admission.reason == "Pending"
    assert queueing.workloads[KEY] is created


async def _now(value: Any) -> Any:
    return value
