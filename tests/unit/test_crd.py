"""The generated CRD: up to date, structural, documented, with the subresources users rely on."""

from pathlib import Path
from typing import Any

from psjob_operator.contract import CONTRACT_ENV
from psjob_operator.crd import crd, crd_yaml
from psjob_operator.models.training import CHECKPOINT_DIR_PATTERN

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
    assert columns == [
        "Phase",
        "Servers",
        "Workers",
        "Step",
        "Samples/s",
        "Restarts",
        "Recoveries",
        "Age",
    ]
    # `kubectl get psj` keeps its width; `-o wide` adds the in-place recoveries.
    wide = [c["name"] for c in v["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Recoveries"]
    assert crd()["spec"]["names"]["shortNames"] == ["psj"]


def test_a_templates_main_container_env_is_checked_against_the_whole_contract() -> None:
    """The rule is built from CONTRACT_ENV, so a variable added to the contract is covered; the
    lists it walks are bounded, or the API server could not price it and refuses the CRD."""
    spec = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for role in ("servers", "workers"):
        template_spec = spec[role]["properties"]["template"]["properties"]["spec"]
        assert template_spec["x-kubernetes-preserve-unknown-fields"] is True
        containers = template_spec["properties"]["containers"]
        container = containers["items"]
        (rule,) = container["x-kubernetes-validations"]
        assert rule["rule"].startswith("!has(self.name) || self.name != 'psjob' || ")
        assert rule["fieldPath"] == ".env"
        for name in CONTRACT_ENV:
            assert f"'{name}'" in rule["rule"] and name in rule["message"]
        assert containers["maxItems"] and container["properties"]["env"]["maxItems"]
        assert container["properties"]["env"]["items"]["required"] == ["name"]


def test_checkpoint_dir_must_match_the_absolute_path_pattern_at_admission() -> None:
    spec = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    directory = spec["training"]["properties"]["checkpoint"]["properties"]["dir"]
    rules = [r["rule"] for r in directory["x-kubernetes-validations"]]
    assert f"self.matches('{CHECKPOINT_DIR_PATTERN}')" in rules
    assert "\\" not in CHECKPOINT_DIR_PATTERN  # a CEL string literal would need it escaped
    assert directory["maxLength"] == 4096
