"""The attempt's pods: which to create, how far they came, which go when the job ends."""

from dataclasses import replace

import pytest
from psjob_operator.models import Phase, Role
from psjob_operator.plan.pods import missing_pods, pods_to_clean, progress
from psjob_operator.plan.snapshot import take_snapshot

from tests.support.pod_views import all_pod_views, pod_view
from tests.unit.psjobs import async_job, make_job, replica


def test_a_name_still_held_by_an_older_pod_waits_and_a_finished_replica_is_not_recreated() -> None:
    job = make_job([replica("worker", 0, "Succeeded", 0)])
    old_server = replace(pod_view(job, Role.SERVER, 0), attempt=7)
    assert missing_pods(take_snapshot(job, [old_server])) == [(Role.WORKER, 1)]


def test_progress_counts_pending_pods_and_runs_once_every_pod_runs_or_is_done() -> None:
    job = make_job()
    assert progress(take_snapshot(job, all_pod_views(job)[:2]), frozenset()) is None
    pods = all_pod_views(job, "Pending")
    pods[0] = pod_view(job, Role.SERVER, 0)
    phase, verdict = progress(take_snapshot(job, pods), frozenset()) or (None, None)
    assert phase == Phase.CREATED and verdict is not None
    assert (verdict.reason, verdict.message) == ("PodsPending", "2 of 3 pods pending")
    pods = all_pod_views(job)
    pods[2] = pod_view(job, Role.WORKER, 1, "Succeeded")
    assert (progress(take_snapshot(job, pods), frozenset()) or (None,))[0] == Phase.RUNNING


def test_a_tolerated_lost_worker_is_not_waited_for() -> None:
    job = async_job()
    pods = [pod_view(job, Role.SERVER, 0), pod_view(job, Role.WORKER, 0)]
    pods.append(pod_view(job, Role.WORKER, 1))  # worker 2 vanished before it was seen
    snapshot = take_snapshot(job, pods)
    assert progress(snapshot, frozenset()) is None
    reached = progress(snapshot, frozenset({(Role.WORKER, 2)}))
    assert reached is not None and reached[0] == Phase.RUNNING


@pytest.mark.parametrize(
    ("policy", "succeeded", "deleted"),
    [
        ("All", True, ["j-server-0", "j-worker-0", "j-worker-1"]),
        ("Running", False, ["j-server-0", "j-worker-1"]),
        ("None", True, ["j-server-0"]),  # a server never ends by itself: it is stopped
        ("None", False, []),
    ],
)
def test_clean_pod_policy_of_a_finished_job(
    policy: str, succeeded: bool, deleted: list[str]
) -> None:
    job = make_job(runPolicy={"cleanPodPolicy": policy})
    pods = all_pod_views(job)
    pods[1] = pod_view(job, Role.WORKER, 0, "Succeeded")
    assert [p.name for p in pods_to_clean(job.spec, tuple(pods), succeeded)] == deleted
