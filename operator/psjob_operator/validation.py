"""Offline validation of PSJob manifests, with errors that name the field and the fix."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from psjob_operator.contract import API_VERSION, KIND
from psjob_operator.models import PSJob
from psjob_operator.models.base import FieldRuleError

_PYDANTIC_TYPE_TAGS = frozenset({"int", "str", "float", "bool", "list", "dict", "none"})


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidManifestError(Exception):
    """A manifest that is not a valid PSJob; `errors` names every offending field."""

    def __init__(self, name: str, errors: list[FieldError]) -> None:
        self.name = name
        self.errors = errors
        super().__init__(f"{name}: " + "; ".join(str(e) for e in errors))


def field_path(loc: Iterable[int | str]) -> str:
    """`('spec', 'workers', 'env', 0, 'name')` -> `spec.workers.env[0].name`.

    pydantic appends the member type of a union (`int`, `str`, `function-after[...]`) to the
    location; users never wrote those, so they are dropped.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.lower() in _PYDANTIC_TYPE_TAGS or "[" in part:
            continue
        else:
            path += f".{part}" if path else part
    return path


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field: remove it or fix its spelling (`kubectl explain psjob` lists them)"
    if kind == "missing":
        return "required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind not in ("value_error", "assertion_error") and "input" in error:
        given = error["input"]
        if not isinstance(given, dict | list):
            message += f" (got {given!r})"
    return message


def field_errors(exc: ValidationError) -> list[FieldError]:
    seen: dict[str, FieldError] = {}
    for error in exc.errors():
        path = field_path(error["loc"])
        rule = error.get("ctx", {}).get("error")
        if isinstance(rule, FieldRuleError):
            path = f"{path}.{rule.field}" if path else rule.field
        seen.setdefault(path + error["type"], FieldError(path, _message(error)))
    return list(seen.values())


def parse_psjob(document: Any, source: str = "manifest") -> PSJob:
    """Validate one decoded manifest; raise InvalidManifestError naming each bad field."""
    if not isinstance(document, dict):
        raise InvalidManifestError(
            source, [FieldError("", "a PSJob manifest must be a YAML mapping")]
        )
    name = f"{source} ({document.get('metadata', {}).get('name', '?')})"
    if document.get("kind") != KIND or document.get("apiVersion") != API_VERSION:
        raise InvalidManifestError(
            name,
            [FieldError("kind", f"expected apiVersion: {API_VERSION} and kind: {KIND}")],
        )
    try:
        return PSJob.model_validate(document)
    except ValidationError as exc:
        raise InvalidManifestError(name, field_errors(exc)) from None


def load_documents(text: str, source: str) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise InvalidManifestError(source, [FieldError("", f"not valid YAML: {exc}")]) from None


def load_psjobs(text: str, source: str) -> list[PSJob]:
    """Every document of a YAML stream as a PSJob; all errors of all documents at once."""
    jobs: list[PSJob] = []
    problems: list[InvalidManifestError] = []
    for position, document in enumerate(load_documents(text, source), start=1):
        try:
            jobs.append(parse_psjob(document, f"{source}#{position}"))
        except InvalidManifestError as exc:
            problems.append(exc)
    if problems:
        raise InvalidManifestsError(problems)
    return jobs


class InvalidManifestsError(Exception):
    def __init__(self, problems: list[InvalidManifestError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
