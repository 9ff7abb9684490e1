"""Each role's phase runs: every replica's phase in at most one character per replica."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psjob_operator.crd import crd
from psjob_operator.models import JobStatus, PSJob, ReplicaPhase
from pydantic import ValidationError

R, P, F = ReplicaPhase.RUNNING, ReplicaPhase.PENDING, ReplicaPhase.FAILED


def status(**workers: Any) -> JobStatus:
    return JobStatus.model_validate({"workers": workers})


def runs_of(phases: tuple[ReplicaPhase | None, ...]) -> str:
    text: str = status(phases=phases).workers.model_dump(mode="json")["phases"]
    return text


@pytest.mark.parametrize(
    ("phases", "text"),
    [
        ((), ""),
        ((R,) * 10_000, "10000R"),
        ((R, R, R, P), "3RP"),
        ((None, None, R, F, F), "2-R2F"),
        (tuple(ReplicaPhase), "PRSFUTXD"),
    ],
)
def test_phases_are_stored_as_runs_and_read_back(
    phases: tuple[ReplicaPhase | None, ...], text: str
) -> None:
    assert runs_of(phases) == text
    assert status(phases=text).workers.phases == phases


@given(st.lists(st.sampled_from([None, *ReplicaPhase]), max_size=300))
def test_the_runs_are_never_longer_than_one_character_per_replica(
    phases: list[ReplicaPhase | None],
) -> None:
    text = runs_of(tuple(phases))
    assert len(text) <= len(phases)
    assert status(phases=text).workers.phases == tuple(phases)


def test_a_phase_letter_this_operator_does_not_know_reads_as_unknown() -> None:
    """An older operator reading a newer one's status (after a rollback) keeps going."""
    assert status(phases="2RQ").workers.phases == (R, R, ReplicaPhase.UNKNOWN)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("3", "counts and phase letters"),
        ("3r", "counts and phase letters"),
        ("R3", "counts and phase letters"),
        ("2R 1P", "counts and phase letters"),
        ("99999999999R", "more than 100000 replicas"),
    ],
)
def test_text_that_is_not_runs_is_refused_naming_the_field(text: str, why: str) -> None:
    body = {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "j"},
        "spec": {"image": "img"},
        "status": {"workers": {"phases": text}},
    }
    with pytest.raises(ValidationError) as refused:
        PSJob.model_validate(body)
    (error,) = refused.value.errors()
    assert error["loc"] == ("status", "workers", "phases")
    assert why in error["msg"]


def test_the_crd_stores_the_runs_as_a_string_the_api_server_checks() -> None:
    (version,) = crd()["spec"]["versions"]
    workers = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["workers"]
    phases = workers["properties"]["phases"]
    assert phases["type"] == "string" and phases["pattern"] == "^([0-9]*[A-Z-])*$"
    assert "'3RP' is replicas 0-2 Running and 3 Pending" in phases["description"]
