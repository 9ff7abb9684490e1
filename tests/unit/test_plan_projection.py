"""The projection: the status written from what the transition decided, conditions by phase."""

from typing import Any

import pytest
from psjob_operator.models import ConditionType, JobStatus, Phase, PSJob, Role
from psjob_operator.observe import PodView
from psjob_operator.plan.outcome import Outcome, Verdict
from psjob_operator.plan.projection import project
from psjob_operator.plan.snapshot import take_snapshot

from tests.support.pod_views import all_pod_views, pod_view
from tests.unit.psjobs import T0, async_job, make_job, replica


def projected(job: PSJob, pods: list[PodView], phase: Phase | None, **fields: Any) -> JobStatus:
    outcome = Outcome(
        snapshot=take_snapshot(job, pods),
        phase=phase,
        restart_count=0,
        start_time=T0,
        completion_time=None,
        next_restart_time=None,
        **fields,
    )
    return project(job, outcome, T0)


def conditions(status: JobStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_a_failed_job_is_failed_and_stalled_and_no_longer_running() -> None:
    job = make_job()
    status = projected(job, [], Phase.FAILED, verdict=Verdict("DeadlineExceeded", "too long"))
    assert conditions(status) == {
        "Failed": ("True", "DeadlineExceeded"),
        "Running": ("False", "DeadlineExceeded"),
        "Stalled": ("True", "DeadlineExceeded"),
        "Ready": ("False", "Failed"),
    }


@pytest.mark.parametrize("phase", [None, *Phase])
def test_ready_is_always_present_so_kstatus_can_judge_the_job(phase: Phase | None) -> None:
    status = projected(make_job(), [], phase)
    assert ConditionType.READY.value in conditions(status)


def test_a_held_phase_writes_no_condition_but_ready() -> None:
    status = projected(make_job(), [], Phase.RESTARTING)
    assert list(conditions(status)) == ["Ready"]


def test_after_success_the_pods_the_operator_ends_are_stopped_and_a_lost_worker_stays() -> None:
    job = async_job(
        [replica("server", 0, "Running"), replica("worker", 2, "Failed", 1)],
        successPolicy="Worker0",
    )
    pods = [pod_view(job, Role.SERVER, 0), pod_view(job, Role.WORKER, 0, "Succeeded")]
    pods += [pod_view(job, Role.WORKER, 1), pod_view(job, Role.WORKER, 2, "Failed", exit_code=1)]
    status = projected(job, pods, Phase.SUCCEEDED, verdict=Verdict("WorkersSucceeded", "done"))
    assert [(r.role, r.index, r.phase) for r in status.replicas] == [
        ("server", 0, "Stopped"),
        ("worker", 0, "Succeeded"),
        ("worker", 1, "Stopped"),
        ("worker", 2, "Failed"),
    ]
    assert (status.servers.failed, status.workers.failed, status.workers.succeeded) == (0, 1, 1)
    assert conditions(status)["Ready"] == ("True", "Succeeded")


def test_only_replicas_not_running_get_entries_lost_ones_first_and_at_most_50() -> None:
    """A large job's status lists what a user looks for first, not every pod."""
    job = make_job(workers={"replicas": 100})
    pods = [pod_view(job, Role.SERVER, 0)]
    pods += [pod_view(job, Role.WORKER, i, "Pending") for i in range(80)]
    pods += [pod_view(job, Role.WORKER, i) for i in range(80, 90)]
    pods.append(pod_view(job, Role.WORKER, 90, "Failed", exit_code=137))
    status = projected(job, pods, Phase.CREATED)
    entries = [(r.role.value, r.index, r.phase.value, r.exit_code) for r in status.replicas]
    assert len(entries) == 50
    assert entries[-1] == ("worker", 90, "Failed", 137)
    assert entries[:-1] == [("worker", i, "Pending", None) for i in range(49)]
    dumped = status.model_dump(mode="json", by_alias=True)
    assert (dumped["servers"]["phases"], dumped["workers"]["phases"]) == ("R", "80P10RF")
    assert (status.workers.active, status.workers.ready, status.workers.failed) == (90, 10, 1)


def test_ready_counts_a_tolerated_loss_and_says_so() -> None:
    job = async_job()
    pods = [pod_view(job, Role.SERVER, 0), pod_view(job, Role.WORKER, 0)]
    pods += [pod_view(job, Role.WORKER, 1), pod_view(job, Role.WORKER, 2, "Failed", exit_code=1)]
    status = projected(
        job,
        pods,
        Phase.RUNNING,
        verdict=Verdict("PodsRunning", "every pod is running"),
        tolerated=frozenset({(Role.WORKER, 2)}),
    )
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.message) == (
        "True",
        "every remaining pod is ready (1 lost worker tolerated)",
    )
    assert status.workers.failed == 1 and status.workers.summary == "2/3"


def test_counts_follow_the_pods_of_the_attempt() -> None:
    job = make_job()
    pods = all_pod_views(job)
    pods[2] = pod_view(job, Role.WORKER, 1, "Pending")
    status = projected(job, pods, Phase.CREATED, verdict=Verdict("PodsPending", "1 of 3"))
    assert (status.workers.active, status.workers.ready, status.workers.summary) == (2, 1, "1/2")
    assert status.worker_selector is not None and "psjob.dev/role=worker" in status.worker_selector
    assert conditions(status)["Running"] == ("False", "PodsPending")
