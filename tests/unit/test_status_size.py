"""The status stays small at the schema's maximum job: it is written before any pod is created,
so a status over etcd's request limit (1.5 MiB) would stall the job for good."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from psjob_operator.models import JobStatus, Phase, PSJob, ReplicaPhase, Role
from psjob_operator.models.status import RECOVERING_MAX
from psjob_operator.observe import PodView
from psjob_operator.plan import decide
from psjob_operator.render import spec_hash

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MAX_REPLICAS = 10_000
"""The schema's maximum of `replicas` for each role."""
STATUS_BUDGET = 64 * 1024
LONG_NODE = "ip-10-123-234-111.eu-central-1.compute.internal-" + "n" * 200
"""Node names reach 253 characters; cloud ones are long."""


def largest_job(**run_policy: object) -> PSJob:
    return PSJob.model_validate(
        {
            "apiVersion": "psjob.dev/v1alpha1",
            "kind": "PSJob",
            "metadata": {"name": "big", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "image": "img",
                "servers": {"replicas": MAX_REPLICAS},
                "workers": {"replicas": MAX_REPLICAS},
                "training": {"mode": "async"},
                "runPolicy": run_policy,
            },
        }
    )


def pods(job: PSJob, phase_of: dict[Role, list[str]]) -> list[PodView]:
    digest = spec_hash(job)
    template = PodView(
        name="",
        role=Role.SERVER,
        index=0,
        attempt=job.status.attempt,
        spec_hash=digest,
        phase="Running",
        deleting=False,
        ready=True,
        exit_code=None,
        reason=None,
        message=None,
        node=LONG_NODE,
    )
    return [
        replace(
            template,
            name=f"big-{role.value}-{index}",
            role=role,
            index=index,
            phase=phase,
            ready=phase == "Running",
            exit_code={"Succeeded": 0, "Failed": 137}.get(phase),
        )
        for role, phases in phase_of.items()
        for index, phase in enumerate(phases)
    ]


def stored_bytes(status: JobStatus) -> int:
    """The status as the operator's patch sends it and etcd stores it."""
    return len(json.dumps(status.model_dump(mode="json", by_alias=True), separators=(",", ":")))


def step(job: PSJob, observed: list[PodView], now: datetime = T0) -> PSJob:
    decision = decide(job, observed, now)
    return job.model_copy(update={"status": decision.status})


def every(phase: str) -> dict[Role, list[str]]:
    return {role: [phase] * MAX_REPLICAS for role in Role}


def alternating() -> dict[Role, list[str]]:
    """The longest phase runs: every neighbour differs."""
    cycle = ["Running", "Pending", "Succeeded", "Unknown"]
    return {role: [cycle[i % len(cycle)] for i in range(MAX_REPLICAS)] for role in Role}


@pytest.mark.parametrize(
    "phases",
    [every("Pending"), every("Running"), alternating()],
    ids=["all-pending", "all-running", "alternating"],
)
def test_the_largest_job_has_a_status_under_64_kib(phases: dict[Role, list[str]]) -> None:
    job = step(largest_job(), [])
    assert stored_bytes(job.status) < STATUS_BUDGET
    job = step(job, pods(job, phases), T0 + timedelta(seconds=10))
    assert job.status.servers.active + job.status.workers.active > 0
    assert stored_bytes(job.status) < STATUS_BUDGET


def test_the_largest_job_losing_almost_every_worker_has_a_status_under_64_kib() -> None:
    """A zone outage: thousands of workers fail or vanish at once and are tolerated."""
    job = step(largest_job(maxFailedWorkers=MAX_REPLICAS - 1), [])
    job = step(job, pods(job, every("Running")))
    lost = every("Running")
    lost[Role.WORKER][1:] = ["Failed"] * (MAX_REPLICAS - 1)
    job = step(job, pods(job, lost)[:-500])  # and the last 500 workers vanished
    assert job.status.phase == Phase.RUNNING
    assert job.status.workers.failed == MAX_REPLICAS - 1
    assert stored_bytes(job.status) < STATUS_BUDGET


def test_the_largest_job_that_succeeded_has_a_status_under_64_kib() -> None:
    job = step(largest_job(), [])
    job = step(job, pods(job, every("Running")))
    done = every("Succeeded")
    done[Role.SERVER] = ["Running"] * MAX_REPLICAS
    job = step(job, pods(job, done))
    assert job.status.phase == Phase.SUCCEEDED
    assert job.status.workers.succeeded == MAX_REPLICAS
    assert stored_bytes(job.status) < STATUS_BUDGET
    assert {r.phase for r in job.status.replicas} <= {ReplicaPhase.STOPPED}


def test_the_largest_job_recovering_pods_in_place_has_a_status_under_64_kib() -> None:
    """In place, at most RECOVERING_MAX pods are recovered at once; a zone outage that takes
    more falls back to a whole restart instead of growing the status."""
    job = step(largest_job(), [])
    job = step(job, pods(job, every("Running")))
    lost = every("Running")
    lost[Role.WORKER][:RECOVERING_MAX] = ["Failed"] * RECOVERING_MAX
    job = step(job, pods(job, lost), T0 + timedelta(seconds=5))
    assert job.status.phase == Phase.RUNNING
    assert len(job.status.recovering) == RECOVERING_MAX
    assert stored_bytes(job.status) < STATUS_BUDGET
    lost[Role.WORKER][RECOVERING_MAX] = "Failed"
    job = step(job, pods(job, lost), T0 + timedelta(seconds=6))
    assert job.status.phase == Phase.RESTARTING and job.status.recovering == []
