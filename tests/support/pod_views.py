"""PodViews as the operator's kopf index would hold them, for tests of the pure decision."""

from dataclasses import replace
from typing import Any

from psjob_operator.models import PSJob, Role
from psjob_operator.observe import PodView
from psjob_operator.render import spec_hash


def pod_view(job: PSJob, role: Role, index: int, phase: str = "Running", **changes: Any) -> PodView:
    """A pod of the job's current attempt and spec; `changes` override any field."""
    view = PodView(
        name=f"{job.metadata.name}-{role.value}-{index}",
        role=role,
        index=index,
        attempt=job.status.attempt if job.status else 0,
        spec_hash=spec_hash(job),
        phase=phase,
        deleting=False,
        ready=phase == "Running",
        exit_code={"Succeeded": 0}.get(phase),
        reason=None,
        message=None,
        node="node-1",
        num_workers=job.spec.workers.replicas,
    )
    return replace(view, **changes)


def all_pod_views(job: PSJob, phase: str = "Running") -> list[PodView]:
    """One server and two workers, all in `phase`."""
    return [
        pod_view(job, Role.SERVER, 0, phase),
        pod_view(job, Role.WORKER, 0, phase),
        pod_view(job, Role.WORKER, 1, phase),
    ]
