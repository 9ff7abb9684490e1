"""Small pod manifests for tests: a Python snippet run by the project's interpreter."""

from __future__ import annotations

from typing import Any


def python_pod(
    name: str,
    code: str,
    *,
    restart_policy: str = "Never",
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    hostname: str | None = None,
    subdomain: str | None = None,
    service_account: str | None = None,
    grace_seconds: int | None = None,
) -> dict[str, Any]:
    """A pod whose one container runs ``python -c code`` (termination message from its logs
    on failure, as the psjob operator sets it)."""
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "containers": [
            {
                "name": "main",
                "image": "python:3.11-slim",
                "command": ["python", "-c", code],
                "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    }
    optional = {
        "hostname": hostname,
        "subdomain": subdomain,
        "serviceAccountName": service_account,
        "terminationGracePeriodSeconds": grace_seconds,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def headless_service(name: str, selector: dict[str, str], port: int) -> dict[str, Any]:
    """A headless Service that publishes its pods before they are ready, as psjob's are."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [{"port": port}],
        },
    }
