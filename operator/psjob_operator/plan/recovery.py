"""In-place recovery (runPolicy.recovery InPlace): a lost pod is recreated alone, under its name.

The replacement has the lost pod's name and environment, so the runtime takes it for the same
replica: a worker resumes where the servers recorded it, a server restores its shard while the
others keep theirs. A recovery opens when a pod is lost for a retryable cause, deletes the lost
pod if it is still there, creates the replacement once the name is free, and closes when the
replacement runs. The open recoveries live in status.recovering (since when, which incarnation),
not in memory, so an operator that restarts meanwhile carries on where it was.

In-place recovery gives way to today's whole-job restart (counted against backoffLimit) when it
does not take; each rule is one check in `_fallback`:

- a replacement is lost again before it ran (its recovery still open);
- a replacement exits (a failure, not a deletion) within RECOVERY_SETTLE_SECONDS of its
  creation: it does not hold, e.g. it crashes on what it restores;
- a pod exits with the runtime's retryable code (75: it gave up waiting for a lost peer after
  training.timeoutSeconds) while another pod is being recovered or lost with it: its peers
  could not heal in place, and more of them are about to give up;
- more than MAX_SERVERS_RECOVERING servers are lost at once: the runtime restores one server's
  shard while the others hold theirs; with two shards gone a restart restores every shard from
  one checkpoint, consistently;
- more pods are lost at once than status.recovering holds (RECOVERING_MAX);
- a replacement is not running training.timeoutSeconds after the loss: the other processes
  stop waiting for it then and exit 75.

A permanent failure (by its role's restartPolicy) fails the job as under RestartJob.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from psjob_operator.contract import EXIT_RETRYABLE
from psjob_operator.models import ReplicaPhase, Role
from psjob_operator.models.status import RECOVERING_MAX, RecoveryEntry, replica_name
from psjob_operator.names import pod_name
from psjob_operator.observe import PodView
from psjob_operator.plan.judging import Failure, failure_of, retryable
from psjob_operator.plan.pods import UP
from psjob_operator.plan.snapshot import Replica, ReplicaKey, Snapshot

RECOVERY_SETTLE_SECONDS = 120.0
"""A replacement that exits within this long of its creation did not take: the job falls back to
a whole-job restart rather than recreating it again and again."""

MAX_SERVERS_RECOVERING = 1
"""Servers recovered in place at once; one more lost meanwhile falls back to a whole restart."""


@dataclass(frozen=True)
class Opened:
    """A recovery this look opened, with the cause the Recovering event names."""

    entry: RecoveryEntry
    cause: str

    @property
    def role(self) -> Role:
        return self.entry.key[0]


@dataclass(frozen=True)
class Closed:
    """A recovery this look closed: its replacement runs, `seconds` after the loss."""

    entry: RecoveryEntry
    pod: str
    seconds: float


@dataclass
class RecoveryPlan:
    """What recovering in place does now; `permanent` or `fallback` set: it does nothing."""

    permanent: Failure | None = None
    """A permanent failure: the job fails, as under RestartJob."""
    fallback: str | None = None
    """Why recovering in place does not take: the job restarts whole."""
    recovering: list[RecoveryEntry] = field(default_factory=list)
    """The recoveries open after this look (status.recovering)."""
    opened: list[Opened] = field(default_factory=list)
    closed: list[Closed] = field(default_factory=list)
    delete: list[PodView] = field(default_factory=list)
    """Lost pods still holding their name."""
    create: dict[ReplicaKey, int] = field(default_factory=dict)
    """Replacements to create now, with their incarnation."""
    due: float | None = None
    """Seconds until the earliest open recovery runs out of time."""


@dataclass(frozen=True)
class _Loss:
    replica: Replica
    failure: Failure
    replacing: RecoveryEntry | None
    """The open recovery whose replacement this is; None: the pod was not being recovered."""


def plan_recovery(
    snapshot: Snapshot, open_entries: Sequence[RecoveryEntry], now: datetime
) -> RecoveryPlan:
    """The recoveries after this look at `snapshot`, given those open before (`open_entries`)."""
    job = snapshot.job
    bound = job.spec.training.timeout_seconds
    entries = {entry.key: entry for entry in open_entries}
    pods = {(p.role, p.index): p for p in snapshot.current()}
    names = {p.name for p in snapshot.pods}
    plan = RecoveryPlan()
    losses: list[_Loss] = []
    waiting: list[RecoveryEntry] = []
    for replica in snapshot.replicas:
        entry = entries.get(replica.key)
        replaced = entry is not None and replica.incarnation >= entry.incarnation
        if replica.lost and (entry is None or replaced):
            losses.append(_Loss(replica, failure_of(job.metadata.name, replica), entry))
        elif entry is not None and replaced and replica.phase in UP:
            plan.closed.append(
                Closed(entry, pod_name(job.metadata.name, *replica.key), _since(entry, now))
            )
        elif entry is not None:
            waiting.append(entry)
            pod = pods.get(replica.key)
            if pod is not None and not replaced:
                plan.delete.append(pod)
            if pod_name(job.metadata.name, *replica.key) not in names:
                plan.create[replica.key] = entry.incarnation

    permanent = [loss.failure for loss in losses if not retryable(loss.failure, job.spec)]
    if permanent:
        plan.permanent = permanent[0]
        return plan
    opened = [_open(loss, now) for loss in losses]
    plan.fallback = _fallback(losses, waiting, opened, now, bound)
    if plan.fallback is not None:
        return plan
    plan.opened = opened
    for new in opened:
        key = new.entry.key
        pod = pods.get(key)
        if pod is not None:
            plan.delete.append(pod)
        elif pod_name(job.metadata.name, *key) not in names:
            plan.create[key] = new.entry.incarnation
    plan.recovering = sorted([*waiting, *(o.entry for o in opened)], key=lambda e: e.key)
    remaining = [bound - _since(entry, now) for entry in plan.recovering]
    plan.due = min(remaining, default=None)
    return plan


def _open(loss: _Loss, now: datetime) -> Opened:
    replica = loss.replica
    entry = RecoveryEntry(
        replica=replica_name(replica.role, replica.index),
        since=now,
        incarnation=replica.incarnation + 1,
    )
    return Opened(entry, loss.failure.describe())


def _since(entry: RecoveryEntry, now: datetime) -> float:
    return (now - entry.since).total_seconds()


def _fallback(
    losses: list[_Loss],
    waiting: list[RecoveryEntry],
    opened: list[Opened],
    now: datetime,
    bound: int,
) -> str | None:
    """Why recovering in place does not take (the module's rules, in order), or None."""
    for loss in losses:
        if loss.replacing is not None:
            return (
                f"the replacement of {loss.replacing.replica} (incarnation "
                f"{loss.replacing.incarnation}) was lost before it ran: {loss.failure.describe()}"
            )
    for loss in losses:
        lasted = _lasted(loss.replica, now)
        if lasted is not None and lasted < RECOVERY_SETTLE_SECONDS:
            return (
                f"{loss.failure.describe()} {lasted:.0f}s after it was recreated in place "
                f"(incarnation {loss.replica.incarnation}), within {RECOVERY_SETTLE_SECONDS:.0f}s"
            )
    others = len(losses) + len(waiting) > 1
    for loss in losses:
        if others and loss.failure.exit_code == EXIT_RETRYABLE and not loss.failure.deleted:
            return (
                f"{loss.failure.describe()} (it gave up waiting for a lost peer) while "
                f"{_listed([*waiting, *(o.entry for o in opened)], but=loss.replica)} "
                "could not be recovered in time"
            )
    recovering = [*waiting, *(o.entry for o in opened)]
    servers = [entry for entry in recovering if entry.key[0] is Role.SERVER]
    if len(servers) > MAX_SERVERS_RECOVERING:
        return (
            f"{_listed(servers)} are lost at once; in place only "
            f"{MAX_SERVERS_RECOVERING} server is recovered at a time"
        )
    if len(recovering) > RECOVERING_MAX:
        return (
            f"{len(recovering)} pods are lost at once; in place at most {RECOVERING_MAX} are "
            "recovered at a time"
        )
    for entry in waiting:
        if _since(entry, now) >= bound:
            return (
                f"{entry.replica} (incarnation {entry.incarnation}) is not running "
                f"{bound}s after it was lost (training.timeoutSeconds: its peers stop waiting)"
            )
    return None


def _lasted(replica: Replica, now: datetime) -> float | None:
    """How long a replacement ran before it exited; None: not a replacement that exited."""
    exited = replica.phase is ReplicaPhase.FAILED
    if replica.incarnation < 1 or not exited or replica.created is None:
        return None
    return (now - replica.created).total_seconds()


def _listed(entries: Sequence[RecoveryEntry], but: Replica | None = None) -> str:
    """`server-0 and server-1`, leaving out `but`; at most 5 named."""
    skip = None if but is None else replica_name(but.role, but.index)
    names = [entry.replica for entry in entries if entry.replica != skip]
    if len(names) > 5:
        names = [*names[:5], f"{len(names) - 5} more"]
    if len(names) <= 1:
        return "".join(names) or "another pod"
    return ", ".join(names[:-1]) + " and " + names[-1]
