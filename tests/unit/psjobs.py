"""PSJobs and their status as the operator would have written it, for tests of the pure passes."""

from datetime import UTC, datetime
from typing import Any

from psjob_operator.models import PSJob

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(replicas: list[dict[str, Any]] | None = None, **spec: Any) -> PSJob:
    """One server and two workers unless `spec` says otherwise; `replicas`: status.replicas."""
    body: dict[str, Any] = {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"image": "img", "servers": {"replicas": 1}, "workers": {"replicas": 2}, **spec},
        "status": {"replicas": replicas or []},
    }
    return PSJob.model_validate(body)


def async_job(replicas: list[dict[str, Any]] | None = None, **spec: Any) -> PSJob:
    """One server, three workers, async training that tolerates one lost worker."""
    return make_job(
        replicas,
        **{
            "workers": {"replicas": 3},
            "training": {"mode": "async"},
            "runPolicy": {"maxFailedWorkers": 1},
            **spec,
        },
    )


def replica(role: str, index: int, phase: str, exit_code: int | None = None) -> dict[str, Any]:
    """A status.replicas entry of attempt 0."""
    return {"role": role, "index": index, "phase": phase, "restarts": 0, "exitCode": exit_code}
