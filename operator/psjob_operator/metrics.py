"""Prometheus metrics of the operator, served on /metrics."""

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
