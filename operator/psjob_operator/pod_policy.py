"""The operator's pod policy: which settings of a job's pod templates it refuses to create.

Templates are passed through to the pods, so whoever may create a PSJob gets any pod the
operator may create, in every namespace it watches. Where Pod Security Admission guards those
namespaces, the API server refuses a privileged pod anyway; where it does not, `restricted`
makes the operator refuse the settings that reach the node or another workload's identity:
host namespaces, privileged containers, capabilities beyond the container runtime's defaults,
host ports, hostPath volumes and a service account other than the namespace's `default`.
Pure: the reconciler fails the job with the message this returns (docs/security.md).
"""

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from psjob_operator.models import PSJob, Role


class PodPolicy(StrEnum):
    UNRESTRICTED = "unrestricted"
    RESTRICTED = "restricted"


REASON = "ForbiddenPodTemplate"

DEFAULT_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
"""What a container runtime grants by default; adding one of these grants nothing new.

The same list as Pod Security's baseline profile.
"""

_HOST_NAMESPACES = {
    "hostNetwork": "shares the node's network namespace",
    "hostPID": "shares the node's process namespace",
    "hostIPC": "shares the node's IPC namespace",
}
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_OWN_SERVICE_ACCOUNT = "default"


def violations(job: PSJob) -> list[str]:
    """Every setting `restricted` refuses, as `field: what it does`, in the job's field names."""
    return [
        f"spec.{role.value}s.template.spec.{where}: {what}"
        for role in Role
        for where, what in _pod_spec_violations(job.spec.replica_spec(role).template.spec)
    ]


def refusal(policy: PodPolicy, job: PSJob) -> str | None:
    """Why the operator will not create this job's pods under `policy`; None: it will."""
    if policy is PodPolicy.UNRESTRICTED:
        return None
    found = violations(job)
    if not found:
        return None
    return (
        f"the operator's pod policy is {policy.value} and refuses {'; '.join(found)}. Remove "
        "these settings, or run the job where the operator's administrator allows them"
    )


def _pod_spec_violations(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for field, what in _HOST_NAMESPACES.items():
        if spec.get(field) is True:
            yield field, what
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if account not in (None, _OWN_SERVICE_ACCOUNT):
        field = "serviceAccountName" if spec.get("serviceAccountName") else "serviceAccount"
        yield field, f"runs the pods as service account {account!r}, not {_OWN_SERVICE_ACCOUNT!r}"
    for index, volume in _objects(spec.get("volumes")):
        if "hostPath" in volume:
            yield f"volumes[{index}].hostPath", "mounts a folder of the node"
    for kind in _CONTAINER_LISTS:
        for index, container in _objects(spec.get(kind)):
            yield from (
                (f"{kind}[{index}].{where}", what)
                for where, what in _container_violations(container)
            )


def _container_violations(container: dict[str, Any]) -> Iterator[tuple[str, str]]:
    security = container.get("securityContext")
    security = security if isinstance(security, dict) else {}
    if security.get("privileged") is True:
        yield "securityContext.privileged", "runs a privileged container"
    capabilities = security.get("capabilities")
    added = capabilities.get("add") if isinstance(capabilities, dict) else None
    extra = sorted(set(added or ()) - DEFAULT_CAPABILITIES) if isinstance(added, list) else []
    if extra:
        yield "securityContext.capabilities.add", f"adds capabilities {', '.join(extra)}"
    for index, port in _objects(container.get("ports")):
        if port.get("hostPort"):
            yield f"ports[{index}].hostPort", "binds a port of the node"


def _objects(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a list field of the free-form template, by index; anything else: none."""
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, dict)]
