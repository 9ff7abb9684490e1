"""What a situation of the transition can do: announce, delete pods, look again later.

The transition's situations (`transition.py`) decide; this base holds the outcome they build and
the three actions they take on it, so that each action keeps its one rule (a pod is deleted
once, the earliest requeue wins) however many situations call it.
"""

from collections.abc import Sequence
from datetime import datetime

from psjob_operator.kueue.admission import Admission
from psjob_operator.models import PSJob
from psjob_operator.observe import PodView
from psjob_operator.plan.decision import Event, EventType
from psjob_operator.plan.outcome import Outcome
from psjob_operator.plan.snapshot import Snapshot


class Acting:
    """The outcome a transition builds, and the three things a situation can do to it."""

    def __init__(
        self,
        job: PSJob,
        snapshot: Snapshot,
        now: datetime,
        pod_group_crd: bool | None,
        admission: Admission | None = None,
    ) -> None:
        self.job, self.spec, self.now = job, job.spec, now
        self.previous = job.status
        self.pod_group_crd = pod_group_crd
        self.admission = admission
        self.out = Outcome(
            snapshot=snapshot,
            phase=self.previous.phase,
            restart_count=self.previous.restart_count,
            start_time=self.previous.start_time,
            completion_time=self.previous.completion_time,
            next_restart_time=self.previous.next_restart_time,
            recovering=(
                list(self.previous.recovering) if self.previous.attempt == snapshot.attempt else []
            ),
        )

    def event(self, kind: EventType, reason: str, message: str) -> None:
        self.out.events.append(Event(kind, reason, message))

    def delete(self, pods: Sequence[PodView]) -> None:
        """Once per pod, in linear time: a restart of the largest job deletes 20,000 pods."""
        queued = set(self.out.delete_pods)
        for pod in pods:
            if not pod.deleting and pod.name not in queued:
                self.out.delete_pods.append(pod.name)
                queued.add(pod.name)

    def requeue(self, seconds: float) -> None:
        current = self.out.requeue_after
        self.out.requeue_after = seconds if current is None else min(current, seconds)
