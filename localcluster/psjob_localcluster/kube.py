"""Typed wrappers around the few untyped entry points of the kubernetes client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch


def client_from_kubeconfig(kubeconfig: Path) -> client.ApiClient:
    """An API client for the current context of ``kubeconfig``."""
    api: client.ApiClient = config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
    return api


def close_client(api: client.ApiClient) -> None:
    api.close()  # type: ignore[no-untyped-call]


def watch_stream(list_function: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """``kubernetes.watch.Watch().stream``: events as dicts."""
    stream: Iterator[dict[str, Any]] = watch.Watch().stream(list_function, **kwargs)  # type: ignore[no-untyped-call]
    return stream
