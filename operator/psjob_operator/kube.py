"""The operator's only door to the API server: idempotent creates, deletes, status and events.

Blocking kubernetes-client calls, run by the reconciler in a thread pool. Responses that the
operator does not read are not deserialised (`_preload_content=False`): turning thousands of
created pods back into client objects would cost more than creating them. Such a response must
still be drained and handed back to the connection pool (`_done`); otherwise the next request
opens a new TLS connection, which cost the operator a third of its time creating a big job.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

from psjob_operator import contract
from psjob_operator.plan import Event

Manifest = dict[str, Any]

FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409


def _done(response: Any) -> None:
    """Read the rest of an unread response and return its connection to the pool."""
    response.drain_conn()
    response.release_conn()


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.extensions = client.ApiextensionsV1Api(api)
        self.networking = client.NetworkingV1Api(api)

    def create(self, manifest: Manifest) -> bool:
        """Create a Pod, Service, Secret or NetworkPolicy; False when it already exists (success
        too)."""
        namespace = manifest["metadata"]["namespace"]
        # The typed client wants V1Pod and the like; it sends plain manifests just the same.
        creators: dict[str, Callable[..., object]] = {
            "Pod": self.core.create_namespaced_pod,
            "Service": self.core.create_namespaced_service,
            "Secret": self.core.create_namespaced_secret,
            "NetworkPolicy": self.networking.create_namespaced_network_policy,
        }
        create = creators[manifest["kind"]]
        try:
            _done(create(namespace, manifest, _preload_content=False))
        except ApiException as exc:
            if exc.status == CONFLICT:
                return False
            raise
        return True

    def create_pod_group(self, manifest: Manifest) -> None:
        """Create the job's PodGroup (Volcano or scheduler-plugins); existing is fine."""
        group, version = manifest["apiVersion"].split("/")
        try:
            _done(
                self.custom.create_namespaced_custom_object(
                    group,
                    version,
                    manifest["metadata"]["namespace"],
                    "podgroups",
                    manifest,
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise

    def crd_installed(self, name: str) -> bool:
        try:
            _done(self.extensions.read_custom_resource_definition(name, _preload_content=False))
        except ApiException as exc:
            if exc.status in (NOT_FOUND, FORBIDDEN):
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        """Graceful delete (the pod's own grace period): the runtime gets SIGTERM first."""
        try:
            _done(self.core.delete_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise

    def patch_status(
        self, namespace: str, name: str, resource_version: str, status: Manifest
    ) -> Manifest:
        """Merge-patch the status, refused (409) if the job changed since `resource_version`.

        The precondition makes a status computed from a stale read fail instead of silently
        overwriting a newer one.
        """
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        response: Any = self.custom.patch_namespaced_custom_object_status(
            contract.GROUP,
            contract.VERSION,
            namespace,
            contract.PLURAL,
            name,
            body,
            _preload_content=False,
        )
        patched: Manifest = json.loads(response.data)
        return patched

    def get_job(self, namespace: str, name: str) -> Manifest | None:
        try:
            response: Any = self.custom.get_namespaced_custom_object(
                contract.GROUP,
                contract.VERSION,
                namespace,
                contract.PLURAL,
                name,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        job: Manifest = json.loads(response.data)
        return job

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            _done(
                self.custom.delete_namespaced_custom_object(
                    contract.GROUP,
                    contract.VERSION,
                    namespace,
                    contract.PLURAL,
                    name,
                    body=client.V1DeleteOptions(propagation_policy="Background"),
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise

    def post_event(self, job: Manifest, event: Event) -> None:
        """A core/v1 Event on the PSJob, shown by `kubectl describe psjob`."""
        metadata = job["metadata"]
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                generate_name=f"{metadata['name']}.", namespace=metadata["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=contract.API_VERSION,
                kind=contract.KIND,
                name=metadata["name"],
                namespace=metadata["namespace"],
                uid=metadata.get("uid"),
                resource_version=metadata.get("resourceVersion"),
            ),
            reason=event.reason,
            message=event.message[:1024],
            type=event.type.value,
            source=client.V1EventSource(component=contract.MANAGER),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        _done(
            self.core.create_namespaced_event(metadata["namespace"], body, _preload_content=False)
        )
