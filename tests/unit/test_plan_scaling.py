"""Live scaling (`kubectl scale psjob/NAME --replicas=N`) under runPolicy.recovery InPlace: the
missing workers are created beside the running pods, the surplus ones are deleted and never
judged, and nothing restarts; under RestartJob, or with any other spec change, the job restarts
whole as before.

The pods here are rendered by the operator's own render_pod and read back by observe.pod_view,
so each carries the PSJOB_NUM_WORKERS and spec digest of the spec it was made from."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from psjob_operator.models import ConditionType, Phase, PSJob, ReplicaPhase, Role
from psjob_operator.observe import PodView, pod_view
from psjob_operator.plan import Decision, decide
from psjob_operator.render import render_pod

from tests.unit import psjobs

T0 = psjobs.T0
TERMINATED = 143
"""A worker's exit code after SIGTERM: it told the servers it leaves."""


def make_job(workers: int = 2, **spec: Any) -> PSJob:
    """One server, `workers` workers, async training."""
    defaults = {"workers": {"replicas": workers}, "training": {"mode": "async"}}
    return psjobs.make_job(**{**defaults, **spec})


def scaled(job: PSJob, workers: int) -> PSJob:
    """The job after `kubectl scale --replicas=workers`: only spec.workers.replicas changes."""
    spec = job.spec.model_copy(
        update={"workers": job.spec.workers.model_copy(update={"replicas": workers})}
    )
    metadata = job.metadata.model_copy(update={"generation": (job.metadata.generation or 0) + 1})
    return job.model_copy(update={"spec": spec, "metadata": metadata})


def rendered(
    job: PSJob,
    role: Role,
    index: int,
    phase: str = "Running",
    exit_code: int | None = None,
    deleting: bool = False,
) -> PodView:
    """The pod the operator creates for `job` now, as the watch later shows it."""
    manifest = render_pod(job, role, index, job.status.attempt)
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code}}
    manifest["status"] = {
        "phase": phase,
        "containerStatuses": [{"name": "psjob", "ready": phase == "Running", "state": state}],
    }
    if deleting:
        manifest["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    view = pod_view(manifest)
    assert view is not None
    return view


def every_pod(job: PSJob) -> list[PodView]:
    return [
        rendered(job, role, index)
        for role in Role
        for index in range(job.spec.replica_spec(role).replicas)
    ]


def step(job: PSJob, pods: list[PodView], seconds: float = 0) -> tuple[PSJob, Decision]:
    """Decide and store the status, as the operator's status patch does."""
    decision = decide(job, pods, T0 + timedelta(seconds=seconds))
    return job.model_copy(update={"status": decision.status}), decision


def running(workers: int = 2, **spec: Any) -> tuple[PSJob, list[PodView]]:
    job, _ = step(make_job(workers, **spec), [])
    pods = every_pod(job)
    job, _ = step(job, pods)
    assert job.status.phase == Phase.RUNNING
    return job, pods


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def message(decision: Decision, reason: str) -> str:
    return next(e.message for e in decision.events if e.reason == reason)


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


def ready(job: PSJob) -> tuple[str, str]:
    found = next(c for c in job.status.conditions if c.type == ConditionType.READY.value)
    return found.status, found.reason


@pytest.mark.parametrize("mode", ["async", "ssp", "sync"])
def test_scaling_up_creates_only_the_new_workers_and_restarts_nothing(mode: str) -> None:
    extra = {"staleness": 2} if mode == "ssp" else {}
    job, pods = running(training={"mode": mode, **extra})
    job, decision = step(scaled(job, 4), pods)
    assert decision.create_pods == [(Role.WORKER, 2), (Role.WORKER, 3)]
    assert decision.delete_pods == []
    assert reasons(decision) == ["Scaled"]
    assert message(decision, "Scaled") == (
        "workers scaled from 2 to 4 in place: j-worker-2 to j-worker-3 are added; the servers "
        "and the other workers keep running"
    )
    status = job.status
    assert (status.phase, status.attempt, status.restart_count) == (Phase.RUNNING, 0, 0)
    assert status.observed_generation == 2
    assert (status.workers.desired, status.workers.summary) == (4, "2/4")
    assert ready(job) == ("False", "Running")  # until the new workers run

    pods += [rendered(job, Role.WORKER, 2), rendered(job, Role.WORKER, 3, "Pending")]
    job, decision = step(job, pods, 5)
    assert (decision.create_pods, decision.delete_pods, reasons(decision)) == ([], [], [])
    assert job.status.phase == Phase.RUNNING  # held while worker 3 starts
    pods[-1] = rendered(job, Role.WORKER, 3)
    job, decision = step(job, pods, 10)
    assert ready(job) == ("True", "PodsReady")
    assert job.status.workers.phases == (ReplicaPhase.RUNNING,) * 4


def test_a_new_worker_gets_the_new_count_and_its_rank_and_the_running_pods_the_same_env() -> None:
    job, _ = running()
    before = {index: env(render_pod(job, Role.WORKER, index)) for index in range(2)}
    bigger = scaled(job, 3)
    new = env(render_pod(bigger, Role.WORKER, 2))
    assert {
        k: new[k] for k in ("PSJOB_REPLICA_INDEX", "PSJOB_NUM_WORKERS", "WORLD_SIZE", "RANK")
    } == {
        "PSJOB_REPLICA_INDEX": "2",
        "PSJOB_NUM_WORKERS": "3",
        "WORLD_SIZE": "4",
        "RANK": "3",
    }
    changed = {"PSJOB_REPLICA_INDEX", "PSJOB_NUM_WORKERS", "WORLD_SIZE", "RANK"}
    same = {k: v for k, v in before[1].items() if k not in changed}
    assert {k: v for k, v in new.items() if k not in changed} == same  # secret, restart count
    assert new["PSJOB_RESTART_COUNT"] == "0"


def test_scaling_down_deletes_only_the_surplus_and_never_judges_it() -> None:
    job, pods = running(workers=3)
    job, decision = step(scaled(job, 1), pods)
    assert decision.delete_pods == ["j-worker-1", "j-worker-2"]
    assert decision.create_pods == []
    assert reasons(decision) == ["Scaled"]
    assert "j-worker-1 to j-worker-2 are removed" in message(decision, "Scaled")
    assert job.status.workers.phases == (ReplicaPhase.RUNNING,)
    assert (job.status.workers.desired, job.status.workers.summary) == (1, "1/1")
    assert ready(job) == ("True", "PodsReady")

    # Worker 1 leaves on SIGTERM (143), worker 2 had just finished (0); then both are gone.
    leaving = [
        *pods[:2],
        rendered(job, Role.WORKER, 1, "Failed", TERMINATED, deleting=True),
        rendered(job, Role.WORKER, 2, "Succeeded", 0, deleting=True),
    ]
    for look, seen in enumerate([leaving, pods[:2]], start=1):
        job, decision = step(job, seen, look)
        assert (decision.create_pods, decision.delete_pods, reasons(decision)) == ([], [], [])
        status = job.status
        assert (status.phase, status.restart_count, status.recoveries) == (Phase.RUNNING, 0, 0)
        assert (status.workers.failed, status.workers.succeeded, status.recovering) == (0, 0, [])
        assert status.replicas == []

    done = [pods[0], rendered(job, Role.WORKER, 0, "Succeeded", 0)]
    job, decision = step(job, done, 10)
    assert job.status.phase == Phase.SUCCEEDED
    assert message(decision, "Succeeded") == "all workers succeeded"


def test_all_workers_means_every_worker_of_the_current_count() -> None:
    job, pods = running()
    job, _ = step(scaled(job, 3), pods)
    finished = [pods[0], *(rendered(job, Role.WORKER, i, "Succeeded", 0) for i in range(2))]
    job, decision = step(job, [*finished, rendered(job, Role.WORKER, 2)], 5)
    assert job.status.phase == Phase.RUNNING and "Succeeded" not in reasons(decision)
    job, decision = step(job, [*finished, rendered(job, Role.WORKER, 2, "Succeeded", 0)], 9)
    assert job.status.phase == Phase.SUCCEEDED


def test_a_recovery_of_a_worker_scaled_away_ends_with_it() -> None:
    job, pods = running(workers=3)
    job, decision = step(job, pods[:3], 1)  # worker 2 vanished: recovered in place
    assert [e.replica for e in job.status.recovering] == ["worker-2"]
    job, decision = step(scaled(job, 2), pods[:3], 2)
    assert (decision.create_pods, job.status.recovering) == ([], [])
    assert ready(job) == ("True", "PodsReady")


def test_a_worker_scaled_away_then_back_is_created_again_once_its_old_pod_is_gone() -> None:
    job, pods = running()
    job, _ = step(scaled(job, 1), pods)
    job, _ = step(job, pods[:2], 1)
    job, decision = step(scaled(job, 2), pods[:2], 2)
    assert decision.create_pods == [(Role.WORKER, 1)]
    assert job.status.recoveries == 0


@pytest.mark.parametrize(
    "change",
    [
        {"image": "img:v2"},
        {"servers": {"replicas": 2}},
        {"workers": {"replicas": 3, "env": [{"name": "X", "value": "1"}]}},
    ],
)
def test_any_other_spec_change_still_restarts_the_job_whole(change: dict[str, Any]) -> None:
    job, pods = running()
    body = job.model_dump(by_alias=True)
    for key, value in change.items():
        body["spec"][key] = {**body["spec"][key], **value} if isinstance(value, dict) else value
    job, decision = step(PSJob.model_validate(body), pods)
    assert job.status.phase == Phase.RESTARTING and job.status.attempt == 1
    assert message(decision, "Restarting").startswith("the spec changed")
    assert "Scaled" not in reasons(decision)


def test_under_restart_job_a_scale_restarts_the_job_whole_as_before() -> None:
    job, pods = running(runPolicy={"recovery": "RestartJob"})
    job, decision = step(scaled(job, 3), pods)
    assert job.status.phase == Phase.RESTARTING
    assert (job.status.attempt, job.status.restart_count) == (1, 0)
    assert sorted(decision.delete_pods) == ["j-server-0", "j-worker-0", "j-worker-1"]
    job, decision = step(job, [], 1)
    assert len(decision.create_pods) == 4 and "Scaled" not in reasons(decision)


def test_a_pod_without_its_worker_count_is_judged_by_the_whole_spec() -> None:
    """A pod whose PSJOB_NUM_WORKERS cannot be read: restarting is the safe side."""
    job, pods = running()
    pods = [replace(pod, num_workers=None) for pod in pods]
    job, _ = step(scaled(job, 3), pods)
    assert job.status.phase == Phase.RESTARTING


@pytest.mark.parametrize("value", ["3", "x", "", "\uff13", "12345678"])
def test_the_worker_count_is_read_from_the_pod_only_when_it_is_a_plain_number(value: str) -> None:
    job, _ = running()
    manifest = render_pod(job, Role.WORKER, 0)
    for variable in manifest["spec"]["containers"][0]["env"]:
        if variable["name"] == "PSJOB_NUM_WORKERS":
            variable["value"] = value
    view = pod_view(manifest)
    assert view is not None
    assert view.num_workers == (3 if value == "3" else None)


def test_a_worker_scaled_back_before_its_old_pod_is_gone_is_recovered_in_place() -> None:
    """The status forgot it, so its terminating pod reads as lost: recreated once it is gone."""
    job, pods = running()
    job, _ = step(scaled(job, 1), pods)
    stopping = [*pods[:2], rendered(job, Role.WORKER, 1, deleting=True)]
    job, decision = step(scaled(job, 2), stopping, 1)
    assert reasons(decision) == ["Scaled", "Recovering"] and decision.create_pods == []
    job, decision = step(job, pods[:2], 2)
    assert decision.create_pods == [(Role.WORKER, 1)]
    assert decision.incarnations == {(Role.WORKER, 1): 1}
    assert job.status.restart_count == 0 and job.status.recoveries == 1
