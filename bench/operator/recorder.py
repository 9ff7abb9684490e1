"""Watch one namespace and timestamp what happens in it: pods appear and run, PSJob status moves.

The benchmark never polls: polling would add API requests to the counts it reports and CPU to
the machine it measures. Three watch connections (pods, services, PSJobs) stream every change;
each is stamped with `time.monotonic()` as it arrives. The operator receives the same events
from the same API server at about the same moment, so a status change seen here `d` seconds after
a pod change is an honest upper bound of the operator's reaction time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

GROUP, VERSION, PLURAL = "psjob.dev", "v1alpha1", "psjobs"
WATCH_SECONDS = 3600


@dataclass
class PodTimes:
    added: float
    running: float | None = None
    finished: float | None = None
    """When the watch first showed the pod Succeeded or Failed."""


@dataclass(frozen=True)
class Counts:
    """One role's replica counts as a PSJob status shows them."""

    active: int = 0
    ready: int = 0
    succeeded: int = 0

    @staticmethod
    def of(role: dict[str, Any] | None) -> Counts:
        role = role or {}
        return Counts(role.get("active", 0), role.get("ready", 0), role.get("succeeded", 0))


@dataclass(frozen=True)
class JobSnapshot:
    phase: str | None
    servers: Counts
    workers: Counts


@dataclass
class Recorded:
    """Everything seen so far; read it under `Recorder.changed`."""

    pods: dict[str, PodTimes] = field(default_factory=dict)
    present_pods: set[str] = field(default_factory=set)
    services: dict[str, float] = field(default_factory=dict)
    jobs: dict[str, list[tuple[float, JobSnapshot]]] = field(default_factory=dict)
    present_jobs: set[str] = field(default_factory=set)
    largest_status: dict[str, int] = field(default_factory=dict)
    """The most bytes a job's status took, as compact JSON (about what etcd stores)."""

    def last(self, job: str) -> JobSnapshot | None:
        history = self.jobs.get(job)
        return history[-1][1] if history else None


class Recorder:
    """Watches pods, services and PSJobs of `namespace` in daemon threads until `stop()`."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.data = Recorded()
        self.changed = threading.Condition()
        self._stopping = threading.Event()
        self._responses: list[Any] = []
        self._ready = threading.Barrier(4)
        for target in (self._watch_pods, self._watch_services, self._watch_jobs):
            threading.Thread(target=target, daemon=True).start()
        self._ready.wait(timeout=30)  # every watch is open: nothing that follows is missed

    def stop(self) -> None:
        self._stopping.set()
        for response in list(self._responses):
            with contextlib.suppress(RuntimeError):  # raised for a watch that already ended
                response.shutdown()  # unblocks the reading thread (close() would wait for it)

    def wait(self, what: str, done: Callable[[Recorded], bool], timeout: float) -> None:
        """Block until `done(data)` holds (checked after every event); TimeoutError names `what`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done(self.data):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.namespace}: timed out after {timeout:.0f} s: {what}")
                self.changed.wait(min(left, 1.0))

    # --- the watches ---------------------------------------------------------------------------

    def _events(self, list_call: Callable[..., Any], *args: Any) -> Iterator[tuple[str, Any]]:
        """Like a reflector: list ("LISTED", items), then watch from the list's version; list
        and watch again whenever the server ends the watch. The first watch signals readiness."""
        first = True
        while not self._stopping.is_set():
            listed = json.loads(list_call(*args, _preload_content=False).data)
            yield "LISTED", listed["items"]
            response = list_call(
                *args,
                watch=True,
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
            )
            self._responses.append(response)
            if first:
                self._ready.wait(timeout=30)
                first = False
            try:
                for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                        break
                    yield event["type"], event["object"]
            except Exception as error:  # the connection dropped: list again
                if self._stopping.is_set():
                    return
                print(f"recorder: watch of {args} failed ({error!r}), listing again", flush=True)
            self._responses.remove(response)
            if not self._stopping.is_set():
                print(f"recorder: watch of {args} ended, listing again", flush=True)

    def _follow(
        self,
        list_call: Callable[..., Any],
        args: tuple[Any, ...],
        seen: Callable[[float, str, Any], None],
        present: Callable[[], set[str]],
    ) -> None:
        """Feed every event to `seen(now, kind, object)`; after a list, forget what is gone."""
        for kind, payload in self._events(list_call, *args):
            if kind != "LISTED":

                def changed(now: float, kind: str = kind, obj: Any = payload) -> None:
                    seen(now, kind, obj)

                self._record(changed)
                continue

            def relisted(now: float, items: list[Any] = payload) -> None:
                for item in items:
                    seen(now, "ADDED", item)
                present().intersection_update({item["metadata"]["name"] for item in items})

            self._record(relisted)

    def _record(self, apply: Callable[[float], None]) -> None:
        with self.changed:
            apply(time.monotonic())
            self.changed.notify_all()

    def _watch_pods(self) -> None:
        self._follow(
            self.core.list_namespaced_pod,
            (self.namespace,),
            self._pod_seen,
            lambda: self.data.present_pods,
        )

    def _watch_services(self) -> None:
        self._follow(
            self.core.list_namespaced_service,
            (self.namespace,),
            self._service_seen,
            set,
        )

    def _watch_jobs(self) -> None:
        self._follow(
            self.custom.list_namespaced_custom_object,
            (GROUP, VERSION, self.namespace, PLURAL),
            self._job_seen,
            lambda: self.data.present_jobs,
        )

    # --- what an event means (called with `changed` held) ----------------------------------------

    def _pod_seen(self, now: float, kind: str, pod: Any) -> None:
        data, name = self.data, pod["metadata"]["name"]
        if kind == "DELETED":
            data.present_pods.discard(name)
            return
        if name not in data.present_pods:
            data.present_pods.add(name)
            data.pods[name] = PodTimes(added=now)
        times = data.pods[name]
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running" and times.running is None:
            times.running = now
        if phase in ("Succeeded", "Failed") and times.finished is None:
            times.finished = now

    def _service_seen(self, now: float, kind: str, service: Any) -> None:
        self.data.services.setdefault(service["metadata"]["name"], now)

    def _job_seen(self, now: float, kind: str, job: Any) -> None:
        data, name = self.data, job["metadata"]["name"]
        if kind == "DELETED":
            data.present_jobs.discard(name)
            return
        status = job.get("status") or {}
        size = len(json.dumps(status, separators=(",", ":")))
        data.largest_status[name] = max(size, data.largest_status.get(name, 0))
        snapshot = JobSnapshot(
            status.get("phase"), Counts.of(status.get("servers")), Counts.of(status.get("workers"))
        )
        data.present_jobs.add(name)
        history = data.jobs.setdefault(name, [])
        if not history or history[-1][1] != snapshot:
            history.append((now, snapshot))
