"""Give a pod process the identity of its ServiceAccount.

The agent asks the TokenRequest API for a token bound to the pod (it stops working when the
pod is deleted) and writes a kubeconfig with it; the process finds it through ``KUBECONFIG``,
as the kubernetes clients (and kubectl) do. So a pod can do exactly what RBAC grants its
ServiceAccount. ``automountServiceAccountToken: false`` gets no kubeconfig, as it gets no
token mount on a real node.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client

from psjob_localcluster.kubeconfig import write_kubeconfig

TOKEN_SECONDS = 24 * 3600


def wants_token(pod: client.V1Pod) -> bool:
    return pod.spec is None or pod.spec.automount_service_account_token is not False


def write_service_account_kubeconfig(
    core: client.CoreV1Api, pod: client.V1Pod, path: Path, *, server: str, ca_file: Path
) -> Path:
    """Request a pod-bound token for the pod's ServiceAccount and write it as a kubeconfig."""
    assert pod.metadata is not None and pod.spec is not None
    namespace = pod.metadata.namespace or "default"
    account = pod.spec.service_account_name or "default"
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[],
            expiration_seconds=TOKEN_SECONDS,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
            ),
        )
    )
    issued = core.create_namespaced_service_account_token(account, namespace, request)
    assert issued.status is not None
    return write_kubeconfig(
        path,
        server=server,
        ca_file=ca_file,
        user=f"system:serviceaccount:{namespace}:{account}",
        token=issued.status.token,
        namespace=namespace,
    )
