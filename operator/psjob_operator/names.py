"""Deterministic names and labels of a job's children.

Creation is idempotent because every child's name follows from the job alone: an operator that
restarts half-way through creating a job finds what it made and creates only the rest.
"""

from psjob_operator import contract
from psjob_operator.models import Role


def service_name(job_name: str, role: Role) -> str:
    return f"{job_name}-{role.value}"


def secret_name(job_name: str) -> str:
    """The job's authentication Secret (PSJOB_SECRET); `-psjob-` keeps it apart from users'."""
    return f"{job_name}-psjob-auth"


def pod_name(job_name: str, role: Role, index: int | str) -> str:
    return f"{job_name}-{role.value}-{index}"


def pod_fqdn(job_name: str, namespace: str, role: Role, index: int | str) -> str:
    """The stable DNS name that the headless service gives each pod."""
    return f"{pod_name(job_name, role, index)}.{service_name(job_name, role)}.{namespace}.svc"


def job_labels(job_name: str) -> dict[str, str]:
    return {
        contract.LABEL_NAME: "psjob",
        contract.LABEL_MANAGED_BY: contract.MANAGER,
        contract.LABEL_JOB_NAME: job_name,
    }


def role_labels(job_name: str, role: Role) -> dict[str, str]:
    return {**job_labels(job_name), contract.LABEL_ROLE: role.value}


def pod_labels(job_name: str, role: Role, index: int) -> dict[str, str]:
    return {**role_labels(job_name, role), contract.LABEL_REPLICA_INDEX: str(index)}


def selector(labels: dict[str, str]) -> str:
    """A label selector string, as `kubectl get -l` and the scale subresource take it."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
