"""Plain-dict access for tests: manifests in, API JSON out.

The generated client types every field as optional, which makes strictly typed tests noisy;
tests read objects as the JSON the API returns (``pod["status"]["phase"]``) instead.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, utils


def to_dict(model: object) -> dict[str, Any]:
    """A client model as the API's JSON (camelCase keys, no null fields)."""
    data = client.ApiClient().sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    assert isinstance(data, dict)
    return data


def create(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    """Create any built-in object (or a List of them) from its manifest in ``namespace``."""
    utils.create_from_dict(api, manifest, namespace=namespace)  # type: ignore[no-untyped-call]
