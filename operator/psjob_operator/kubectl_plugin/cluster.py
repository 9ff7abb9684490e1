"""The plugin's reads from the API server: a PSJob and its pods as plain JSON, camelCase keys.

Responses are read raw (`_preload_content=False`) and parsed as JSON, so the pure views see the
objects as `kubectl get -o json` shows them, whatever the client's models know of them.
"""

import json
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

from psjob_operator import contract
from psjob_operator.models import Role

NOT_FOUND = 404


def _json(response: Any) -> dict[str, Any]:
    value = json.loads(response.data)
    return value if isinstance(value, dict) else {}


def read_job(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The PSJob, or None when there is none of that name in the namespace."""
    custom = client.CustomObjectsApi(api)
    try:
        return _json(
            custom.get_namespaced_custom_object(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                name,
                _preload_content=False,
            )
        )
    except ApiException as error:
        if error.status == NOT_FOUND:
            return None
        raise


def list_pods(
    api: client.ApiClient, namespace: str, name: str, role: Role | None = None
) -> list[dict[str, Any]]:
    """The job's pods (label psjob.dev/job-name), of one role when `role` is given."""
    selector = f"{contract.LABEL_JOB_NAME}={name}"
    if role is not None:
        selector += f",{contract.LABEL_ROLE}={role.value}"
    listed = _json(
        client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
    )
    items = listed.get("items")
    return [pod for pod in items if isinstance(pod, dict)] if isinstance(items, list) else []


def api_message(error: ApiException) -> str:
    """The API server's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return f"{error.status} {error.reason}"
