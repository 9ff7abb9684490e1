"""The plugin's reads from the API server: plain GETs whose JSON the pure views read as is.

The typed client is not used: importing its CoreV1Api builds every core model, seconds on a
small machine before each command, while the plugin needs four GETs. The ApiClient still
brings what the kubeconfig set up: TLS, client certificates and proxies in its connection pool,
a bearer token (refreshed by exec plugins) in its auth settings. Objects come back as
`kubectl get -o json` shows them (camelCase keys).
"""

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client
from kubernetes.client import ApiException

from psjob_operator import contract
from psjob_operator.models import Role

NOT_FOUND = 404
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
"""Seconds an answer may stay silent; a followed log has no such limit."""
JSON_BYTES_MAX = 256 * 1024 * 1024
"""Bytes of one JSON answer at most (the pods of the largest job take a fraction of it)."""
ERROR_BYTES_MAX = 65_536


def _headers(api: client.ApiClient) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "kubectl-psjob"}
    for setting in api.configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[setting["key"]] = setting["value"]
    return headers


def open_get(
    api: client.ApiClient,
    path: str,
    query: Mapping[str, str] | None = None,
    read_timeout: float | None = READ_TIMEOUT,
) -> Any:
    """The unread answer to GET `path` (urllib3's response); ApiException for 4xx and 5xx."""
    url = api.configuration.host + path + (f"?{urlencode(query)}" if query else "")
    response = api.rest_client.pool_manager.request(
        "GET",
        url,
        headers=_headers(api),
        preload_content=False,
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=read_timeout),
    )
    if response.status >= 400:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = response.read(ERROR_BYTES_MAX).decode(errors="replace")
        response.release_conn()
        raise error
    return response


def get_json(
    api: client.ApiClient, path: str, query: Mapping[str, str] | None = None
) -> dict[str, Any]:
    response = open_get(api, path, query)
    try:
        data = response.read(JSON_BYTES_MAX + 1)
    finally:
        response.release_conn()
    if len(data) > JSON_BYTES_MAX:
        raise ValueError(f"the API server's answer to {path} is over {JSON_BYTES_MAX} bytes")
    value = json.loads(data)
    return value if isinstance(value, dict) else {}


def namespace_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}"


def pod_path(namespace: str, pod: str) -> str:
    return f"{namespace_path(namespace)}/pods/{quote(pod, safe='')}"


def read_job(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The PSJob, or None when there is none of that name in the namespace."""
    path = (
        f"/apis/{contract.API_VERSION}/namespaces/{quote(namespace, safe='')}"
        f"/{contract.PLURAL}/{quote(name, safe='')}"
    )
    try:
        return get_json(api, path)
    except ApiException as error:
        if error.status == NOT_FOUND:
            return None
        raise


def read_pod(api: client.ApiClient, namespace: str, pod: str) -> dict[str, Any] | None:
    """The pod, or None when it is gone."""
    try:
        return get_json(api, pod_path(namespace, pod))
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
    listed = get_json(api, f"{namespace_path(namespace)}/pods", {"labelSelector": selector})
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
