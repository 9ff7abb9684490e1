"""Generate the PSJob CustomResourceDefinition from the pydantic models.

The models are the one source of truth: this module turns their JSON Schema (draft 2020-12)
into the structural OpenAPI v3.0 schema that the API server enforces at admission, so that
`psjob validate` and `kubectl apply` refuse the same manifests.
"""

from typing import Any

from psjob_operator import yamlio
from psjob_operator.contract import (
    GROUP,
    KIND,
    PLURAL,
    ROLE_INFIX_LENGTH,
    SHORT_NAME,
    SINGULAR,
    VERSION,
)
from psjob_operator.models import JobStatus, PSJobSpec
from psjob_operator.models.job import JOB_NAME_PATTERN

_DROPPED_KEYS = frozenset({"title", "additionalProperties"})

NAME_RULES = [
    {
        "rule": f"self.metadata.name.matches('{JOB_NAME_PATTERN}')",
        "message": "metadata.name must be a DNS label: lower-case letters, digits and '-', "
        "starting with a letter and ending with a letter or digit",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "size(self.metadata.name) + "
        f"{ROLE_INFIX_LENGTH} + size(string(self.spec.servers.replicas - 1)) <= 63 && "
        f"size(self.metadata.name) + {ROLE_INFIX_LENGTH} + "
        "size(string(self.spec.workers.replicas - 1)) <= 63",
        "message": "metadata.name is too long: pod names <name>-worker-<index> and "
        "<name>-server-<index> must fit a 63-character DNS label; shorten the name",
        "reason": "FieldValueInvalid",
    },
]

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Servers",
        "type": "string",
        "description": "Ready/total server pods",
        "jsonPath": ".status.servers.summary",
    },
    {
        "name": "Workers",
        "type": "string",
        "description": "Ready/total worker pods",
        "jsonPath": ".status.workers.summary",
    },
    {
        "name": "Step",
        "type": "integer",
        "description": "Training step, as server 0 last reported it",
        "jsonPath": ".status.progress.step",
    },
    {
        "name": "Samples/s",
        "type": "number",
        "description": "Samples per second, as server 0 last reported them",
        "jsonPath": ".status.progress.samplesPerSecond",
    },
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restartCount"},
    {
        "name": "Recoveries",
        "type": "integer",
        "description": "Lost pods recreated in place (runPolicy.recovery InPlace)",
        "jsonPath": ".status.recoveries",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def to_structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref`s and rewrite JSON Schema 2020-12 idioms into Kubernetes' OpenAPI v3.0."""
    definitions = schema.get("$defs", {})
    return _convert(schema, definitions)


def _convert(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    node.pop("$defs", None)
    if "$ref" in node:
        target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    any_of = node.get("anyOf")
    if any_of and {"type": "null"} in any_of:
        (kept,) = [branch for branch in any_of if branch != {"type": "null"}]
        node.pop("anyOf")
        if node.get("default", ...) is None:
            node.pop("default")
        node = {**_convert(kept, definitions), **node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, definitions) for name, prop in value.items()}
        elif key in ("items",) and isinstance(value, dict):
            out[key] = _convert(value, definitions)
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], definitions)
    if out.get("type") == "object" and "properties" in out:
        _default_nested_objects(out)
    return {key: out[key] for key in sorted(out, key=_key_order)}


def _key_order(key: str) -> tuple[int, str]:
    """type and description first, properties last: the order people read a schema in."""
    leading = {"type": 0, "description": 1}
    return (leading.get(key, 3 if key in ("properties", "items") else 2), key)


def _default_nested_objects(obj: dict[str, Any]) -> None:
    """Give optional sub-objects `default: {}` so the API server fills their fields' defaults.

    The API server only defaults fields of objects that are present; without this, a PSJob
    without `training:` would be stored with no mode at all.
    """
    required = set(obj.get("required", ()))
    for name, prop in obj["properties"].items():
        if name in required or "default" in prop or prop.get("required"):
            continue  # an object with required fields has no valid empty default
        if prop.get("type") == "object" and any(
            "default" in sub for sub in prop.get("properties", {}).values()
        ):
            prop["default"] = {}


def openapi_schema() -> dict[str, Any]:
    spec = to_structural(PSJobSpec.model_json_schema(by_alias=True))
    status = to_structural(JobStatus.model_json_schema(by_alias=True))
    return {
        "type": "object",
        "description": "A parameter-server training job: servers that hold the parameters and "
        "workers that compute gradients.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            # Defaulted on every read, so that a job nobody has acted on yet shows
            # observedGeneration 0 rather than no status at all (which kstatus calls Current).
            "status": {**status, "default": {}},
        },
        "x-kubernetes-validations": NAME_RULES,
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["all"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.replicas",
                            "statusReplicasPath": ".status.workers.active",
                            "labelSelectorPath": ".status.workerSelector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `psjob crd` from the pydantic models; do not edit by hand.\n"
    return header + yamlio.dump(crd())
