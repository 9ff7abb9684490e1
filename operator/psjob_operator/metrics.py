"""Prometheus metrics of the operator, served on /metrics."""

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

JOBS = Gauge(
    "psjob_jobs",
    "PSJobs known to the operator, by phase.",
    ["namespace", "phase"],
    registry=REGISTRY,
)
PODS_CREATED = Counter(
    "psjob_pods_created_total", "Pods created by the operator.", registry=REGISTRY
)
PODS_DELETED = Counter(
    "psjob_pods_deleted_total", "Pods deleted by the operator.", registry=REGISTRY
)
RESTARTS = Counter(
    "psjob_job_restarts_total", "Whole-job restarts, by reason.", ["reason"], registry=REGISTRY
)
RECOVERIES = Counter(
    "psjob_recoveries_total",
    "Lost pods recreated alone under runPolicy.recovery InPlace (in-place recoveries begun).",
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "psjob_reconcile_seconds", "Time of one reconcile of one job.", registry=REGISTRY
)
RECONCILE_ERRORS = Counter(
    "psjob_reconcile_errors_total", "Reconciles that failed and were retried.", registry=REGISTRY
)
TIME_TO_RUNNING = Histogram(
    "psjob_time_to_running_seconds",
    "From the job's creation to all of its pods running.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
JOB_STEP = Gauge(
    "psjob_job_step",
    "The training step of each job, from status.progress.",
    ["namespace", "job"],
    registry=REGISTRY,
)
JOB_SAMPLES_PER_SECOND = Gauge(
    "psjob_job_samples_per_second",
    "Samples per second of each job, from status.progress.",
    ["namespace", "job"],
    registry=REGISTRY,
)


def show_job_progress(namespace: str, job: str, step: int, samples_per_second: float) -> None:
    JOB_STEP.labels(namespace, job).set(step)
    JOB_SAMPLES_PER_SECOND.labels(namespace, job).set(samples_per_second)


def forget_job_progress(namespace: str, job: str) -> None:
    """A deleted job's gauges go: a job's series must not outlive it."""
    for gauge in (JOB_STEP, JOB_SAMPLES_PER_SECOND):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, job)
