"""The snapshot pass: each replica of the attempt as observed, and the lost workers tolerated."""

from dataclasses import replace

from psjob_operator.models import PSJob, ReplicaPhase, Role
from psjob_operator.plan.snapshot import Snapshot, take_snapshot

from tests.support.pod_views import all_pod_views, pod_view
from tests.unit.psjobs import async_job, make_job, replica


def phases(snapshot: Snapshot) -> dict[tuple[str, int], str]:
    return {(r.role.value, r.index): r.phase.value for r in snapshot.replicas}


def test_a_replica_whose_pod_is_gone_keeps_a_finished_phase_and_is_otherwise_deleted() -> None:
    job = make_job(
        [
            replica("server", 0, "Running"),
            replica("worker", 0, "Succeeded", 0),
            replica("worker", 1, "Running"),
        ]
    )
    snapshot = take_snapshot(job, [pod_view(job, Role.SERVER, 0)])
    assert phases(snapshot) == {
        ("server", 0): "Running",
        ("worker", 0): "Succeeded",
        ("worker", 1): "Deleted",
    }
    worker1 = snapshot.replicas[2]
    assert worker1.lost and worker1.reported is ReplicaPhase.RUNNING and not worker1.was_lost


def with_runs(job: PSJob, attempt: int = 0, **runs: str) -> PSJob:
    """The job with the phase runs of a status written for `attempt`, and no entries."""
    status = job.status.model_validate(
        {"attempt": attempt, **{role: {"phases": text} for role, text in runs.items()}}
    )
    return job.model_copy(update={"status": status})


def test_the_phase_runs_alone_remember_replicas_whose_pods_are_gone() -> None:
    """A running worker that vanished is lost; one that succeeded and was cleaned up stays
    succeeded; one never seen is not remembered at all (it is still to be created)."""
    job = with_runs(make_job(workers={"replicas": 3}), servers="R", workers="SR")
    snapshot = take_snapshot(job, [pod_view(job, Role.SERVER, 0)])
    assert phases(snapshot) == {
        ("server", 0): "Running",
        ("worker", 0): "Succeeded",
        ("worker", 1): "Deleted",
    }
    worker1 = snapshot.replicas[2]
    assert worker1.lost and worker1.reported is ReplicaPhase.RUNNING and not worker1.was_lost


def test_the_phase_runs_of_an_earlier_attempt_are_not_this_attempts_memory() -> None:
    job = with_runs(make_job(), attempt=1, servers="R", workers="2S")
    assert phases(take_snapshot(job, [], attempt=1)) == {
        ("server", 0): "Deleted",
        ("worker", 0): "Succeeded",
        ("worker", 1): "Succeeded",
    }
    assert take_snapshot(job, [], attempt=2).replicas == ()


def test_a_pod_being_deleted_before_it_finished_is_terminating_and_lost() -> None:
    job = make_job()
    pods = all_pod_views(job)
    pods[1] = replace(pods[1], deleting=True)
    pods[2] = replace(pods[2], phase="Succeeded", exit_code=0, deleting=True)
    snapshot = take_snapshot(job, pods)
    assert [r.phase for r in snapshot.replicas] == ["Running", "Terminating", "Succeeded"]
    assert [r.lost for r in snapshot.replicas] == [False, True, False]


def test_a_pod_phase_the_operator_does_not_know_is_reported_unknown() -> None:
    job = make_job()
    snapshot = take_snapshot(
        job,
        [pod_view(job, Role.SERVER, 0, "Unknown"), pod_view(job, Role.WORKER, 0, "Hibernating")],
    )
    assert [r.phase for r in snapshot.replicas] == [ReplicaPhase.UNKNOWN, ReplicaPhase.UNKNOWN]


def test_a_worker_lost_earlier_keeps_its_tolerated_place_over_a_lower_index() -> None:
    job = async_job([replica("worker", 2, "Failed", 137)])
    pods = [pod_view(job, Role.SERVER, 0), pod_view(job, Role.WORKER, 0)]
    pods += [
        pod_view(job, Role.WORKER, 1, "Failed", exit_code=1),
        pod_view(job, Role.WORKER, 2, "Failed", exit_code=137),
    ]
    snapshot = take_snapshot(job, pods)
    assert [(r.role, r.index) for r in snapshot.tolerated] == [(Role.WORKER, 2)]


def test_worker0_is_never_tolerated_when_it_decides_success() -> None:
    job = async_job(successPolicy="Worker0")
    pods = [pod_view(job, Role.SERVER, 0), pod_view(job, Role.WORKER, 0, "Failed", exit_code=1)]
    pods.append(pod_view(job, Role.WORKER, 1, "Failed", exit_code=1))
    assert take_snapshot(job, pods).tolerated_keys == {(Role.WORKER, 1)}


def test_a_running_pod_made_from_an_older_spec_makes_the_attempt_outdated() -> None:
    job = make_job()
    pods = all_pod_views(job)
    assert not take_snapshot(job, pods).outdated
    pods[2] = replace(pods[2], spec_hash="older", phase="Succeeded")
    assert not take_snapshot(job, pods).outdated  # a finished pod needs no new spec
    pods[1] = replace(pods[1], spec_hash="older")
    assert take_snapshot(job, pods).outdated


def test_the_next_attempt_starts_with_no_replicas_and_every_old_pod_stale() -> None:
    job = make_job([replica("server", 0, "Running")])
    pods = all_pod_views(job)
    snapshot = take_snapshot(job, pods).next_attempt()
    assert snapshot.attempt == 1 and snapshot.replicas == ()
    assert snapshot.stale() == pods and snapshot.current() == []
