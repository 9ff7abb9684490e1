"""The bad-manifest table replayed through `kubectl apply`: the API server refuses each one,
names the field, and nothing is created."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from psjob_localcluster import LocalCluster
from psjob_operator.models import JobStatus

from tests.e2e.operator.support import ROOT, PSJobs

pytestmark = pytest.mark.cluster

BAD_CASES: list[dict[str, Any]] = yaml.safe_load(
    (ROOT / "tests/data/bad-manifests.yaml").read_text()
)


@pytest.mark.parametrize("case", BAD_CASES, ids=[case["id"] for case in BAD_CASES])
def test_api_server_refuses_bad_manifest_naming_the_field(
    case: dict[str, Any], cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    done = cluster.kubectl(
        "apply",
        "-n",
        psjobs.namespace,
        "-f",
        "-",
        input_text=yaml.safe_dump(case["manifest"]),
        check=False,
    )
    assert done.returncode != 0, f"{case['id']} was accepted: {done.stdout}"
    # The API server names nested fields by their path, e.g. spec.workers.replicas, or quotes
    # the unknown field; either way the field the user must change is in the message.
    field = case["field"].split("[")[0]
    assert field in done.stderr or field.rsplit(".", 1)[-1] in done.stderr, done.stderr
    assert psjobs.list_jobs() == []


def test_changing_the_optimizer_of_an_existing_job_is_refused(
    cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    job = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    psjobs.apply(job)
    job["spec"]["training"] = {"optimizer": {"name": "adam"}}
    done = cluster.kubectl(
        "apply", "-n", psjobs.namespace, "-f", "-", input_text=yaml.safe_dump(job), check=False
    )
    assert done.returncode != 0
    assert "spec.training.optimizer.name cannot change" in done.stderr


def test_a_job_no_operator_has_seen_reads_as_not_yet_observed(
    cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    """The CRD defaults the status: with no operator running, a new job shows observedGeneration
    0 below its generation, which GitOps tools (kstatus) read as InProgress, not Current. The
    GitOps health tests (tests/chart) judge exactly this object: the default JobStatus."""
    psjobs.apply(yaml.safe_load((ROOT / "examples/minimal.yaml").read_text()))
    job = psjobs.get("minimal")
    assert job["metadata"]["generation"] == 1
    assert job["status"]["observedGeneration"] == 0
    assert JobStatus.model_validate(job["status"]) == JobStatus()


def test_updates_that_would_break_max_failed_workers_are_refused(
    cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    """maxFailedWorkers is checked on every write, not only on create: `kubectl scale` through
    the scale subresource and a switch to sync mode are refused with the field and the fix."""
    job = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    job["spec"]["workers"]["replicas"] = 3
    job["spec"]["training"] = {"mode": "async"}
    job["spec"]["runPolicy"] = {"maxFailedWorkers": 2}
    psjobs.apply(job)

    def refused(*args: str, input_text: str | None = None) -> str:
        done = cluster.kubectl(*args, "-n", psjobs.namespace, input_text=input_text, check=False)
        assert done.returncode != 0, done.stdout
        return done.stderr

    scaled = refused("scale", "psjob/minimal", "--replicas=2")
    assert "maxFailedWorkers must be less than spec.workers.replicas" in scaled
    job["spec"]["training"]["mode"] = "sync"
    switched = refused("apply", "-f", "-", input_text=yaml.safe_dump(job))
    assert "set spec.training.mode: async or remove maxFailedWorkers" in switched
    stored = psjobs.get("minimal")["spec"]
    assert stored["workers"]["replicas"] == 3 and stored["training"]["mode"] == "async"


def test_in_place_recovery_beside_max_failed_workers_is_refused_naming_the_fix(
    cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    """A job that tolerates lost workers keeps restarting whole without saying so (existing
    manifests keep working); asking for InPlace beside it is refused with both fields."""
    job = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    job["spec"]["workers"]["replicas"] = 3
    job["spec"]["training"] = {"mode": "async"}
    job["spec"]["runPolicy"] = {"maxFailedWorkers": 1}
    psjobs.apply(job)
    job["spec"]["runPolicy"]["recovery"] = "InPlace"
    done = cluster.kubectl(
        "apply", "-n", psjobs.namespace, "-f", "-", input_text=yaml.safe_dump(job), check=False
    )
    assert done.returncode != 0, done.stdout
    assert "spec.runPolicy.recovery" in done.stderr
    assert "remove maxFailedWorkers (or set it to 0) or set recovery: RestartJob" in done.stderr
    assert "recovery" not in psjobs.get("minimal")["spec"]["runPolicy"]
