"""YAML output for people: no anchors or aliases, keys in the order they were built."""

from collections.abc import Iterable
from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out in full: anchors and aliases confuse readers and reviewers."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, width=100)


def dump_all(documents: Iterable[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False, width=100)
