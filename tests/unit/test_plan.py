"""The reconcile decision through a job's life: what users see in status, what happens to pods."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psjob_operator.models import ConditionType, JobStatus, Phase, PSJob, Role
from psjob_operator.observe import PodView
from psjob_operator.plan import Decision, decide, restart_backoff
from pydantic import ValidationError

from tests.support.pod_views import all_pod_views, pod_view

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(status: dict[str, Any] | None = None, **spec: Any) -> PSJob:
    body: dict[str, Any] = {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"image": "img", "servers": {"replicas": 1}, "workers": {"replicas": 2}, **spec},
    }
    if status is not None:
        body["status"] = status
    return PSJob.model_validate(body)


def step(job: PSJob, pods: list[PodView], now: datetime = T0) -> tuple[PSJob, Decision]:
    """Apply a decision's status to the job, as the operator's status patch does."""
    decision = decide(job, pods, now)
    updated = job.model_copy(update={"status": decision.status})
    return updated, decision


def status_of(job: PSJob) -> JobStatus:
    assert job.status is not None
    return job.status


def condition(job: PSJob, kind: ConditionType) -> tuple[str, str, str]:
    found = next(c for c in status_of(job).conditions if c.type == kind.value)
    return found.status, found.reason, found.message


def test_a_new_job_creates_every_pod_and_is_pending() -> None:
    job, decision = step(make_job(), [])
    assert decision.create_pods == [(Role.SERVER, 0), (Role.WORKER, 0), (Role.WORKER, 1)]
    assert status_of(job).phase == Phase.PENDING
    assert status_of(job).start_time == T0
    assert condition(job, ConditionType.READY)[0] == "False"
    assert "psjob.dev/role=worker" in str(status_of(job).worker_selector)


def test_pods_not_yet_seen_are_created_again_idempotently_and_nothing_else_happens() -> None:
    job, _ = step(make_job(), [])
    job, decision = step(job, [pod_view(job, Role.SERVER, 0, "Pending")])
    assert decision.create_pods == [(Role.WORKER, 0), (Role.WORKER, 1)]
    assert decision.delete_pods == []


def test_running_and_ready_when_every_pod_runs() -> None:
    job, _ = step(make_job(), [])
    job, decision = step(job, all_pod_views(job, "Pending"))
    assert status_of(job).phase == Phase.CREATED
    assert [e.reason for e in decision.events] == ["Created"]
    job, decision = step(job, all_pod_views(job))
    assert status_of(job).phase == Phase.RUNNING
    assert condition(job, ConditionType.READY)[0] == "True"
    assert status_of(job).workers.summary == "2/2" and status_of(job).servers.ready == 1
    assert [e.reason for e in decision.events] == ["Running"]
    assert decision.create_pods == []


def test_the_same_input_twice_changes_nothing() -> None:
    job, _ = step(make_job(), [])
    job, _ = step(job, all_pod_views(job))
    again, decision = step(job, all_pod_views(job), T0 + timedelta(minutes=5))
    assert again.status == job.status
    assert decision.events == [] and decision.create_pods == [] and decision.delete_pods == []


def test_success_stops_the_servers_and_reports_them_stopped() -> None:
    job, _ = step(make_job(), [])
    job, _ = step(job, all_pod_views(job))
    pods = [
        pod_view(job, Role.SERVER, 0),
        pod_view(job, Role.WORKER, 0, "Succeeded"),
        pod_view(job, Role.WORKER, 1, "Succeeded"),
    ]
    job, decision = step(job, pods, T0 + timedelta(seconds=30))
    assert status_of(job).phase == Phase.SUCCEEDED
    assert decision.delete_pods == ["j-server-0"]
    assert condition(job, ConditionType.SUCCEEDED)[0] == "True"
    assert condition(job, ConditionType.READY)[0] == "True"
    # The server ends with SIGTERM (143): still "Stopped", never a failure.
    pods[0] = pod_view(job, Role.SERVER, 0, "Failed", exit_code=143)
    job, decision = step(job, pods, T0 + timedelta(seconds=31))
    assert [(r.role, r.phase) for r in status_of(job).replicas] == [
        ("server", "Stopped"),
        ("worker", "Succeeded"),
        ("worker", "Succeeded"),
    ]
    assert status_of(job).servers.failed == 0 and status_of(job).phase == Phase.SUCCEEDED
    assert status_of(job).completion_time == T0 + timedelta(seconds=30)


def test_worker0_success_policy() -> None:
    job, _ = step(make_job(successPolicy="Worker0"), [])
    pods = [
        pod_view(job, Role.SERVER, 0),
        pod_view(job, Role.WORKER, 0, "Succeeded"),
        pod_view(job, Role.WORKER, 1),
    ]
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.SUCCEEDED
    assert sorted(decision.delete_pods) == ["j-server-0", "j-worker-1"]


def test_a_job_that_ends_before_it_is_seen_running_still_reports_its_pods_created() -> None:
    """A short job can succeed between two reconciles: Created is still true and announced."""
    job, _ = step(make_job(workers={"replicas": 1}), [])
    pods = [pod_view(job, Role.SERVER, 0), pod_view(job, Role.WORKER, 0, "Succeeded")]
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.SUCCEEDED
    assert condition(job, ConditionType.CREATED)[:2] == ("True", "PodsCreated")
    assert [e.reason for e in decision.events] == ["Created", "Succeeded"]


def test_a_permanent_exit_code_fails_the_job_naming_pod_and_code() -> None:
    job, _ = step(make_job(workers={"replicas": 2, "restartPolicy": "ExitCode"}), [])
    pods = all_pod_views(job)
    pods[2] = pod_view(job, Role.WORKER, 1, "Failed", exit_code=1)
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.FAILED
    status, reason, message = condition(job, ConditionType.FAILED)
    assert (status, reason) == ("True", "PodFailed")
    assert "j-worker-1" in message and "code 1" in message
    assert condition(job, ConditionType.STALLED)[0] == "True"
    assert sorted(decision.delete_pods) == ["j-server-0", "j-worker-0"]
    # Its pods were first seen with one already failed: they all existed, so Created comes first.
    assert [e.reason for e in decision.events] == ["Created", "PodFailed", "Failed"]


RESTART_JOB = {"recovery": "RestartJob"}
"""runPolicy of a job that restarts whole on any retryable failure, as every job did before
in-place recovery (test_plan_recovery.py)."""


def test_a_retryable_exit_code_restarts_the_whole_job_after_a_backoff() -> None:
    job, _ = step(
        make_job(workers={"replicas": 2, "restartPolicy": "ExitCode"}, runPolicy=RESTART_JOB), []
    )
    pods = all_pod_views(job)
    pods[1] = pod_view(job, Role.WORKER, 0, "Failed", exit_code=75)
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.RESTARTING
    assert status_of(job).restart_count == 1 and status_of(job).attempt == 1
    assert status_of(job).next_restart_time == T0 + timedelta(seconds=restart_backoff(1))
    # Every pod goes, the failed one too: the new attempt reuses the names.
    assert sorted(decision.delete_pods) == ["j-server-0", "j-worker-0", "j-worker-1"]
    # Old pods block the reused names: nothing is created while they are still there.
    old = [replace(p, deleting=True) for p in pods]
    job, decision = step(job, old, T0 + timedelta(seconds=10))
    assert decision.create_pods == [] and status_of(job).phase == Phase.RESTARTING
    # Once they are gone and the back-off passed, the new attempt starts.
    job, decision = step(job, [], T0 + timedelta(seconds=10))
    assert len(decision.create_pods) == 3
    assert status_of(job).phase == Phase.PENDING
    assert condition(job, ConditionType.RESTARTING)[0] == "False"


def test_the_backoff_is_waited_for() -> None:
    job, _ = step(make_job(runPolicy=RESTART_JOB), [])
    pods = all_pod_views(job)
    pods[0] = pod_view(job, Role.SERVER, 0, "Failed", exit_code=137)
    job, _ = step(job, pods)
    job, decision = step(job, [], T0 + timedelta(seconds=1))
    assert decision.create_pods == []
    assert decision.requeue_after == restart_backoff(1) - 1


def test_backoff_limit_stops_the_restarts() -> None:
    job, _ = step(make_job(runPolicy={"backoffLimit": 1, **RESTART_JOB}), [])
    for hour in (1, 2):
        later = T0 + timedelta(hours=hour)  # the back-off has long passed
        job, _ = step(job, [], later)
        pods = all_pod_views(job)
        pods[1] = pod_view(job, Role.WORKER, 0, "Failed", exit_code=75)
        job, _ = step(job, pods, later)
    assert status_of(job).phase == Phase.FAILED
    assert condition(job, ConditionType.FAILED)[1] == "BackoffLimitExceeded"
    assert status_of(job).restart_count == 1


def test_a_pod_deleted_by_someone_is_a_retryable_failure_even_under_never() -> None:
    job, _ = step(
        make_job(workers={"replicas": 2, "restartPolicy": "Never"}, runPolicy=RESTART_JOB), []
    )
    job, _ = step(job, all_pod_views(job))
    job, _ = step(job, all_pod_views(job)[:2])  # worker 1 vanished (drained node)
    assert status_of(job).phase == Phase.RESTARTING
    assert "j-worker-1 was deleted" in condition(job, ConditionType.RESTARTING)[2]


def test_a_succeeded_worker_cleaned_up_by_someone_is_not_recreated() -> None:
    job, _ = step(make_job(), [])
    pods = [
        pod_view(job, Role.SERVER, 0),
        pod_view(job, Role.WORKER, 0, "Succeeded"),
        pod_view(job, Role.WORKER, 1),
    ]
    job, _ = step(job, pods)
    job, decision = step(job, [pods[0], pods[2]])
    assert decision.create_pods == []
    assert status_of(job).workers.succeeded == 1


def test_deadline_fails_the_job_and_stops_its_pods() -> None:
    job, _ = step(make_job(runPolicy={"activeDeadlineSeconds": 60}), [])
    job, decision = step(job, all_pod_views(job), T0 + timedelta(seconds=20))
    assert decision.requeue_after == 40
    job, decision = step(job, all_pod_views(job), T0 + timedelta(seconds=60))
    assert status_of(job).phase == Phase.FAILED
    assert condition(job, ConditionType.FAILED)[1] == "DeadlineExceeded"
    assert len(decision.delete_pods) == 3


def test_ttl_deletes_a_finished_job() -> None:
    job, _ = step(make_job(runPolicy={"ttlSecondsAfterFinished": 30}), [])
    pods = [
        pod_view(job, Role.SERVER, 0, "Succeeded"),
        pod_view(job, Role.WORKER, 0, "Succeeded"),
        pod_view(job, Role.WORKER, 1, "Succeeded"),
    ]
    job, decision = step(job, pods, T0)
    assert decision.requeue_after == 30 and not decision.delete_job
    _, decision = step(job, pods, T0 + timedelta(seconds=30))
    assert decision.delete_job


def test_suspend_removes_pods_without_using_restarts_and_resume_recreates() -> None:
    job, _ = step(make_job(), [])
    job, _ = step(job, all_pod_views(job))
    suspended = job.model_copy(
        update={
            "spec": job.spec.model_copy(
                update={"run_policy": job.spec.run_policy.model_copy(update={"suspend": True})}
            )
        }
    )
    job, decision = step(suspended, all_pod_views(job))
    assert status_of(job).phase == Phase.SUSPENDED
    assert len(decision.delete_pods) == 3
    assert condition(job, ConditionType.SUSPENDED)[0] == "True"
    job, _ = step(job, [])
    resumed = job.model_copy(
        update={
            "spec": job.spec.model_copy(
                update={"run_policy": job.spec.run_policy.model_copy(update={"suspend": False})}
            )
        }
    )
    job, decision = step(resumed, [])
    assert len(decision.create_pods) == 3
    assert status_of(job).restart_count == 0
    assert status_of(job).attempt == 1  # the runtime resumes from its checkpoint
    assert condition(job, ConditionType.SUSPENDED)[0] == "False"


def test_scaling_workers_under_restart_job_restarts_with_the_new_world_size_uncounted() -> None:
    # Under InPlace (the default) the workers scale live: test_plan_scaling.py.
    job, _ = step(make_job(runPolicy=RESTART_JOB), [])
    job, _ = step(job, all_pod_views(job))
    scaled = job.model_copy(
        update={
            "spec": job.spec.model_copy(
                update={"workers": job.spec.workers.model_copy(update={"replicas": 3})}
            )
        }
    )
    job, decision = step(scaled, all_pod_views(job))
    assert status_of(job).phase == Phase.RESTARTING
    assert status_of(job).restart_count == 0 and status_of(job).attempt == 1
    assert len(decision.delete_pods) == 3
    job, decision = step(job, [])
    assert len(decision.create_pods) == 4


def test_backoff_grows_and_is_capped() -> None:
    assert [restart_backoff(n) for n in (1, 2, 3)] == [2, 4, 8]
    assert restart_backoff(30) == 300


def test_gang_scheduling_without_its_crd_is_reported_and_pods_still_start() -> None:
    job = make_job(runPolicy={"schedulingPolicy": {"minAvailable": 3}})
    updated = decide(job, [], T0, pod_group_crd=False)
    assert len(updated.create_pods) == 3
    job = job.model_copy(update={"status": updated.status})
    status, reason, message = condition(job, ConditionType.POD_GROUP)
    assert (status, reason) == ("False", "PodGroupCRDMissing")
    assert "scheduling.volcano.sh" in message
    assert [e.reason for e in updated.events] == ["PodGroupUnavailable"]
    installed = decide(make_job(runPolicy={"schedulingPolicy": {"minAvailable": 3}}), [], T0, True)
    job = job.model_copy(update={"status": installed.status})
    assert condition(job, ConditionType.POD_GROUP)[0] == "True"


# --- lost workers in async mode (runPolicy.maxFailedWorkers) ---------------------------------


def async_job(max_failed: int = 1, **spec: Any) -> PSJob:
    """One server, three workers, async training that tolerates `max_failed` lost workers."""
    return make_job(
        **{
            "workers": {"replicas": 3},
            "training": {"mode": "async"},
            "runPolicy": {"maxFailedWorkers": max_failed},
            **spec,
        }
    )


def running(job: PSJob) -> list[PodView]:
    return [pod_view(job, Role.SERVER, 0)] + [pod_view(job, Role.WORKER, i) for i in range(3)]


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def test_a_failed_worker_is_tolerated_and_the_job_succeeds_without_it() -> None:
    # ExitCode would fail the job on code 1: tolerance comes first.
    job, _ = step(async_job(workers={"replicas": 3, "restartPolicy": "ExitCode"}), [])
    job, _ = step(job, running(job))
    pods = running(job)
    pods[3] = pod_view(job, Role.WORKER, 2, "Failed", exit_code=1)
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.RUNNING
    assert decision.create_pods == [] and decision.delete_pods == []
    assert reasons(decision) == ["WorkerFailureTolerated"]
    (event,) = decision.events
    assert event.type == "Warning"
    assert "j-worker-2 exited with code 1" in event.message
    assert "1 of maxFailedWorkers 1" in event.message
    assert status_of(job).workers.failed == 1
    assert condition(job, ConditionType.READY)[0] == "True"
    # Level-based: seeing the same pods again posts nothing more.
    job, decision = step(job, pods, T0 + timedelta(seconds=5))
    assert decision.events == [] and decision.create_pods == []
    pods[1] = pod_view(job, Role.WORKER, 0, "Succeeded")
    pods[2] = pod_view(job, Role.WORKER, 1, "Succeeded")
    job, decision = step(job, pods, T0 + timedelta(seconds=30))
    assert status_of(job).phase == Phase.SUCCEEDED
    assert decision.delete_pods == ["j-server-0"]
    status, _, message = condition(job, ConditionType.SUCCEEDED)
    assert status == "True"
    assert "1 worker failed and was tolerated (maxFailedWorkers 1)" in message
    assert status_of(job).restart_count == 0 and status_of(job).attempt == 0
    assert status_of(job).workers.failed == 1 and status_of(job).workers.succeeded == 2
    worker2 = next(r for r in status_of(job).replicas if (r.role, r.index) == ("worker", 2))
    assert (worker2.phase, worker2.exit_code) == ("Failed", 1)
    # The server's SIGTERM after success changes none of it.
    pods[0] = pod_view(job, Role.SERVER, 0, "Failed", exit_code=143)
    job, _ = step(job, pods, T0 + timedelta(seconds=31))
    assert status_of(job).workers.failed == 1 and status_of(job).servers.failed == 0


def test_a_deleted_worker_pod_is_a_tolerated_failure_and_is_not_recreated() -> None:
    job, _ = step(async_job(), [])
    job, _ = step(job, running(job))
    pods = running(job)
    pods[2] = replace(pods[2], deleting=True)  # preempted: the pod is terminating
    job, decision = step(job, pods)
    assert reasons(decision) == ["WorkerFailureTolerated"]
    assert "j-worker-1 was deleted" in decision.events[0].message
    assert status_of(job).phase == Phase.RUNNING and status_of(job).workers.failed == 1
    del pods[2]  # and then gone
    job, decision = step(job, pods)
    assert decision.events == [] and decision.create_pods == []
    assert status_of(job).phase == Phase.RUNNING and status_of(job).workers.failed == 1
    # The lost worker has an entry of its own; the running ones are counted and in the runs.
    assert [(r.role, r.index, r.phase) for r in status_of(job).replicas] == [
        ("worker", 1, "Deleted")
    ]
    assert status_of(job).workers.model_dump(mode="json")["phases"] == "RDR"


def test_one_lost_worker_more_than_tolerated_restarts_the_job_with_a_fresh_count() -> None:
    job, _ = step(async_job(), [])
    job, _ = step(job, running(job))
    pods = running(job)
    pods[3] = pod_view(job, Role.WORKER, 2, "Failed", exit_code=137)
    job, _ = step(job, pods)
    pods[2] = pod_view(job, Role.WORKER, 1, "Failed", exit_code=75)
    job, decision = step(job, pods, T0 + timedelta(seconds=5))
    assert status_of(job).phase == Phase.RESTARTING
    assert status_of(job).restart_count == 1 and status_of(job).attempt == 1
    message = condition(job, ConditionType.RESTARTING)[2]
    # The worker that went over the limit is the one named, not the one tolerated before.
    assert "j-worker-1 exited with code 75 (one more than maxFailedWorkers 1)" in message
    assert reasons(decision) == ["PodFailed", "Restarting"]
    # The next attempt has every worker again, and nothing lost yet.
    job, decision = step(job, [], T0 + timedelta(minutes=1))
    assert len(decision.create_pods) == 4
    assert status_of(job).workers.failed == 0


def test_one_lost_worker_more_than_tolerated_fails_the_job_under_never() -> None:
    job, _ = step(async_job(workers={"replicas": 3, "restartPolicy": "Never"}), [])
    job, _ = step(job, running(job))
    pods = running(job)
    pods[2] = pod_view(job, Role.WORKER, 1, "Failed", exit_code=1)
    pods[3] = pod_view(job, Role.WORKER, 2, "Failed", exit_code=1)
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.FAILED
    assert "j-worker-2 exited with code 1 (one more than" in condition(job, ConditionType.FAILED)[2]
    assert reasons(decision) == ["PodFailed", "Failed"]


def test_a_server_failure_is_never_tolerated() -> None:
    job, _ = step(async_job(), [])
    job, _ = step(job, running(job))
    pods = running(job)
    pods[0] = pod_view(job, Role.SERVER, 0, "Failed", exit_code=75)
    job, _ = step(job, pods)
    assert status_of(job).phase == Phase.RESTARTING


def test_worker0_decides_success_so_its_failure_is_never_tolerated() -> None:
    job, _ = step(
        async_job(successPolicy="Worker0", workers={"replicas": 3, "restartPolicy": "Never"}), []
    )
    job, _ = step(job, running(job))
    pods = running(job)
    pods[1] = pod_view(job, Role.WORKER, 0, "Failed", exit_code=1)
    failed, decision = step(job, pods)
    assert status_of(failed).phase == Phase.FAILED
    assert "never tolerated" in condition(failed, ConditionType.FAILED)[2]
    # Another worker is tolerated; worker 0's success ends the job and stops the rest.
    pods = running(job)
    pods[2] = pod_view(job, Role.WORKER, 1, "Failed", exit_code=1)
    job, _ = step(job, pods)
    assert status_of(job).phase == Phase.RUNNING
    pods[1] = pod_view(job, Role.WORKER, 0, "Succeeded")
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.SUCCEEDED
    assert sorted(decision.delete_pods) == ["j-server-0", "j-worker-2"]
    # Worker 2, stopped by the operator, is Stopped: only the tolerated loss counts as failed.
    pods[3] = pod_view(job, Role.WORKER, 2, "Failed", exit_code=143, deleting=True)
    job, _ = step(job, pods)
    assert [r.phase for r in status_of(job).replicas if r.role == "worker"] == [
        "Succeeded",
        "Failed",
        "Stopped",
    ]
    assert status_of(job).workers.failed == 1


def test_sync_mode_tolerates_no_worker_failure() -> None:
    with pytest.raises(ValidationError, match="only applies to training mode async"):
        make_job(workers={"replicas": 3}, runPolicy={"maxFailedWorkers": 1})
    job, _ = step(make_job(workers={"replicas": 3}, runPolicy=RESTART_JOB), [])
    pods = running(job)
    pods[3] = pod_view(job, Role.WORKER, 2, "Failed", exit_code=137)
    job, decision = step(job, pods)
    assert status_of(job).phase == Phase.RESTARTING
    assert "WorkerFailureTolerated" not in reasons(decision)
