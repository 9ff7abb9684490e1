"""spec.training.embeddings: bounds on dynamic tables, checked offline and at admission, and
handed to the runtime in PSJOB_TRAINING."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from psjob_operator.crd import crd
from psjob_operator.models import Role
from psjob_operator.models.training import Training
from psjob_operator.render import render_pod, spec_hash
from psjob_operator.validation import InvalidManifestError, parse_psjob
from psjob_runtime.training import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]


def with_embeddings(embeddings: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    manifest["spec"]["training"] = {"embeddings": embeddings}
    return manifest


def test_the_bounds_reach_the_runtime_as_it_reads_them() -> None:
    job = parse_psjob(with_embeddings({"admitAfter": 3, "maxRowsPerServer": 1000000}))
    pod = render_pod(job, Role.SERVER, 0)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    settings = TrainingSettings.model_validate_json(env["PSJOB_TRAINING"])
    assert settings.embeddings is not None
    assert settings.embeddings.admit_after == 3
    assert settings.embeddings.ttl_steps is None
    assert settings.embeddings.max_rows_per_server == 1_000_000


def test_a_job_without_bounds_hands_the_runtime_none() -> None:
    settings = TrainingSettings.model_validate_json(
        Training().model_dump_json(by_alias=True, exclude={"total_steps"})
    )
    assert settings.embeddings is None


@pytest.mark.parametrize(
    ("embeddings", "field", "message"),
    [
        ({"ttlSteps": 0}, "spec.training.embeddings.ttlSteps", "greater than or equal to 1"),
        ({"admitAfter": -1}, "spec.training.embeddings.admitAfter", "greater than or equal to 0"),
        ({"maxRowsPerServer": 1 << 31}, "spec.training.embeddings.maxRowsPerServer", "less than"),
        ({"maxRows": 5}, "spec.training.embeddings.maxRows", "unknown field"),
        ({}, "spec.training.embeddings", "sets no bound: set admitAfter, ttlSteps or"),
    ],
)
def test_bad_bounds_are_refused_naming_the_field(
    embeddings: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidManifestError) as refused:
        parse_psjob(with_embeddings(embeddings))
    (error,) = refused.value.errors
    assert error.path == field
    assert message in error.message


def test_admission_checks_the_same_bounds() -> None:
    (version,) = crd()["spec"]["versions"]
    training = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["training"]
    embeddings = training["properties"]["embeddings"]
    rules = [rule["rule"] for rule in embeddings["x-kubernetes-validations"]]
    assert rules == ["has(self.admitAfter) || has(self.ttlSteps) || has(self.maxRowsPerServer)"]
    fields = embeddings["properties"]
    assert (fields["admitAfter"]["minimum"], fields["admitAfter"]["maximum"]) == (0, (1 << 31) - 1)
    assert fields["ttlSteps"]["minimum"] == fields["maxRowsPerServer"]["minimum"] == 1
    assert "default" not in json.dumps(embeddings)  # an unset bound bounds nothing


def test_a_job_without_bounds_keeps_its_spec_hash_and_one_with_them_changes_it() -> None:
    """An operator upgrade restarts no job; setting bounds restarts the servers that read them."""
    plain = parse_psjob(yaml.safe_load((ROOT / "examples/minimal.yaml").read_text()))
    assert "embeddings" not in plain.spec.training.model_dump(by_alias=True)
    bounded = parse_psjob(with_embeddings({"ttlSteps": 100}))
    assert spec_hash(bounded) != spec_hash(plain)
