"""Polling helpers for tests: wait for a condition with a deadline and a useful error."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from psjob_localcluster.objects import to_dict

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Call ``probe`` until it returns something other than None (or False); return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_pod_phase(
    core: client.CoreV1Api, namespace: str, name: str, phases: set[str], timeout: float = 60.0
) -> dict[str, Any]:
    """The pod (as API JSON) once its phase is one of ``phases``; the error names the phase it
    was in."""
    last: list[str] = ["(not found)"]

    def probe() -> dict[str, Any] | None:
        try:
            pod = to_dict(core.read_namespaced_pod(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        last[0] = pod.get("status", {}).get("phase", "(no status)")
        return pod if last[0] in phases else None

    try:
        return wait_for(probe, f"pod {namespace}/{name} to be {'/'.join(sorted(phases))}", timeout)
    except TimeoutError as error:
        raise TimeoutError(f"{error}; its phase is {last[0]}") from None


def wait_for_deletion(
    core: client.CoreV1Api, namespace: str, name: str, timeout: float = 60.0
) -> None:
    """Return once the pod object is gone."""

    def gone() -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(gone, f"pod {namespace}/{name} to be deleted", timeout)
