"""The generated CRD: up to date, structural, documented, with the subresources users rely on."""

from pathlib import Path
from typing import Any

from psjob_operator.crd import crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        found += walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def version() -> dict[str, Any]:
    (only,) = crd()["spec"]["versions"]
    found: dict[str, Any] = only
    return found


def test_crds_folder_is_not_stale() -> None:
    committed = (ROOT / "crds/psjob.dev_psjobs.yaml").read_text()
    assert committed == crd_yaml(), "crds/ is stale: run `make crds` and commit the result"


def test_schema_is_structural() -> None:
    for path, node in walk(version()["schema"]["openAPIV3Schema"]):
        assert "$ref" not in node and "$defs" not in node, path
        assert node.get("additionalProperties") is not False, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        else:
            assert "type" in node, f"{path} has no type"


def test_every_spec_field_is_explained() -> None:
    spec = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = [
        path
        for path, node in walk(spec, "spec")
        if path != "spec" and not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert missing == []


def test_defaults_and_enums_reach_admission() -> None:
    spec = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    training = spec["training"]
    assert training["default"] == {}
    assert training["properties"]["mode"]["default"] == "sync"
    assert training["properties"]["mode"]["enum"] == ["sync", "async", "ssp"]
    assert spec["runPolicy"]["properties"]["backoffLimit"]["default"] == 3
    assert spec["workers"]["properties"]["replicas"]["minimum"] == 1
    rules = [r["rule"] for r in training["x-kubernetes-validations"]]
    assert "!has(self.mode) || self.mode != 'ssp' || has(self.staleness)" in rules


def test_scale_status_and_columns() -> None:
    v = version()
    assert v["subresources"]["status"] == {}
    assert v["subresources"]["scale"]["specReplicasPath"] == ".spec.workers.replicas"
    columns = [c["name"] for c in v["additionalPrinterColumns"]]
    assert columns == ["Phase", "Servers", "Workers", "Restarts", "Age"]
    assert crd()["spec"]["names"]["shortNames"] == ["psj"]
