"""The second pass: from the snapshot and the previous status, the job's next phase and actions.

Each method is one situation of the job's life; `run` picks the situation from the previous
phase and the spec, as the transitions of Kubeflow's training-operator do. What the status then
says about it is the projection's business: this pass only records what happened and why.
"""

from datetime import datetime, timedelta

from psjob_operator.conditions import is_true
from psjob_operator.kueue.admission import Admission
from psjob_operator.models import ConditionType, Phase, PSJob, Recovery
from psjob_operator.plan.acting import Acting
from psjob_operator.plan.decision import EventType
from psjob_operator.plan.judging import (
    Failure,
    first_failure,
    judge,
    newly_tolerated,
    restart_backoff,
    succeeded,
    success_message,
)
from psjob_operator.plan.outcome import Outcome, Verdict
from psjob_operator.plan.pods import (
    POD_GROUP_MISSING,
    all_created,
    missing_pods,
    pod_group_was_fine,
    pods_to_clean,
    progress,
    scaled_message,
)
from psjob_operator.plan.recovery import plan_recovery
from psjob_operator.plan.snapshot import Snapshot


class Transition(Acting):
    """The situations of a job's life, each one method; `run` picks one."""

    def run(self) -> Outcome:
        phase = self.previous.phase
        if phase in (Phase.SUCCEEDED, Phase.FAILED):
            self.finished()
        elif self.spec.run_policy.suspend:
            self.suspend()
        elif self.admission is not None and not self.admission.admitted:
            self.queued(self.admission)
        elif self.deadline_passed():
            deadline = self.spec.run_policy.active_deadline_seconds
            ran_long = f"the job ran longer than activeDeadlineSeconds={deadline}"
            self.fail(Verdict("DeadlineExceeded", ran_long))
        elif phase == Phase.RESTARTING:
            self.restart_pending()
        else:
            if phase == Phase.SUSPENDED:
                self.resume()
            elif phase == Phase.QUEUED and self.admission is not None:
                self.admitted(self.admission)
            self.active()
        return self.out

    def finished(self) -> None:
        """Succeeded or Failed for good: clean up by policy, and honour the TTL."""
        self.out.recovering = []
        succeeded = self.out.phase == Phase.SUCCEEDED
        self.delete(pods_to_clean(self.spec, self.out.snapshot.pods, succeeded))
        ttl = self.spec.run_policy.ttl_seconds_after_finished
        if ttl is not None and self.out.completion_time is not None:
            due = self.out.completion_time + timedelta(seconds=ttl)
            remaining = (due - self.now).total_seconds()
            if remaining <= 0:
                self.out.delete_job = True
            else:
                self.requeue(remaining)

    def suspend(self) -> None:
        self.delete(self.out.snapshot.pods)
        self.out.recovering = []
        if self.previous.phase != Phase.SUSPENDED:
            self.event(
                EventType.NORMAL, "Suspended", "spec.runPolicy.suspend is true: pods removed"
            )
        self.out.phase = Phase.SUSPENDED
        self.out.start_time = None
        self.out.verdict = Verdict("Suspended", "the job is suspended")

    def resume(self) -> None:
        """A resumed job that had pods starts a new attempt: the runtime resumes its checkpoint."""
        if self.out.snapshot.replicas:
            self.out.snapshot = self.out.snapshot.next_attempt()
        self.out.phase = Phase.PENDING
        self.out.resumed = True
        self.event(EventType.NORMAL, "Resumed", "spec.runPolicy.suspend is false: creating pods")

    def queued(self, admission: Admission) -> None:
        """Kueue has not admitted the job, or evicted it: no pod may run. Evicted pods stop
        gracefully (the servers write their checkpoint on SIGTERM) and no restart is counted."""
        self.delete(self.out.snapshot.pods)
        self.out.recovering = []
        if self.previous.phase != Phase.QUEUED:
            kind = EventType.WARNING if admission.evicted else EventType.NORMAL
            self.event(kind, "Evicted" if admission.evicted else "Queued", admission.message)
        self.out.phase = Phase.QUEUED
        self.out.start_time = None
        self.out.verdict = Verdict(admission.reason, admission.message)
        if admission.retry_after is not None:
            self.requeue(admission.retry_after)

    def admitted(self, admission: Admission) -> None:
        """Kueue admitted the job: pods of an earlier admission mean a new attempt, which
        resumes from the servers' checkpoint."""
        if self.out.snapshot.replicas:
            self.out.snapshot = self.out.snapshot.next_attempt()
        self.out.phase = Phase.PENDING
        self.out.admitted = admission.message
        self.event(EventType.NORMAL, "Admitted", f"{admission.message}: creating pods")

    def deadline_passed(self) -> bool:
        deadline = self.spec.run_policy.active_deadline_seconds
        if deadline is None or self.out.start_time is None:
            return False
        due = self.out.start_time + timedelta(seconds=deadline)
        remaining = (due - self.now).total_seconds()
        if remaining > 0:
            self.requeue(remaining)
            return False
        return True

    def restart_pending(self) -> None:
        """Old pods go first (their names are reused), then the back-off, then new pods."""
        leftovers = self.out.snapshot.stale()
        self.delete(leftovers)
        if leftovers:
            return
        due = self.out.next_restart_time
        if due is not None and due > self.now:
            self.requeue((due - self.now).total_seconds())
            return
        self.out.next_restart_time = None
        self.out.started_attempt = self.out.attempt
        self.out.phase = Phase.PENDING
        self.active()

    def active(self) -> None:
        snapshot = self.out.snapshot
        leftovers = snapshot.stale()
        if leftovers:
            self.delete(leftovers)
            return
        if snapshot.outdated:
            self.restart("SpecChanged", "the spec changed: restarting with the new spec", False)
            return
        self.scale()
        self.out.tolerated = snapshot.tolerated_keys
        self.announce_created()
        done = succeeded(snapshot, self.out.tolerated)
        if not done and not self.judge_losses():
            return
        for message in newly_tolerated(snapshot):
            self.event(EventType.WARNING, "WorkerFailureTolerated", message)
        if done:
            self.succeed()
            return
        self.create_missing()
        if self.out.recovering:
            self.out.phase = self.out.phase or Phase.PENDING  # held until the pods are back
        else:
            self.progress()

    def scale(self) -> None:
        """What a change of workers.replicas alone does (under RestartJob the job restarted
        above): the pods beyond the new count go and leave the servers on SIGTERM; the new ones
        are created with any other missing pod. The servers and the other workers go on."""
        self.delete(self.out.snapshot.surplus)
        before, after = self.previous.workers.desired, self.spec.workers.replicas
        if before and before != after:
            message = scaled_message(self.job.metadata.name, before, after)
            self.event(EventType.NORMAL, "Scaled", message)

    def judge_losses(self) -> bool:
        """Lost pods, by runPolicy.recovery; False when the attempt ends (it fails or restarts)."""
        if self.spec.run_policy.effective_recovery is Recovery.IN_PLACE:
            return self.recover_in_place()
        failure = first_failure(self.out.snapshot)
        if failure is None:
            return True
        self.pod_failed(failure)
        return False

    def pod_failed(self, failure: Failure) -> None:
        """A failure not recovered in place: the job restarts whole or fails, by its rules."""
        judgement = judge(failure, self.spec, self.out.restart_count)
        self.event(EventType.WARNING, "PodFailed", judgement.cause)
        if judgement.failed is not None:
            self.fail(judgement.failed)
        else:
            self.restart("PodFailed", judgement.cause, True)

    def recover_in_place(self) -> bool:
        """runPolicy.recovery InPlace: each lost pod is recreated alone (recovery.py). False when
        the attempt ends instead: a permanent failure, or recovering in place did not take."""
        plan = plan_recovery(self.out.snapshot, self.out.recovering, self.now)
        if plan.permanent is not None:
            self.pod_failed(plan.permanent)
            return False
        if plan.fallback is not None:
            self.fall_back(plan.fallback)
            return False
        for opened in plan.opened:
            entry = opened.entry
            self.event(
                EventType.WARNING,
                "Recovering",
                f"{entry.replica}: {opened.cause}; recreating it in place "
                f"(incarnation {entry.incarnation})",
            )
        for closed in plan.closed:
            self.event(
                EventType.NORMAL,
                "Recovered",
                f"{closed.entry.replica} runs again {closed.seconds:.0f}s after it was lost "
                f"(pod {closed.pod}, incarnation {closed.entry.incarnation})",
            )
        self.out.recovering = plan.recovering
        self.out.recoveries_opened = [opened.role for opened in plan.opened]
        self.delete(plan.delete)
        self.out.create_pods.extend(plan.create)
        self.out.incarnations.update(plan.create)
        if plan.due is not None:
            self.requeue(plan.due)
        return True

    def fall_back(self, why: str) -> None:
        """In-place recovery did not take: today's whole-job restart, within backoffLimit."""
        self.event(
            EventType.WARNING, "RecoveryFallback", f"{why}: falling back to a whole-job restart"
        )
        count, limit = self.out.restart_count, self.spec.run_policy.backoff_limit
        if count >= limit:
            already = f"the job already restarted {count} times (backoffLimit {limit})"
            self.fail(Verdict("BackoffLimitExceeded", f"{why}; {already}"))
        else:
            self.restart("RecoveryFallback", why, True)

    def restart(self, reason: str, cause: str, counts: bool) -> None:
        """Whole-job restart: every pod goes, and the next attempt resumes from the checkpoint."""
        self.out.recovering = []
        delay = 0.0
        if counts:
            self.out.restart_count += 1
            delay = restart_backoff(self.out.restart_count)
        self.out.snapshot = self.out.snapshot.next_attempt()
        self.out.phase = Phase.RESTARTING
        self.out.next_restart_time = self.now + timedelta(seconds=delay)
        message = f"{cause}; restarting the whole job in {delay:g}s"
        if counts:
            limit = self.spec.run_policy.backoff_limit
            message += f" (restart {self.out.restart_count} of {limit})"
        self.out.verdict = Verdict(reason, message)
        self.event(EventType.NORMAL, "Restarting", message)
        self.delete(self.out.snapshot.pods)
        self.requeue(delay)

    def succeed(self) -> None:
        self.out.phase = Phase.SUCCEEDED
        self.out.completion_time = self.now
        message = success_message(self.spec, len(self.out.tolerated))
        self.out.verdict = Verdict("WorkersSucceeded", message)
        self.event(EventType.NORMAL, "Succeeded", message)
        self.finished()

    def fail(self, why: Verdict) -> None:
        self.out.phase = Phase.FAILED
        self.out.completion_time = self.now
        self.out.verdict = why
        self.event(EventType.WARNING, "Failed", f"{why.reason}: {why.message}")
        self.delete([p for p in self.out.snapshot.pods if not p.finished])
        self.finished()

    def create_missing(self) -> None:
        missing = missing_pods(self.out.snapshot)
        self.out.create_pods.extend(missing)
        if missing and self.out.start_time is None:
            self.out.start_time = self.now
        if missing and self.pod_group_crd is not None:
            self.out.pod_group_crd = self.pod_group_crd
            if not self.pod_group_crd and pod_group_was_fine(self.previous.conditions):
                self.event(EventType.WARNING, "PodGroupUnavailable", POD_GROUP_MISSING)

    def announce_created(self) -> None:
        """Created once every pod exists, even when the job ends before it is seen running:
        a short job may succeed or fail between two looks at it."""
        total = all_created(self.out.snapshot, self.out.tolerated)
        if total is None or is_true(self.previous.conditions, ConditionType.CREATED):
            return
        self.out.created_pods = total
        self.event(EventType.NORMAL, "Created", f"created {total} pods and 2 services")

    def progress(self) -> None:
        """Pending -> Created (every pod exists) -> Running (every pod runs or is done)."""
        reached = progress(self.out.snapshot, self.out.tolerated)
        if reached is None:
            self.out.phase = self.out.phase or Phase.PENDING
            return
        phase, verdict = reached
        if phase == Phase.CREATED and self.out.phase == Phase.RUNNING:
            return  # a job that ran runs on while workers added by a scale start (Ready False)
        self.out.verdict = verdict
        if phase == Phase.RUNNING and self.out.phase != Phase.RUNNING:
            self.event(EventType.NORMAL, "Running", "every pod is running")
        self.out.phase = phase


def transition(
    job: PSJob,
    snapshot: Snapshot,
    now: datetime,
    pod_group_crd: bool | None = None,
    admission: Admission | None = None,
) -> Outcome:
    """`pod_group_crd`: whether the gang scheduler's PodGroup CRD exists; None: no gang asked.
    `admission`: Kueue's answer for a queued job; None: the job is not queued."""
    return Transition(job, snapshot, now, pod_group_crd, admission).run()


def fail_at_once(job: PSJob, snapshot: Snapshot, now: datetime, why: Verdict) -> Outcome:
    """Fail the job for a cause found while acting, e.g. a pod the API server refused."""
    failing = Transition(job, snapshot, now, None)
    failing.fail(why)
    return failing.out
