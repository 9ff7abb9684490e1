"""Offline validation refuses bad manifests and names the field, as `psjob validate` users see."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from psjob_operator.cli import main
from psjob_operator.contract import CONTRACT_ENV
from psjob_operator.crd import crd
from psjob_operator.validation import (
    InvalidManifestError,
    InvalidManifestsError,
    load_psjobs,
    parse_psjob,
)

ROOT = Path(__file__).resolve().parents[2]
BAD_CASES: list[dict[str, Any]] = yaml.safe_load(
    (ROOT / "tests/data/bad-manifests.yaml").read_text()
)


def test_the_table_is_big_enough_and_every_case_differs() -> None:
    assert len(BAD_CASES) >= 20
    assert len({case["id"] for case in BAD_CASES}) == len(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES, ids=[case["id"] for case in BAD_CASES])
def test_bad_manifest_is_refused_naming_the_field(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidManifestError) as refused:
        parse_psjob(case["manifest"])
    paths = [error.path for error in refused.value.errors]
    assert any(path == case["field"] or path.startswith(case["field"]) for path in paths), (
        f"{case['id']}: expected an error at {case['field']}, got {refused.value}"
    )
    # Outside of the table's deliberate fault the manifest is valid, so only that field fails.
    assert all(path.startswith(case["field"].split("[")[0].rsplit(".", 1)[0]) for path in paths)


@pytest.mark.parametrize("case", BAD_CASES[:5], ids=[case["id"] for case in BAD_CASES[:5]])
def test_psjob_validate_exits_1_and_prints_the_field(
    case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(case["manifest"]))
    assert main(["validate", str(manifest)]) == 1
    assert case["field"] in capsys.readouterr().err


def test_messages_say_what_is_allowed() -> None:
    mode = next(case for case in BAD_CASES if case["id"] == "unknown-mode")
    with pytest.raises(InvalidManifestError) as refused:
        parse_psjob(mode["manifest"])
    message = str(refused.value)
    assert "'sync', 'async' or 'ssp'" in message and "'bsp'" in message

    ssp = next(case for case in BAD_CASES if case["id"] == "ssp-without-staleness")
    with pytest.raises(InvalidManifestError, match=r"set spec\.training\.staleness"):
        parse_psjob(ssp["manifest"])


def test_every_document_of_a_stream_is_checked() -> None:
    good = yaml.safe_dump(BAD_CASES[0]["manifest"] | {"spec": {"image": "x"}})
    bad = yaml.safe_dump(BAD_CASES[0]["manifest"])
    with pytest.raises(InvalidManifestsError) as refused:
        load_psjobs(f"{good}---\n{bad}---\n{bad}", "jobs.yaml")
    assert [p.name for p in refused.value.problems] == ["jobs.yaml#2 (bad)", "jobs.yaml#3 (bad)"]


def test_yaml_syntax_errors_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "broken.yaml"
    manifest.write_text("spec: [unclosed\n")
    assert main(["validate", str(manifest)]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_other_kinds_are_refused() -> None:
    with pytest.raises(InvalidManifestError, match=r"expected apiVersion: psjob\.dev/v1alpha1"):
        parse_psjob({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}})


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_examples_are_valid(example: Path) -> None:
    assert load_psjobs(example.read_text(), example.name)


def with_template(role: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    manifest["spec"].setdefault(role, {})["template"] = {"spec": {"containers": containers}}
    return manifest


def crd_rule_message(*path: str) -> str:
    """The message of the CRD's first validation rule at `path` (properties, `[]`: items)."""
    node = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    message: str = node["x-kubernetes-validations"][0]["message"]
    return message


@pytest.mark.parametrize("variable", CONTRACT_ENV)
@pytest.mark.parametrize("role", ["servers", "workers"])
def test_a_template_may_not_set_a_contract_variable_in_the_main_container(
    role: str, variable: str
) -> None:
    """Every contract variable, PSJOB_SECRET included: the operator's values are the only ones."""
    manifest = with_template(
        role,
        [
            {
                "name": "psjob",
                "env": [{"name": "OWN", "value": "1"}, {"name": variable, "value": "x"}],
            }
        ],
    )
    with pytest.raises(InvalidManifestError) as refused:
        parse_psjob(manifest)
    (error,) = refused.value.errors
    assert error.path == f"spec.{role}.template.spec.containers[0].env"
    # word for word what the API server answers (tests/e2e/operator/test_contract_admission.py)
    path = ("spec", role, "template", "spec", "containers", "[]")
    assert error.message == crd_rule_message(*path)
    assert variable in error.message and "use another name or spec.training.config" in error.message


def test_other_containers_and_other_variables_are_the_users() -> None:
    manifest = with_template(
        "workers",
        [
            {"name": "sidecar", "image": "busybox", "env": [{"name": "RANK", "value": "7"}]},
            {"name": "psjob", "env": [{"name": "RUN_ID", "value": "$(PSJOB_NAME)-$(RANK)"}]},
        ],
    )
    job = parse_psjob(manifest)
    assert (
        job.spec.workers.template.spec["containers"]
        == manifest["spec"]["workers"]["template"]["spec"]["containers"]
    )


@pytest.mark.parametrize(
    "template",
    [{"containers": "psjob"}, {"containers": [{"name": "psjob", "env": [{"value": "1"}]}]}],
    ids=["containers-not-a-list", "env-without-name"],
)
def test_template_containers_must_have_the_shape_the_api_server_checks(
    template: dict[str, Any],
) -> None:
    manifest = with_template("workers", [])
    manifest["spec"]["workers"]["template"]["spec"] = template
    with pytest.raises(InvalidManifestError, match=r"spec\.workers\.template\.spec\.containers"):
        parse_psjob(manifest)


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", ".inf"), ("lr", ".nan"), ("lr", "1e400"), ("eps", ".inf"), ("weightDecay", ".nan")],
)
def test_non_finite_numbers_are_refused(field: str, value: str) -> None:
    """kubectl cannot send these either: JSON has no Infinity or NaN, and 1e400 overflows."""
    manifest = (ROOT / "examples/minimal.yaml").read_text()
    manifest += f"  training:\n    optimizer:\n      {field}: {value}\n"
    with pytest.raises(InvalidManifestsError) as refused:
        load_psjobs(manifest, "job.yaml")
    (problem,) = refused.value.problems
    (error,) = problem.errors
    assert error.path == f"spec.training.optimizer.{field}"
    assert "finite number" in error.message


@pytest.mark.parametrize(
    "directory", ["../../etc", "checkpoints", "/ckpt/../etc", "/ckpt/./a", "/ckpt/", "//ckpt", "/"]
)
def test_checkpoint_dir_must_be_absolute_and_normalised(directory: str) -> None:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    manifest["spec"]["training"] = {"checkpoint": {"dir": directory}}
    with pytest.raises(InvalidManifestError) as refused:
        parse_psjob(manifest)
    (error,) = refused.value.errors
    assert error.path == "spec.training.checkpoint.dir"
    assert error.message.startswith("checkpoint.dir must be an absolute, normalised path")


@pytest.mark.parametrize("directory", ["/checkpoints", "/mnt/run.1/...", "/data/.ckpt"])
def test_absolute_checkpoint_dirs_are_accepted(directory: str) -> None:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    manifest["spec"]["training"] = {"checkpoint": {"dir": directory}}
    job = parse_psjob(manifest)
    assert job.spec.training.checkpoint is not None
    assert job.spec.training.checkpoint.dir == directory
