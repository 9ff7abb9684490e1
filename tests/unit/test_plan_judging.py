"""Judging an attempt: what a lost pod does to the job, and when the job has succeeded."""

import pytest
from psjob_operator.models import Role
from psjob_operator.plan.judging import Failure, first_failure, judge, succeeded
from psjob_operator.plan.snapshot import take_snapshot

from tests.support.pod_views import pod_view
from tests.unit.psjobs import async_job, make_job


def exited(role: Role, index: int, code: int) -> Failure:
    return Failure(f"j-{role.value}-{index}", role, index, code, deleted=False)


@pytest.mark.parametrize(
    ("workers", "failure", "restart_count", "verdict"),
    [
        ({"restartPolicy": "OnFailure"}, exited(Role.WORKER, 1, 1), 0, None),
        ({"restartPolicy": "Never"}, exited(Role.WORKER, 1, 137), 0, "PodFailed"),
        ({"restartPolicy": "ExitCode"}, exited(Role.WORKER, 1, 75), 0, None),
        ({"restartPolicy": "ExitCode"}, exited(Role.WORKER, 1, 1), 0, "PodFailed"),
        ({"restartPolicy": "OnFailure"}, exited(Role.WORKER, 1, 1), 3, "BackoffLimitExceeded"),
        # A deleted pod (eviction, drain) says nothing about the code: always retryable.
        ({"restartPolicy": "Never"}, Failure("j-worker-1", Role.WORKER, 1, None, True), 0, None),
    ],
)
def test_a_failure_restarts_the_job_or_fails_it(
    workers: dict[str, object], failure: Failure, restart_count: int, verdict: str | None
) -> None:
    job = make_job(workers={"replicas": 2, **workers})
    judgement = judge(failure, job.spec, restart_count)
    assert (None if judgement.failed is None else judgement.failed.reason) == verdict
    assert judgement.cause.startswith(f"pod {failure.pod} ")


def test_a_failure_message_names_the_pod_the_code_and_the_rule() -> None:
    job = make_job(workers={"replicas": 2, "restartPolicy": "Never"})
    failed = judge(exited(Role.WORKER, 1, 137), job.spec, 0).failed
    assert failed is not None
    assert (
        failed.message
        == "pod j-worker-1 exited with code 137, which restartPolicy Never does not retry"
    )
    failed = judge(exited(Role.SERVER, 0, 75), make_job().spec, 3).failed
    assert failed is not None
    assert failed.message == (
        "pod j-server-0 exited with code 75; the job already restarted 3 times (backoffLimit 3)"
    )


def test_a_worker_failure_over_the_tolerated_limit_says_so() -> None:
    spec = async_job().spec
    assert judge(exited(Role.WORKER, 2, 1), spec, 0).cause.endswith(
        "(one more than maxFailedWorkers 1)"
    )
    assert judge(exited(Role.SERVER, 0, 1), spec, 0).cause == "pod j-server-0 exited with code 1"
    worker0 = judge(exited(Role.WORKER, 0, 1), async_job(successPolicy="Worker0").spec, 0)
    assert worker0.cause.endswith("never tolerated)")


def test_all_workers_succeed_without_a_tolerated_loss_and_worker0_alone_decides() -> None:
    job = async_job()
    pods = [pod_view(job, Role.WORKER, 0, "Succeeded"), pod_view(job, Role.WORKER, 1, "Succeeded")]
    pods.append(pod_view(job, Role.WORKER, 2, "Failed", exit_code=137))
    snapshot = take_snapshot(job, pods)
    assert succeeded(snapshot, snapshot.tolerated_keys)
    assert not succeeded(snapshot, frozenset())  # without tolerance worker 2 is missing
    worker0 = async_job(successPolicy="Worker0")
    alone = take_snapshot(worker0, [pod_view(worker0, Role.WORKER, 0, "Succeeded")])
    assert succeeded(alone, frozenset())


def test_a_permanent_failure_seen_with_a_lost_peer_is_the_cause() -> None:
    # A worker's config error makes server 0 lose its peer and exit 75; the config error fails
    # the job at once instead of restarting it until backoffLimit.
    job = make_job(workers={"replicas": 2, "restartPolicy": "ExitCode"})
    pods = [
        pod_view(job, Role.SERVER, 0, "Failed", exit_code=75),
        pod_view(job, Role.WORKER, 0, "Running"),
        pod_view(job, Role.WORKER, 1, "Failed", exit_code=78),
    ]
    failure = first_failure(take_snapshot(job, pods))
    assert failure is not None and failure.pod == "j-worker-1"
    lone = first_failure(take_snapshot(job, pods[:2]))
    assert lone is not None and lone.pod == "j-server-0"
