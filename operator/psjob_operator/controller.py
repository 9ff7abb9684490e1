"""The reconciler: a per-job work queue that applies the pure decision through the API.

Each job has at most one reconcile in flight; events that arrive meanwhile mark it dirty and it
runs once more afterwards, so a burst of pod events costs one reconcile, not one per event.
The status is written first, with the job's resourceVersion as a precondition, and only then
are pods created or deleted: a crash between the two leaves a status that the next reconcile
completes, never actions that the status forgot.
"""

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client import ApiException
from pydantic import ValidationError

from psjob_operator import metrics
from psjob_operator.conditions import is_true
from psjob_operator.isolation import ISOLATED_FROM_ALL, NetworkIsolation
from psjob_operator.kube import CONFLICT, Kube, Manifest
from psjob_operator.kueue import place_pod
from psjob_operator.models import ConditionType, Phase, Progress, PSJob, Role
from psjob_operator.names import pod_name
from psjob_operator.observe import PodView
from psjob_operator.plan import Decision, Event, EventType, decide, fail_now
from psjob_operator.pod_policy import REASON as POLICY_REASON
from psjob_operator.pod_policy import PodPolicy, refusal
from psjob_operator.progress import Reading
from psjob_operator.queueing import Queueing
from psjob_operator.render import (
    gang_scheduler,
    render_network_policy,
    render_pod,
    render_pod_group,
    render_secret,
    render_services,
    spec_hash,
)
from psjob_operator.validation import field_errors

log = logging.getLogger("psjob.operator")

Key = tuple[str, str]
"""(namespace, job name)"""

T = TypeVar("T")

RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0
CREATION_GRACE_SECONDS = 30.0
RECONCILE_PACING = 3.0
"""After a reconcile that held the event loop for t seconds of CPU, the same job's next one
waits 3t: the loop is also where kopf takes in pod events. Deciding a 20,000-pod job takes about
a second; back to back, such decisions starved the pod watch, so the status fell minutes behind
the pods (bench/operator/findings.md). Small jobs decide in milliseconds and never wait."""
"""How long a pod created by this process is assumed to exist before the watch shows it."""
UNPROCESSABLE = 422
FORBIDDEN = 403


def _api_message(exc: ApiException) -> str:
    """The message of the API server's Status, not the whole JSON around it."""
    try:
        return str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.body or exc.reason)


def _refused_for_good(exc: ApiException) -> bool:
    """A pod the API server will refuse however often it is sent: invalid (422) or against the
    namespace's Pod Security level (403 naming PodSecurity). Other 403s (the operator's own RBAC)
    are retried: an administrator can fix those while the job waits.
    """
    if exc.status == UNPROCESSABLE:
        return True
    return exc.status == FORBIDDEN and "violates PodSecurity" in str(exc.body or exc.reason)


def job_key(body: Mapping[str, Any]) -> Key:
    metadata = body["metadata"]
    return metadata["namespace"], metadata["name"]


def retry_delay(failures: int) -> float:
    """Seconds before retrying a job whose reconcile failed `failures` times in a row.

    1, 2, 4, ... up to 5 min, per job, as controller-runtime's rate-limited work queue does: a
    job the API server keeps refusing backs off without slowing the others, and its first
    successful reconcile resets the count. Watch events still trigger a reconcile at once.
    """
    return float(min(RETRY_BASE_SECONDS * 2 ** min(failures - 1, 30), RETRY_MAX_SECONDS))


def _newer(candidate: Manifest, cached: Manifest | None) -> bool:
    """resourceVersions are etcd revisions: a later write never has a smaller one."""
    if cached is None:
        return True
    try:
        return int(candidate["metadata"]["resourceVersion"]) >= int(
            cached["metadata"]["resourceVersion"]
        )
    except (KeyError, ValueError):
        return True


def _same_version(a: Manifest, b: Manifest) -> bool:
    return bool(a["metadata"].get("resourceVersion")) and (
        a["metadata"].get("resourceVersion") == b["metadata"].get("resourceVersion")
    )


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        api_threads: int = 16,
        pod_policy: PodPolicy = PodPolicy.UNRESTRICTED,
        kueue: Callable[[Callable[..., Any]], Queueing] | None = None,
        isolation: NetworkIsolation = ISOLATED_FROM_ALL,
    ) -> None:
        """`kueue`: makes the Kueue half of the shell from this reconciler's API call; None:
        the operator ignores Kueue's queue label (docs/kueue.md)."""
        self.kube = kube
        self.pod_policy = pod_policy
        self.isolation = isolation
        self.queueing = None if kueue is None else kueue(self._call)
        self.api_threads = api_threads
        self.executor = ThreadPoolExecutor(api_threads, thread_name_prefix="psjob-api")
        self.jobs: dict[Key, Manifest] = {}
        self.pods: Mapping[Key, Iterable[PodView]] = {}
        self.running: dict[Key, asyncio.Task[None]] = {}
        self.dirty: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.created_at: dict[tuple[str, str, int, int], float] = {}
        """When this process created (job uid, pod, attempt, incarnation): the watch may lag."""
        self.secured: set[str] = set()
        """Uids of the jobs whose authentication Secret this process created or found there."""
        self.phases: dict[Key, str] = {}
        self.known_crds: set[str] = set()
        self.failures: dict[Key, int] = {}
        """Reconciles of a job that failed in a row, for its retry back-off."""
        self.rejected: dict[Key, str | None] = {}
        """The resourceVersion of each job body the models refused and the job was told of."""
        self.readings: dict[Key, Reading] = {}
        """Server 0's latest progress of each running job (progress_reader writes it)."""
        self.progress_shown: dict[Key, tuple[int, float] | None] = {}
        """The step and samples/s each job's gauges show."""

    # --- inputs ------------------------------------------------------------------------------

    def observe_job(self, body: Manifest, deleted: bool) -> None:
        key = job_key(body)
        if deleted:
            self.jobs.pop(key, None)
            self._forget(key)
            return
        cached = self.jobs.get(key)
        if cached is not None and _same_version(body, cached):
            return  # the echo of this reconciler's own status write: already acted on
        if _newer(body, cached):
            self.jobs[key] = body
        self.trigger(key)

    def trigger(self, key: Key) -> None:
        if key in self.running:
            self.dirty.add(key)
            return
        self.running[key] = asyncio.create_task(self._drain(key))

    def _forget(self, key: Key) -> None:
        if self.queueing is not None:
            self.queueing.forget(key)
        self.failures.pop(key, None)
        self.rejected.pop(key, None)
        self.readings.pop(key, None)
        if self.progress_shown.pop(key, None) is not None:
            metrics.forget_job_progress(*key)
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self.phases:
            metrics.JOBS.labels(key[0], self.phases.pop(key)).dec()

    def _requeue(self, key: Key, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        timer = self.timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self.timers[key] = loop.call_at(due, self._timer_fired, key)

    def _timer_fired(self, key: Key) -> None:
        self.timers.pop(key, None)
        self.trigger(key)

    # --- the loop ----------------------------------------------------------------------------

    async def _drain(self, key: Key) -> None:
        try:
            while True:
                self.dirty.discard(key)
                cpu = time.thread_time()
                await self._reconcile_safely(key)
                if key not in self.dirty:
                    return
                await asyncio.sleep((time.thread_time() - cpu) * RECONCILE_PACING)
        finally:
            del self.running[key]

    async def _reconcile_safely(self, key: Key) -> None:
        """One reconcile; a status write refused as stale (409) is decided again at once on a
        fresh copy of the job, any other error retries after the job's back-off."""
        started = time.perf_counter()
        try:
            await self.reconcile(key)
        except ApiException as exc:
            if exc.status == CONFLICT:
                await self._decide_again(key)
            else:
                self._retry_later(key, exc)
        except Exception as exc:
            self._retry_later(key, exc)
        else:
            self.failures.pop(key, None)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    async def _decide_again(self, key: Key) -> None:
        try:
            await self._refresh(key)
        except Exception as exc:
            self._retry_later(key, exc)
            return
        self.dirty.add(key)

    def _retry_later(self, key: Key, exc: Exception) -> None:
        failures = self.failures.get(key, 0) + 1
        self.failures[key] = failures
        delay = retry_delay(failures)
        metrics.RECONCILE_ERRORS.inc()
        message = "reconcile of %s/%s failed (%d in a row), retrying in %gs: %s"
        if isinstance(exc, ApiException):  # the API server's answer says enough
            log.warning(message, *key, failures, delay, exc.reason)
        else:
            log.warning(message, *key, failures, delay, exc, exc_info=exc)
        self._requeue(key, delay)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    async def _crd_installed(self, name: str) -> bool:
        """Whether a CRD exists; a positive answer is kept, a negative one asked again later."""
        if name in self.known_crds:
            return True
        installed = await self._call(self.kube.crd_installed, name)
        if installed:
            self.known_crds.add(name)
        return installed

    async def _refresh(self, key: Key) -> None:
        body = await self._call(self.kube.get_job, *key)
        if body is None:
            self.jobs.pop(key, None)
        else:
            self.jobs[key] = body

    async def reconcile(self, key: Key) -> None:
        body = self.jobs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        try:
            job = PSJob.model_validate(body)
        except ValidationError as exc:
            await self._reject(key, body, exc)
            return
        self.rejected.pop(key, None)
        now = datetime.now(UTC).replace(microsecond=0)
        pods = list(self.pods.get(key, ()))
        gang = gang_scheduler(job)
        installed = None if gang is None else await self._crd_installed(gang.crd)
        queueing = self.queueing
        admission = None if queueing is None else await queueing.admission(key, job)
        decision = decide(job, pods, now, installed, admission, self.readings.get(key))
        await self._apply(key, body, job, decision, pods, now)
        if queueing is not None and admission is not None:
            await queueing.settle(key, decision, pods_left=bool(pods))

    async def _reject(self, key: Key, body: Manifest, exc: ValidationError) -> None:
        """A body the models refuse, e.g. one an older installed CRD let through: a Warning
        event tells the job's author, once per version of the job."""
        version = body["metadata"].get("resourceVersion")
        if key in self.rejected and self.rejected[key] == version:  # told already
            return
        self.rejected[key] = version
        problems = "; ".join(str(error) for error in field_errors(exc))
        log.error("psjob %s/%s does not match the API, ignoring it: %s", *key, problems)
        message = f"the operator ignores this job until it is fixed: {problems}"
        await self._post_events(body, [Event(EventType.WARNING, "FailedValidation", message)])

    # --- output ------------------------------------------------------------------------------

    async def _apply(
        self,
        key: Key,
        body: Manifest,
        job: PSJob,
        decision: Decision,
        pods: list[PodView],
        now: datetime,
    ) -> None:
        if decision.status != job.status:
            await self._write_status(key, body, decision)
        await self._post_events(body, decision.events)
        if decision.create_pods:
            forbidden = refusal(self.pod_policy, job)
            rejected = forbidden or await self._create_pods(key, job, decision)
            if rejected is not None:
                reason = POLICY_REASON if forbidden else "InvalidPodTemplate"
                current = job.model_copy(update={"status": decision.status})
                decision = fail_now(current, pods, now, reason, rejected)
                await self._write_status(key, self.jobs[key], decision)
                await self._post_events(body, decision.events)
        await self._delete_pods(key[0], decision.delete_pods)
        if decision.delete_job:
            log.info("psjob %s/%s finished and its TTL passed: deleting it", *key)
            await self._call(self.kube.delete_job, *key)
            return
        if key not in self.jobs:
            return  # deleted while this reconcile acted: its metrics went with it (_forget)
        if decision.requeue_after is not None:
            self._requeue(key, decision.requeue_after + 0.05)
        self._record_phase(key, body, decision)
        self._record_progress(key, decision.status.progress)

    async def _write_status(self, key: Key, body: Manifest, decision: Decision) -> None:
        status = decision.status.model_dump(mode="json", by_alias=True)
        version = body["metadata"]["resourceVersion"]
        patched = await self._call(self.kube.patch_status, *key, version, status)
        cached = self.jobs.get(key)
        if cached is not None and _newer(patched, cached):  # None: deleted during the write
            self.jobs[key] = patched

    async def _post_events(self, body: Manifest, events: list[Event]) -> None:
        for event in events:
            if event.reason == "Restarting":
                metrics.RESTARTS.labels(event.reason).inc()
            elif event.reason == "Recovering":
                metrics.RECOVERIES.inc()
            try:
                await self._call(self.kube.post_event, body, event)
            except ApiException as exc:
                log.warning("could not post event %s: %s", event.reason, exc.reason)

    async def _create_pods(self, key: Key, job: PSJob, decision: Decision) -> str | None:
        """The Secret and services first, then the missing pods in parallel; the API's refusal.

        A pod this process created moments ago may not be in the watch yet: it is not created
        again (that would only cost an AlreadyExists), and the job is looked at once more when
        the grace period ends in case the pod never appears.
        """
        now = time.monotonic()
        self.created_at = {
            k: t for k, t in self.created_at.items() if now - t < CREATION_GRACE_SECONDS
        }
        attempt = decision.status.attempt
        uid = job.metadata.uid or ""

        def created(role: Role, index: int) -> float | None:
            name = pod_name(job.metadata.name, role, index)
            incarnation = decision.incarnations.get((role, index), 0)
            return self.created_at.get((uid, name, attempt, incarnation))

        stamps = [created(role, index) for role, index in decision.create_pods]
        waiting = [stamp for stamp in stamps if stamp is not None]
        if waiting:
            self._requeue(key, min(waiting) + CREATION_GRACE_SECONDS - now)
        missing = [
            pod for pod, stamp in zip(decision.create_pods, stamps, strict=True) if stamp is None
        ]
        if not missing:
            return None
        try:
            await self._ensure_secret(job)
            await self._ensure_network_policy(job)
            for service in render_services(job):
                await self._call(self.kube.create, service)
            group = render_pod_group(job)
            if group is not None and is_true(decision.status.conditions, ConditionType.POD_GROUP):
                await self._call(self.kube.create_pod_group, group)
            await self._create_each(job, missing, attempt, decision.incarnations)
        except ApiException as exc:
            if _refused_for_good(exc):
                return f"the API server refused an object of this job: {_api_message(exc)}"
            raise
        return None

    async def _create_each(
        self,
        job: PSJob,
        pods: list[tuple[Role, int]],
        attempt: int,
        incarnations: Mapping[tuple[Role, int], int],
    ) -> None:
        """Create `pods` with one request in flight per API thread, each rendered in its turn.

        Rendering and queueing every pod of a big job at once held them all (11.8 GB for the
        largest job while each pod listed every server's address; render.server_addresses).
        Rendered in turn, the operator holds one pod per thread. The first
        refusal ends the loop: the requests in flight finish, no new one starts.
        """
        uid = job.metadata.uid or ""
        digest = spec_hash(job)
        placed = {} if self.queueing is None else await self.queueing.placements(job)

        def rendered(role: Role, index: int) -> tuple[Manifest, int]:
            incarnation = incarnations.get((role, index), 0)
            pod = render_pod(job, role, index, attempt, digest, incarnation)
            return place_pod(pod, placed.get(role)), incarnation

        manifests = (rendered(role, index) for role, index in pods)

        async def creator() -> None:
            for manifest, incarnation in manifests:
                new = await self._call(self.kube.create, manifest)
                key = (uid, manifest["metadata"]["name"], attempt, incarnation)
                self.created_at[key] = time.monotonic()
                metrics.PODS_CREATED.inc(int(new))

        try:
            await asyncio.gather(*(creator() for _ in range(min(self.api_threads, len(pods)))))
        finally:
            manifests.close()

    async def _ensure_secret(self, job: PSJob) -> None:
        """Create the job's authentication Secret, once per job and operator process.

        The token is drawn here, not in render: rendering stays pure. One that exists already
        (made by an earlier attempt or operator process) is kept, so running pods and new ones
        agree. The operator may create Secrets but never read them (docs/security.md): it cannot
        tell its own from one a namespace member made under that name, who could read it anyway.
        """
        uid = job.metadata.uid or ""
        if uid not in self.secured:
            await self._call(self.kube.create, render_secret(job, secrets.token_hex(32)))
            self.secured.add(uid)

    async def _ensure_network_policy(self, job: PSJob) -> None:
        """Create the job's NetworkPolicy before its pods, so that none is ever open.

        An existing one (an earlier attempt's, or one the user edited) is left as it is.
        """
        if not self.isolation.enabled:
            return
        policy = render_network_policy(job, self.isolation.peers)
        if policy is not None:
            await self._call(self.kube.create, policy)

    async def _delete_pods(self, namespace: str, names: list[str]) -> None:
        if not names:
            return
        await asyncio.gather(*(self._call(self.kube.delete_pod, namespace, n) for n in names))
        metrics.PODS_DELETED.inc(len(names))

    def _record_progress(self, key: Key, progress: Progress | None) -> None:
        shown = None if progress is None else (progress.step, progress.samples_per_second)
        if shown == self.progress_shown.get(key):
            return
        self.progress_shown[key] = shown
        if shown is None:
            metrics.forget_job_progress(*key)
        else:
            metrics.show_job_progress(*key, *shown)

    def _record_phase(self, key: Key, body: Manifest, decision: Decision) -> None:
        phase = (decision.status.phase or Phase.PENDING).value
        previous = self.phases.get(key)
        if previous == phase:
            return
        if previous is not None:
            metrics.JOBS.labels(key[0], previous).dec()
        metrics.JOBS.labels(key[0], phase).inc()
        self.phases[key] = phase
        created = body["metadata"].get("creationTimestamp")
        if phase == Phase.RUNNING.value and decision.status.attempt == 0 and created:
            started = datetime.fromisoformat(created.replace("Z", "+00:00"))
            metrics.TIME_TO_RUNNING.observe((datetime.now(UTC) - started).total_seconds())
