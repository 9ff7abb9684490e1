"""Kueue's half of the I/O shell: the Workloads of queued PSJobs (docs/kueue.md).

Only used when the operator runs with ``--kueue``: it then watches the Workloads it made, creates
the Workload of each job labelled ``kueue.x-k8s.io/queue-name``, places the pods of an admitted
job on its flavors, releases the quota of an evicted job once its pods are gone, and marks the
Workload Finished when the job ends. What each of those means is decided in `psjob_operator.kueue`.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client import ApiException

from psjob_operator import contract
from psjob_operator.kueue import (
    PRIORITY_LABEL,
    Admission,
    Placement,
    finish_patch,
    placements,
    queue_name,
    read_admission,
    release_patch,
    render_workload,
    workload_name,
)
from psjob_operator.kueue.workload import GROUP, VERSION
from psjob_operator.models import PSJob, Role
from psjob_operator.plan import Decision

log = logging.getLogger("psjob.operator")

Manifest = dict[str, Any]
Key = tuple[str, str]
Call = Callable[..., Awaitable[Any]]

NOT_FOUND = 404
CONFLICT = 409
WORKLOADS = "workloads"


class KueueApi:
    """Blocking calls on Kueue's objects, run in the reconciler's thread pool."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)

    def get_workload(self, namespace: str, name: str) -> Manifest | None:
        try:
            response: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, WORKLOADS, name, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        workload: Manifest = json.loads(response.data)
        return workload

    def create_workload(self, manifest: Manifest) -> Manifest:
        """Create it, or return the one that exists (an earlier reconcile made it)."""
        namespace = manifest["metadata"]["namespace"]
        try:
            response: Any = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, WORKLOADS, manifest, _preload_content=False
            )
        except ApiException as exc:
            existing = None
            if exc.status == CONFLICT:
                existing = self.get_workload(namespace, manifest["metadata"]["name"])
            if existing is None:
                raise
            return existing
        created: Manifest = json.loads(response.data)
        return created

    def patch_workload_status(self, workload: Manifest, patch: Manifest) -> Manifest:
        """Merge-patch the status, refused (409) if Kueue changed the Workload meanwhile."""
        metadata = workload["metadata"]
        body = {**patch, "metadata": {"resourceVersion": metadata["resourceVersion"]}}
        response: Any = self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            metadata["namespace"],
            WORKLOADS,
            metadata["name"],
            body,
            _preload_content=False,
        )
        patched: Manifest = json.loads(response.data)
        return patched

    def get_cluster_object(self, plural: str, name: str) -> Manifest | None:
        """A ResourceFlavor or a WorkloadPriorityClass; None when it does not exist."""
        try:
            response: Any = self.custom.get_cluster_custom_object(
                GROUP, VERSION, plural, name, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        found: Manifest = json.loads(response.data)
        return found


def _job_key(workload: Manifest) -> Key | None:
    metadata = workload["metadata"]
    job_name = (metadata.get("labels") or {}).get(contract.LABEL_JOB_NAME)
    return None if job_name is None else (metadata["namespace"], job_name)


def _owned_by(workload: Manifest, job: PSJob) -> bool:
    owners = workload["metadata"].get("ownerReferences") or []
    return any(o.get("uid") == job.metadata.uid for o in owners)


class Queueing:
    """The Workloads of the watched namespaces, by job, and what the reconciler owes Kueue."""

    def __init__(self, api: KueueApi, call: Call) -> None:
        self.api = api
        self.call = call
        self.workloads: dict[Key, Manifest] = {}
        self.admissions: dict[Key, Admission] = {}

    def observe(self, workload: Manifest, deleted: bool) -> Key | None:
        """Keep the watch's latest copy; the job it belongs to, which needs a look."""
        key = _job_key(workload)
        if key is None:
            return None
        if deleted:
            if self.workloads.get(key, {}).get("metadata", {}).get("uid") == workload[
                "metadata"
            ].get("uid"):
                self.workloads.pop(key, None)
        else:
            self.workloads[key] = workload
        return key

    def forget(self, key: Key) -> None:
        self.admissions.pop(key, None)

    async def admission(self, key: Key, job: PSJob) -> Admission | None:
        """Kueue's answer for the job, creating its Workload first; None: the job is not queued."""
        queue = queue_name(job)
        if queue is None:
            self.admissions.pop(key, None)
            return None
        workload = self.workloads.get(key)
        if workload is None or not _owned_by(workload, job):
            workload, problem = await self._ensure_workload(key, job)
            if workload is None:
                return read_admission(queue, None, problem)
        admission = read_admission(queue, workload)
        self.admissions[key] = admission
        return admission

    def _remember(self, key: Key, before: Manifest | None, fetched: Manifest) -> Manifest:
        """Keep what a call returned, unless the watch brought a copy of the same Workload while
        the call ran: that copy is as new or newer (Kueue may have answered already, and it
        answers an inadmissible Workload once), and a stale copy would hide its answer."""
        current = self.workloads.get(key)
        watched = None if current is None or current is before else current
        if watched is not None and watched["metadata"].get("uid") == fetched["metadata"].get("uid"):
            return watched
        self.workloads[key] = fetched
        return fetched

    async def _ensure_workload(self, key: Key, job: PSJob) -> tuple[Manifest | None, str | None]:
        namespace = job.metadata.namespace or "default"
        before = self.workloads.get(key)
        workload = await self.call(self.api.get_workload, namespace, workload_name(job))
        if workload is None:
            priority_class = job.metadata.labels.get(PRIORITY_LABEL)
            priority = None
            if priority_class:
                found = await self.call(
                    self.api.get_cluster_object, "workloadpriorityclasses", priority_class
                )
                if found is None:
                    fix = f"create it or change the job's {PRIORITY_LABEL} label"
                    return None, f"WorkloadPriorityClass {priority_class} does not exist: {fix}"
                priority = int(found.get("value", 0))
            manifest = render_workload(job, priority_class or None, priority)
            workload = await self.call(self.api.create_workload, manifest)
            log.info("psjob %s/%s: created Workload %s", *key, manifest["metadata"]["name"])
        return self._remember(key, before, workload), None

    async def placements(self, job: PSJob) -> dict[Role, Placement]:
        """Each role's placement on the flavors Kueue assigned; empty when the job is not queued."""
        admission = self.admissions.get((job.metadata.namespace or "default", job.metadata.name))
        if admission is None or not admission.admitted:
            return {}
        names = {name for flavors in admission.flavors.values() for name in flavors}
        flavors = {}
        for name in names:
            flavor = await self.call(self.api.get_cluster_object, "resourceflavors", name)
            if flavor is None:
                raise RuntimeError(f"ResourceFlavor {name} assigned by Kueue does not exist")
            flavors[name] = flavor
        return placements(admission, flavors)

    async def settle(self, key: Key, decision: Decision, pods_left: bool) -> None:
        """After the reconcile acted: release an evicted job's quota once no pod of it is left,
        and mark the Workload of a finished job Finished."""
        workload = self.workloads.get(key)
        if workload is None or key not in self.admissions:
            return
        now = datetime.now(UTC)
        patch = None if pods_left else release_patch(workload, now)
        if patch is None:
            phase = decision.status.phase
            message = next((c.message for c in decision.status.conditions if c.type == phase), "")
            patch = finish_patch(workload, phase, message, now)
        if patch is None:
            return
        try:
            patched = await self.call(self.api.patch_workload_status, workload, patch)
        except ApiException as exc:
            if exc.status in (CONFLICT, NOT_FOUND):
                return  # Kueue changed it, or it is gone: the watch brings the news
            raise
        self._remember(key, workload, patched)


def register_handlers(registry: kopf.OperatorRegistry) -> None:
    """Watch the operator's Workloads: Kueue's answers trigger the job's reconcile."""

    @kopf.on.event(
        GROUP,
        VERSION,
        WORKLOADS,
        labels={contract.LABEL_MANAGED_BY: contract.MANAGER},
        registry=registry,
    )
    async def workload_changed(body: kopf.Body, type: str, memo: Any, **kwargs: Any) -> None:
        reconciler = memo["reconciler"]
        reconciler.pods = kwargs["psjob_pods"]
        key = reconciler.queueing.observe(dict(body), deleted=type == "DELETED")
        if key is not None:
            reconciler.trigger(key)
