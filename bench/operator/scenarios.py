"""The measured runs: one job through kubectl (the reference) or the operator, and many jobs.

Every time is measured from the moment the benchmark starts kubectl to an event that the
recorder saw arrive, so both sides include kubectl's own start-up and the same watch delay.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import yaml

from bench.operator.apimetrics import delta, request_counts, summary
from bench.operator.harness import (
    OPERATOR_NAMESPACE,
    REFERENCE_NAMESPACE,
    Stage,
    job_manifest,
    rss_bytes,
)
from bench.operator.recorder import JobSnapshot, Recorded

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
SETTLE_SECONDS = 2.0
"""Wait after the last awaited event before reading the request counters: late writes count."""
TIMEOUT = 600.0

Result = dict[str, Any]


def _all_pods(data: Recorded, pods: int, services: int) -> bool:
    return len(data.present_pods) >= pods and len(data.services) >= services


def _all_running(data: Recorded, pods: int) -> bool:
    return sum(1 for p in data.pods.values() if p.running is not None) >= pods


def _last_created(data: Recorded) -> float:
    return max([p.added for p in data.pods.values()] + list(data.services.values()))


def _last_running(data: Recorded) -> float:
    return max(p.running or 0.0 for p in data.pods.values())


def _first(data: Recorded, job: str, holds: Callable[[JobSnapshot], bool]) -> float | None:
    return next((t for t, s in data.jobs.get(job, []) if holds(s)), None)


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before[name], 2) for name in after}


def _settled_requests(stage: Stage, before: Any) -> Any:
    time.sleep(SETTLE_SECONDS)
    return delta(before, request_counts(stage.api))


def reference_run(stage: Stage, servers: int, workers: int, jobs: int = 1) -> Result:
    """`kubectl create` of exactly what `psjob render` prints for the jobs: the API's own pace."""
    manifests = [job_manifest(f"ref-{i:03d}", servers, workers) for i in range(jobs)]
    rendered = stage.render(manifests, REFERENCE_NAMESPACE)
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered)]
    pods, services = kinds.count("Pod"), kinds.count("Service")
    recorder = stage.recorder(REFERENCE_NAMESPACE)
    try:
        before = request_counts(stage.api)
        cpu_before = stage.cpu()
        started = time.monotonic()
        kubectl_seconds = stage.kubectl("create", "-f", "-", input_text=rendered)
        recorder.wait("all objects created", lambda d: _all_pods(d, pods, services), TIMEOUT)
        recorder.wait("all pods Running", lambda d: _all_running(d, pods), TIMEOUT)
        cpu = _cpu_delta(cpu_before, stage.cpu())
        requests = _settled_requests(stage, before)
        data = recorder.data
        created, running = _last_created(data), _last_running(data)
    finally:
        recorder.stop()
    stage.clean(REFERENCE_NAMESPACE)
    return {
        "jobs": jobs,
        "servers": servers,
        "workers": workers,
        "pods": pods,
        "kubectl_seconds": kubectl_seconds,
        "created_seconds": created - started,
        "running_seconds": running - started,
        "cpu_seconds": cpu,
        "requests": summary(requests, jobs),
    }


def operator_run(stage: Stage, servers: int, workers: int, clean: bool = True) -> Result:
    """`kubectl apply` of one PSJob; the operator creates its children and reports them.

    `clean`: delete the job and its pods afterwards (the last run of a stage can leave them)."""
    name = f"op-{workers}"
    pods, services = servers + workers, 2

    def complete(s: JobSnapshot) -> bool:
        return s.servers.active == servers and s.workers.active == workers

    def ready(s: JobSnapshot) -> bool:
        return s.servers.ready == servers and s.workers.ready == workers

    recorder = stage.recorder(OPERATOR_NAMESPACE)
    try:
        before = request_counts(stage.api)
        cpu_before = stage.cpu()
        started = time.monotonic()
        text = yaml.safe_dump(job_manifest(name, servers, workers))
        stage.kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", "-", input_text=text)
        recorder.wait("all objects created", lambda d: _all_pods(d, pods, services), TIMEOUT)
        recorder.wait(
            "status: all active", lambda d: _first(d, name, complete) is not None, TIMEOUT
        )
        recorder.wait("status: all ready", lambda d: _first(d, name, ready) is not None, TIMEOUT)
        cpu = _cpu_delta(cpu_before, stage.cpu())
        requests = _settled_requests(stage, before)
        data = recorder.data
        created, running = _last_created(data), _last_running(data)
        active_at, ready_at = _first(data, name, complete), _first(data, name, ready)
        assert active_at is not None and ready_at is not None
        status_writes = len(data.jobs[name])
        status_bytes = data.largest_status[name]
    finally:
        recorder.stop()
    memory = rss_bytes(stage.operator_pid)
    if clean:
        stage.clean(OPERATOR_NAMESPACE)
    return {
        "servers": servers,
        "workers": workers,
        "pods": pods,
        "created_seconds": created - started,
        "active_seconds": active_at - started,
        "ready_seconds": ready_at - started,
        "running_seconds": running - started,
        "status_versions_seen": status_writes,
        "largest_status_bytes": status_bytes,
        "cpu_seconds": cpu,
        "operator_rss_bytes": memory.get("VmRSS", 0),
        "operator_peak_rss_bytes": memory.get("VmHWM", 0),
        "requests": summary(requests, 1),
    }


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "count": len(ordered),
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "samples": [round(v, 4) for v in ordered],
    }


def _running_to_ready_latencies(data: Recorded, jobs: list[str]) -> list[float]:
    """For the i-th pod of a job seen Running: until the job's status counts i ready pods."""
    latencies = []
    for job in jobs:
        prefix = f"{job}-"
        running = sorted(
            p.running for n, p in data.pods.items() if n.startswith(prefix) and p.running
        )
        for i, seen in enumerate(running, start=1):

            def counted(s: JobSnapshot, i: int = i) -> bool:
                return s.servers.ready + s.workers.ready >= i

            shown = _first(data, job, counted)
            if shown is not None:
                latencies.append(shown - seen)
    return latencies


def _finish_pod(stage: Stage, name: str) -> float:
    """Mark a running pod Succeeded (exit 0) as a kubelet would; when the request was sent."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
    patch = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "psjob",
                    "ready": False,
                    "started": False,
                    "state": {"running": None, "terminated": terminated},
                }
            ],
        }
    }
    sent = time.monotonic()
    stage.core.patch_namespaced_pod_status(
        name, OPERATOR_NAMESPACE, patch, _content_type=STRATEGIC_MERGE_PATCH
    )
    return sent


def many_jobs(stage: Stage, jobs: int, servers: int, workers: int) -> Result:
    """`jobs` PSJobs in one `kubectl apply`; then one worker of each finishes at once."""
    names = [f"many-{i:03d}" for i in range(jobs)]
    pods = jobs * (servers + workers)
    text = yaml.safe_dump_all([job_manifest(n, servers, workers) for n in names])

    def running(s: JobSnapshot) -> bool:
        return s.phase == "Running"

    def finished_one(s: JobSnapshot) -> bool:
        return s.workers.succeeded >= 1

    recorder = stage.recorder(OPERATOR_NAMESPACE)
    try:
        before = request_counts(stage.api)
        cpu_before = stage.cpu()
        started = time.monotonic()
        stage.kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", "-", input_text=text)
        recorder.wait(
            "every job Running",
            lambda d: all(_first(d, n, running) is not None for n in names),
            TIMEOUT,
        )
        recorder.wait("all pods Running", lambda d: _all_running(d, pods), TIMEOUT)
        cpu = _cpu_delta(cpu_before, stage.cpu())
        requests = _settled_requests(stage, before)
        data = recorder.data
        jobs_running = max(_first(data, n, running) or 0.0 for n in names) - started
        pods_running = _last_running(data) - started
        start_latencies = _running_to_ready_latencies(data, names)

        with ThreadPoolExecutor(16) as pool:
            finished = pool.map(lambda n: _finish_pod(stage, f"{n}-worker-0"), names)
            sent = dict(zip(names, finished, strict=True))
        recorder.wait(
            "every job counting its finished worker",
            lambda d: all(_first(d, n, finished_one) is not None for n in names),
            TIMEOUT,
        )
        counted = {n: _first(data, n, finished_one) or 0.0 for n in names}
        finish_latencies = [counted[n] - sent[n] for n in names]
        seen = {n: data.pods[f"{n}-worker-0"].finished or sent[n] for n in names}
        seen_latencies = [counted[n] - seen[n] for n in names]
        apiserver_latencies = [seen[n] - sent[n] for n in names]
    finally:
        recorder.stop()
    memory = rss_bytes(stage.operator_pid)
    stage.clean(OPERATOR_NAMESPACE)
    return {
        "jobs": jobs,
        "servers": servers,
        "workers": workers,
        "pods": pods,
        "jobs_running_seconds": jobs_running,
        "pods_running_seconds": pods_running,
        "cpu_seconds": cpu,
        "operator_rss_bytes": memory.get("VmRSS", 0),
        "operator_peak_rss_bytes": memory.get("VmHWM", 0),
        "requests": summary(requests, jobs),
        "latency_running_to_status": _percentiles(start_latencies),
        "latency_finished_to_status": _percentiles(finish_latencies),
        "latency_finished_seen_to_status": _percentiles(seen_latencies),
        "latency_finished_patch_to_watch": _percentiles(apiserver_latencies),
    }
