"""Offline validation refuses bad manifests and names the field, as `psjob validate` users see."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from psjob_operator.cli import main
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
