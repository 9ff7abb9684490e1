"""In-place recovery (runPolicy.recovery InPlace, the default): a lost pod is recreated alone,
what the status and Events say meanwhile, and when the job falls back to a whole restart."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from psjob_operator.models import (
    ConditionType,
    JobStatus,
    Phase,
    PSJob,
    Recovery,
    ReplicaPhase,
    Role,
)
from psjob_operator.models.status import RECOVERING_MAX
from psjob_operator.observe import PodView
from psjob_operator.plan import Decision, decide
from psjob_operator.plan.recovery import RECOVERY_SETTLE_SECONDS
from pydantic import ValidationError

from tests.support.pod_views import pod_view
from tests.unit import psjobs

T0 = psjobs.T0
TIMEOUT = 60
"""spec.training.timeoutSeconds of these jobs: how long a replacement may take to run."""


def make_job(**spec: Any) -> PSJob:
    """Two servers and two workers, recovery left to its default."""
    defaults = {
        "servers": {"replicas": 2},
        "workers": {"replicas": 2},
        "training": {"timeoutSeconds": TIMEOUT},
    }
    return psjobs.make_job(**{**defaults, **spec})


def step(job: PSJob, pods: list[PodView], seconds: float = 0) -> tuple[PSJob, Decision]:
    """Decide at T0 + `seconds` and store the status, as the operator's status patch does."""
    decision = decide(job, pods, T0 + timedelta(seconds=seconds))
    return job.model_copy(update={"status": decision.status}), decision


def running(job: PSJob) -> list[PodView]:
    spec = job.spec
    return [
        pod_view(job, role, index)
        for role in Role
        for index in range(spec.replica_spec(role).replicas)
    ]


def started(**spec: Any) -> PSJob:
    """A job whose pods run."""
    job, _ = step(make_job(**spec), [])
    job, _ = step(job, running(job))
    assert job.status.phase == Phase.RUNNING
    return job


def at(pods: list[PodView], role: Role, index: int) -> int:
    return next(i for i, p in enumerate(pods) if (p.role, p.index) == (role, index))


def without(pods: list[PodView], role: Role, index: int) -> list[PodView]:
    return [p for p in pods if (p.role, p.index) != (role, index)]


def replacement(
    job: PSJob, role: Role, index: int, phase: str, created: float, incarnation: int = 1
) -> PodView:
    return pod_view(
        job,
        role,
        index,
        phase,
        incarnation=incarnation,
        created=T0 + timedelta(seconds=created),
    )


def events(decision: Decision) -> list[tuple[str, str]]:
    return [(e.type.value, e.reason) for e in decision.events]


def condition(job: PSJob, kind: ConditionType) -> tuple[str, str, str]:
    found = next(c for c in job.status.conditions if c.type == kind.value)
    return found.status, found.reason, found.message


def recovering(job: PSJob) -> list[tuple[str, int]]:
    return [(e.replica, e.incarnation) for e in job.status.recovering]


# --- the spec -------------------------------------------------------------------------------


def test_in_place_is_the_default_but_a_job_tolerating_lost_workers_keeps_restarting_whole() -> None:
    assert make_job().spec.run_policy.effective_recovery is Recovery.IN_PLACE
    tolerant = make_job(training={"mode": "async"}, runPolicy={"maxFailedWorkers": 1})
    assert tolerant.spec.run_policy.effective_recovery is Recovery.RESTART_JOB
    chosen = make_job(runPolicy={"recovery": "RestartJob"})
    assert chosen.spec.run_policy.effective_recovery is Recovery.RESTART_JOB


def test_in_place_with_max_failed_workers_is_refused_naming_both_fields_and_the_fix() -> None:
    with pytest.raises(ValidationError) as refused:
        make_job(
            training={"mode": "async"}, runPolicy={"recovery": "InPlace", "maxFailedWorkers": 1}
        )
    message = str(refused.value)
    assert "recovery: InPlace" in message and "maxFailedWorkers" in message
    assert "set recovery: RestartJob" in message


# --- a lost pod is recreated alone ----------------------------------------------------------


def test_a_deleted_server_is_recreated_alone_and_the_job_keeps_running() -> None:
    job = started()
    pods = running(job)
    pods[at(pods, Role.SERVER, 1)] = replace(pods[at(pods, Role.SERVER, 1)], deleting=True)
    job, decision = step(job, pods, 10)
    assert events(decision) == [("Warning", "Recovering")]
    message = decision.events[0].message
    assert message.startswith("server-1: pod j-server-1 was deleted while running")
    assert message.endswith("recreating it in place (incarnation 1)")
    assert decision.delete_pods == [] and decision.create_pods == []  # its name is still held
    status = job.status
    assert status.phase == Phase.RUNNING and status.restart_count == 0 and status.attempt == 0
    assert recovering(job) == [("server-1", 1)]
    assert status.recovering[0].since == T0 + timedelta(seconds=10)
    assert status.recoveries == 1 and status.servers.recoveries == 1
    assert status.workers.recoveries == 0
    # Recovering in place is progress, not failure: Running holds, Ready says why it is not.
    assert condition(job, ConditionType.RUNNING)[0] == "True"
    ready, reason, ready_message = condition(job, ConditionType.READY)
    assert (ready, reason) == ("False", "Recovering")
    assert "server-1 (incarnation 1, since 00:00:10Z)" in ready_message

    # Gone: the replacement is created under the same name, marked as incarnation 1.
    gone = without(pods, Role.SERVER, 1)
    job, decision = step(job, gone, 14)
    assert decision.create_pods == [(Role.SERVER, 1)]
    assert decision.incarnations == {(Role.SERVER, 1): 1}
    assert decision.events == [] and job.status.recoveries == 1
    # Looked at again before the watch shows it: asked for again (the controller skips it).
    job, decision = step(job, gone, 15)
    assert decision.create_pods == [(Role.SERVER, 1)]

    back = [*gone, replacement(job, Role.SERVER, 1, "Pending", created=15)]
    job, decision = step(job, back, 16)
    assert decision.create_pods == [] and decision.events == []
    assert recovering(job) == [("server-1", 1)]

    back[-1] = replacement(job, Role.SERVER, 1, "Running", created=15)
    job, decision = step(job, back, 17)
    assert events(decision) == [("Normal", "Recovered")]
    assert decision.events[0].message == (
        "server-1 runs again 7s after it was lost (pod j-server-1, incarnation 1)"
    )
    assert job.status.recovering == [] and job.status.phase == Phase.RUNNING
    assert condition(job, ConditionType.READY)[:2] == ("True", "PodsReady")
    assert job.status.recoveries == 1 and job.status.restart_count == 0

    # The job succeeds with the replacement among its pods.
    done = [p for p in back if p.role is Role.SERVER]
    done += [pod_view(job, Role.WORKER, i, "Succeeded") for i in range(2)]
    job, decision = step(job, done, 60)
    assert job.status.phase == Phase.SUCCEEDED and job.status.recoveries == 1


def test_a_failed_worker_pod_is_deleted_then_recreated() -> None:
    job = started()
    pods = running(job)
    pods[at(pods, Role.WORKER, 0)] = pod_view(job, Role.WORKER, 0, "Failed", exit_code=137)
    job, decision = step(job, pods, 5)
    assert events(decision) == [("Warning", "Recovering")]
    assert "worker-0: pod j-worker-0 exited with code 137" in decision.events[0].message
    assert decision.delete_pods == ["j-worker-0"] and decision.create_pods == []
    assert job.status.workers.recoveries == 1 and job.status.servers.recoveries == 0
    worker0 = next(r for r in job.status.replicas if (r.role, r.index) == ("worker", 0))
    assert (worker0.phase, worker0.exit_code) == ("Failed", 137)
    # Deleted and gone: the name is free, the replacement is created.
    job, decision = step(job, without(pods, Role.WORKER, 0), 6)
    assert decision.create_pods == [(Role.WORKER, 0)] and decision.delete_pods == []
    assert decision.incarnations == {(Role.WORKER, 0): 1}


def test_a_pod_that_vanished_unseen_is_recreated_at_once() -> None:
    job = started()
    job, decision = step(job, without(running(job), Role.WORKER, 1), 5)
    assert events(decision) == [("Warning", "Recovering")]
    assert decision.create_pods == [(Role.WORKER, 1)]
    assert recovering(job) == [("worker-1", 1)]


def test_the_second_recovery_of_a_replica_is_its_next_incarnation() -> None:
    job = started()
    pods = running(job)
    pods[at(pods, Role.WORKER, 1)] = replacement(job, Role.WORKER, 1, "Running", created=0)
    job, _ = step(job, pods, 1)
    # Deleted (a preemption, not a crash) 30 s after it was created: recovered again.
    pods[at(pods, Role.WORKER, 1)] = replace(pods[at(pods, Role.WORKER, 1)], deleting=True)
    job, decision = step(job, pods, 30)
    assert events(decision) == [("Warning", "Recovering")]
    assert recovering(job) == [("worker-1", 2)]
    job, decision = step(job, without(pods, Role.WORKER, 1), 31)
    assert decision.incarnations == {(Role.WORKER, 1): 2}


def test_the_old_pods_exit_code_while_it_is_replaced_is_not_judged() -> None:
    """A deleted pod may exit 1 on its way out: that says nothing about the job."""
    job = started(workers={"replicas": 2, "restartPolicy": "ExitCode"})
    pods = running(job)
    pods[at(pods, Role.WORKER, 0)] = replace(pods[at(pods, Role.WORKER, 0)], deleting=True)
    job, _ = step(job, pods, 1)
    pods[at(pods, Role.WORKER, 0)] = pod_view(
        job, Role.WORKER, 0, "Failed", exit_code=1, deleting=True
    )
    job, decision = step(job, pods, 2)
    assert job.status.phase == Phase.RUNNING and decision.events == []
    assert recovering(job) == [("worker-0", 1)]


def test_a_permanent_failure_still_fails_the_job() -> None:
    job = started(workers={"replicas": 2, "restartPolicy": "ExitCode"})
    pods = running(job)
    pods[at(pods, Role.WORKER, 1)] = pod_view(job, Role.WORKER, 1, "Failed", exit_code=78)
    job, decision = step(job, pods, 5)
    assert job.status.phase == Phase.FAILED
    assert events(decision) == [("Warning", "PodFailed"), ("Warning", "Failed")]
    assert job.status.recovering == [] and job.status.recoveries == 0


def test_the_status_alone_carries_an_open_recovery_across_an_operator_restart() -> None:
    job = started()
    pods = without(running(job), Role.SERVER, 0)
    job, _ = step(job, pods, 100)
    # A new operator process reads the job from the API server: nothing but its status.
    stored = job.model_dump(mode="json", by_alias=True)
    assert stored["status"]["recovering"] == [
        {"replica": "server-0", "since": "2026-01-01T00:01:40Z", "incarnation": 1}
    ]
    fresh = PSJob.model_validate(stored)
    back = [*pods, replacement(fresh, Role.SERVER, 0, "Running", created=101)]
    _, decision = step(fresh, back, 109)
    assert decision.events[0].message.startswith("server-0 runs again 9s after it was lost")


def test_a_worker_and_a_server_lost_at_once_are_both_recovered() -> None:
    job = started()
    pods = without(without(running(job), Role.SERVER, 0), Role.WORKER, 1)
    job, decision = step(job, pods, 5)
    assert events(decision) == [("Warning", "Recovering"), ("Warning", "Recovering")]
    assert sorted(decision.create_pods) == [(Role.SERVER, 0), (Role.WORKER, 1)]
    assert recovering(job) == [("server-0", 1), ("worker-1", 1)]
    assert job.status.recoveries == 2


def test_a_worker_runs_out_as_the_job_succeeds_and_the_recovery_is_dropped() -> None:
    job = started(successPolicy="Worker0")
    pods = without(running(job), Role.WORKER, 1)
    job, _ = step(job, pods, 5)
    pods[at(pods, Role.WORKER, 0)] = pod_view(job, Role.WORKER, 0, "Succeeded")
    job, decision = step(job, pods, 6)
    assert job.status.phase == Phase.SUCCEEDED and job.status.recovering == []
    assert decision.create_pods == []


def test_suspending_a_job_drops_its_open_recoveries() -> None:
    job = started()
    job, _ = step(job, without(running(job), Role.WORKER, 0), 5)
    policy = job.spec.run_policy.model_copy(update={"suspend": True})
    suspended = job.model_copy(update={"spec": job.spec.model_copy(update={"run_policy": policy})})
    job, _ = step(suspended, without(running(job), Role.WORKER, 0), 6)
    assert job.status.phase == Phase.SUSPENDED and job.status.recovering == []


# --- falling back to a whole restart --------------------------------------------------------


def fell_back(job: PSJob, decision: Decision) -> str:
    """The RecoveryFallback message, after checking the job restarts whole."""
    assert job.status.phase == Phase.RESTARTING
    assert job.status.restart_count == 1 and job.status.attempt == 1
    assert job.status.recovering == []
    assert events(decision)[-2:] == [("Warning", "RecoveryFallback"), ("Normal", "Restarting")]
    assert condition(job, ConditionType.RESTARTING)[:2] == ("True", "RecoveryFallback")
    fallback = next(e for e in decision.events if e.reason == "RecoveryFallback")
    assert fallback.message.endswith(": falling back to a whole-job restart")
    return fallback.message


def test_a_replacement_that_crashes_soon_after_it_was_created_falls_back() -> None:
    job = started()
    pods = running(job)
    pods[at(pods, Role.SERVER, 1)] = replacement(job, Role.SERVER, 1, "Running", created=0)
    job, _ = step(job, pods, 10)
    crashed = replace(replacement(job, Role.SERVER, 1, "Failed", created=0), exit_code=137)
    pods[at(pods, Role.SERVER, 1)] = crashed
    job, decision = step(job, pods, 40)
    message = fell_back(job, decision)
    assert "pod j-server-1 exited with code 137 40s after it was recreated in place" in message
    assert f"within {RECOVERY_SETTLE_SECONDS:.0f}s" in message
    assert sorted(decision.delete_pods) == [f"j-{p.role.value}-{p.index}" for p in pods]


def test_a_replacement_that_crashes_after_it_settled_is_recovered_again() -> None:
    job = started()
    pods = running(job)
    pods[at(pods, Role.SERVER, 1)] = replacement(job, Role.SERVER, 1, "Running", created=0)
    job, _ = step(job, pods, 10)
    late = RECOVERY_SETTLE_SECONDS + 1
    pods[at(pods, Role.SERVER, 1)] = replace(
        replacement(job, Role.SERVER, 1, "Failed", created=0), exit_code=137
    )
    job, decision = step(job, pods, late)
    assert events(decision) == [("Warning", "Recovering")]
    assert recovering(job) == [("server-1", 2)]


def test_a_replacement_lost_before_it_ran_falls_back() -> None:
    job = started()
    pods = without(running(job), Role.WORKER, 0)
    job, _ = step(job, pods, 5)
    failing = replace(replacement(job, Role.WORKER, 0, "Failed", created=6), exit_code=137)
    job, decision = step(job, [*pods, failing], 8)
    message = fell_back(job, decision)
    assert message.startswith("the replacement of worker-0 (incarnation 1) was lost before it ran")


def test_a_replacement_not_running_within_the_timeout_falls_back() -> None:
    job = started()
    pods = without(running(job), Role.SERVER, 0)
    job, decision = step(job, pods, 5)
    assert decision.requeue_after == TIMEOUT  # looked at again when its time is up
    waiting = [*pods, replacement(job, Role.SERVER, 0, "Pending", created=6)]
    job, decision = step(job, waiting, 5 + TIMEOUT - 1)
    assert job.status.phase == Phase.RUNNING and decision.requeue_after == 1
    job, decision = step(job, waiting, 5 + TIMEOUT)
    message = fell_back(job, decision)
    assert message.startswith(f"server-0 (incarnation 1) is not running {TIMEOUT}s after it was")


def test_a_peer_giving_up_while_a_recovery_is_open_falls_back() -> None:
    """Exit 75: a process waited timeoutSeconds for a lost peer; the others will follow."""
    job = started()
    pods = without(running(job), Role.SERVER, 1)
    job, _ = step(job, pods, 5)
    pods[at(pods, Role.WORKER, 0)] = pod_view(job, Role.WORKER, 0, "Failed", exit_code=75)
    job, decision = step(job, pods, 6)
    message = fell_back(job, decision)
    assert "pod j-worker-0 exited with code 75 (it gave up waiting for a lost peer)" in message
    assert "while server-1 could not be recovered in time" in message


def test_a_lone_exit_75_is_recovered_in_place() -> None:
    job = started()
    pods = running(job)
    pods[at(pods, Role.WORKER, 0)] = pod_view(job, Role.WORKER, 0, "Failed", exit_code=75)
    job, decision = step(job, pods, 5)
    assert events(decision) == [("Warning", "Recovering")]


def test_two_servers_lost_at_once_fall_back() -> None:
    job = started()
    pods = [p for p in running(job) if p.role is Role.WORKER]
    job, decision = step(job, pods, 5)
    assert "server-0 and server-1 are lost at once" in fell_back(job, decision)


def test_a_second_server_lost_while_one_is_recovered_falls_back() -> None:
    job = started()
    pods = without(running(job), Role.SERVER, 0)
    job, _ = step(job, pods, 5)
    job, decision = step(job, without(pods, Role.SERVER, 1), 7)
    assert "server-0 and server-1 are lost at once" in fell_back(job, decision)


def test_a_fallback_past_the_backoff_limit_fails_the_job() -> None:
    job = started(runPolicy={"backoffLimit": 0})
    pods = [p for p in running(job) if p.role is Role.WORKER]
    job, decision = step(job, pods, 5)
    assert job.status.phase == Phase.FAILED
    status, reason, message = condition(job, ConditionType.FAILED)
    assert (status, reason) == ("True", "BackoffLimitExceeded")
    assert "are lost at once" in message and "(backoffLimit 0)" in message
    assert events(decision) == [("Warning", "RecoveryFallback"), ("Warning", "Failed")]


def test_more_lost_pods_than_the_status_tracks_fall_back() -> None:
    job = started(workers={"replicas": RECOVERING_MAX + 1})
    job, decision = step(job, [p for p in running(job) if p.role is Role.SERVER], 5)
    assert f"{RECOVERING_MAX + 1} pods are lost at once" in fell_back(job, decision)


def test_restart_job_keeps_the_whole_restart() -> None:
    job = started(runPolicy={"recovery": "RestartJob"})
    job, decision = step(job, without(running(job), Role.SERVER, 1), 5)
    assert job.status.phase == Phase.RESTARTING and job.status.restart_count == 1
    assert events(decision) == [("Warning", "PodFailed"), ("Normal", "Restarting")]
    assert job.status.recoveries == 0 and job.status.recovering == []


def test_recoveries_add_up_across_a_whole_restart() -> None:
    job = started()
    job, _ = step(job, without(running(job), Role.WORKER, 0), 5)
    assert job.status.recoveries == 1
    job, _ = step(job, [p for p in running(job) if p.role is Role.WORKER], 6)
    assert job.status.phase == Phase.RESTARTING
    assert job.status.recoveries == 1 and job.status.workers.recoveries == 1


def test_the_status_schema_holds_what_the_projection_writes() -> None:
    job = started()
    job, _ = step(job, without(running(job), Role.WORKER, 0), 5)
    dumped = job.status.model_dump(mode="json", by_alias=True)
    assert JobStatus.model_validate(dumped) == job.status
    assert dumped["workers"]["recoveries"] == 1
    phases = JobStatus.model_validate(dumped).workers.phases
    assert phases == (ReplicaPhase.DELETED, ReplicaPhase.RUNNING)
