"""The reconcile decision, pure: given a PSJob and its observed pods, what to do and what to report.

Three passes, each in its own module: `snapshot` freezes the attempt as observed, `transition`
decides the next phase, the pods to create or delete and the events, and `projection` writes
the status from both. Level-based: the decision depends only on the job (spec and the status
the operator wrote before) and the pods as they are now, never on which event arrived. Running
it twice on the same input gives the same answer, so bursts of pod events, retries and operator
restarts are safe.
"""

from collections.abc import Sequence
from datetime import datetime

from psjob_operator.kueue.admission import Admission
from psjob_operator.models import PSJob
from psjob_operator.observe import PodView
from psjob_operator.plan.decision import Decision, Event, EventType
from psjob_operator.plan.judging import restart_backoff
from psjob_operator.plan.outcome import Outcome, Verdict
from psjob_operator.plan.projection import project
from psjob_operator.plan.snapshot import take_snapshot
from psjob_operator.plan.transition import fail_at_once, transition
from psjob_operator.progress import Reading

__all__ = ["Decision", "Event", "EventType", "decide", "fail_now", "restart_backoff"]


def decide(
    job: PSJob,
    pods: Sequence[PodView],
    now: datetime,
    pod_group_crd: bool | None = None,
    admission: Admission | None = None,
    reading: Reading | None = None,
) -> Decision:
    """`pod_group_crd`: whether the gang scheduler's PodGroup CRD exists; None: no gang asked.
    `admission`: Kueue's answer for a queued job; None: the job is not queued.
    `reading`: server 0's latest progress; None: no new one (status.progress stays)."""
    snapshot = take_snapshot(job, pods)
    outcome = transition(job, snapshot, now, pod_group_crd, admission)
    return _decision(job, outcome, now, reading)


def fail_now(
    job: PSJob, pods: Sequence[PodView], now: datetime, reason: str, message: str
) -> Decision:
    """Fail the job at once for a cause found while acting, e.g. a pod the API server refused."""
    outcome = fail_at_once(job, take_snapshot(job, pods), now, Verdict(reason, message))
    return _decision(job, outcome, now)


def _decision(
    job: PSJob, outcome: Outcome, now: datetime, reading: Reading | None = None
) -> Decision:
    return Decision(
        status=project(job, outcome, now, reading),
        create_pods=outcome.create_pods,
        incarnations=outcome.incarnations,
        delete_pods=outcome.delete_pods,
        events=outcome.events,
        requeue_after=outcome.requeue_after,
        delete_job=outcome.delete_job,
    )
