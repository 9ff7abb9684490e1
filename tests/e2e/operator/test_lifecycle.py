"""A PSJob's life on the real control plane: success, failures, restarts and policies."""

from __future__ import annotations

import pytest

from tests.e2e.operator.support import (
    SLEEP_FOREVER,
    Manifest,
    OperatorProcess,
    PSJobs,
    eventually,
    job_manifest,
    python_command,
)

pytestmark = pytest.mark.cluster

EXIT = "import sys; sys.exit({code})"
RESTART_JOB = {"recovery": "RestartJob"}
"""runPolicy of a job that restarts whole on a retryable failure, as before in-place recovery."""


def test_success_stops_servers_and_kubectl_wait_returns(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(job_manifest("ok"))
    psjobs.kubectl_wait("ok", "Succeeded", timeout=90)
    status = psjobs.status("ok")
    assert status["phase"] == "Succeeded"
    assert status["workers"]["succeeded"] == 2
    assert status["servers"]["failed"] == 0
    # The server never exits by itself: the operator stops it and says so.
    eventually(
        lambda: (
            [r["phase"] for r in psjobs.status("ok")["replicas"] if r["role"] == "server"]
            == ["Stopped"]
        ),
        "the server to be reported Stopped",
    )
    psjobs.wait_no_pods_of_role("ok", "server")
    ready = psjobs.condition("ok", "Ready")
    assert ready is not None and ready["status"] == "True"
    shown = psjobs.cluster.kubectl("get", "psj", "ok", "-n", psjobs.namespace).stdout
    assert "Succeeded" in shown.splitlines()[1]
    metrics = operator.metrics()
    assert "psjob_pods_created_total 3.0" in metrics
    assert f'psjob_jobs{{namespace="{psjobs.namespace}",phase="Succeeded"}} 1.0' in metrics


def test_permanent_exit_code_fails_at_once_naming_pod_and_code(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(
        job_manifest(
            "bug",
            workers={
                "replicas": 1,
                "restartPolicy": "ExitCode",
                "command": python_command(EXIT.format(code=1)),
            },
        )
    )
    status = psjobs.wait_phase("bug", "Failed", timeout=60)
    failed = psjobs.condition("bug", "Failed")
    assert failed is not None
    assert "bug-worker-0" in failed["message"] and "code 1" in failed["message"]
    assert status["restartCount"] == 0
    reasons = {e["reason"] for e in psjobs.events_once("bug", "PodFailed", "Failed")}
    assert "Restarting" not in reasons, reasons


def test_retryable_code_restarts_until_backoff_limit(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    # Fails with 75 (retryable) in attempts 0 and 1: the job restarts twice, then gives up.
    psjobs.apply(
        job_manifest(
            "flaky",
            workers={
                "replicas": 1,
                "restartPolicy": "ExitCode",
                "command": python_command(EXIT.format(code=75)),
            },
            runPolicy={"backoffLimit": 2, **RESTART_JOB},
        )
    )
    status = psjobs.wait_phase("flaky", "Failed", timeout=90)
    assert status["restartCount"] == 2
    failed = psjobs.condition("flaky", "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    restarts = [e for e in psjobs.events("flaky") if e["reason"] == "Restarting"]
    assert len(restarts) == 2


def test_a_restart_recreates_pods_with_the_next_attempt(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    # Worker 0 fails once (exit 75) and succeeds in the next attempt.
    code = "import os, sys; sys.exit(75 if os.environ['PSJOB_RESTART_COUNT'] == '0' else 0)"
    psjobs.apply(
        job_manifest(
            "retry",
            workers={"replicas": 1, "restartPolicy": "ExitCode", "command": python_command(code)},
            runPolicy=RESTART_JOB,
        )
    )
    status = psjobs.wait_phase("retry", "Succeeded", timeout=90)
    assert status["restartCount"] == 1 and status["attempt"] == 1


def test_deleting_a_running_server_pod_restarts_the_job_under_restart_job(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(
        job_manifest(
            "drain", workers={"replicas": 1, "command": SLEEP_FOREVER}, runPolicy=RESTART_JOB
        )
    )
    psjobs.wait_phase("drain", "Running", timeout=60)
    psjobs.core.delete_namespaced_pod("drain-server-0", psjobs.namespace)
    eventually(lambda: psjobs.status("drain").get("attempt") == 1, "a restart")
    status = psjobs.wait_phase("drain", "Running", timeout=60)
    assert status["restartCount"] == 1
    pods = psjobs.pods("drain")
    assert {p["metadata"]["annotations"]["psjob.dev/attempt"] for p in pods} == {"1"}
    env = psjobs.pod_env(pods[0])
    assert env["PSJOB_RESTART_COUNT"] == "1"


def test_deleting_a_running_server_pod_recreates_that_pod_alone(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    """In place (the default): the same name and environment, a new uid and an incarnation; the
    other pods are left alone and no restart is counted."""
    psjobs.apply(job_manifest("heal", workers={"replicas": 1, "command": SLEEP_FOREVER}))
    psjobs.wait_phase("heal", "Running", timeout=60)
    before = {p["metadata"]["name"]: p for p in psjobs.pods("heal")}
    psjobs.core.delete_namespaced_pod("heal-server-0", psjobs.namespace)

    def replaced() -> Manifest | None:
        """heal-server-0 once a new pod of that name runs."""
        for pod in psjobs.pods("heal"):
            if (
                pod["metadata"]["name"] == "heal-server-0"
                and pod["metadata"]["uid"] != before["heal-server-0"]["metadata"]["uid"]
                and pod["status"].get("phase") == "Running"
            ):
                return pod
        return None

    server = eventually(replaced, "heal-server-0 recreated and running", timeout=60)
    assert server["metadata"]["annotations"]["psjob.dev/incarnation"] == "1"
    assert psjobs.pod_env(server) == psjobs.pod_env(before["heal-server-0"])
    assert psjobs.uids("heal")["heal-worker-0"] == before["heal-worker-0"]["metadata"]["uid"]
    eventually(
        lambda: "Recovered" in {e["reason"] for e in psjobs.events("heal")}, "a Recovered event"
    )
    status = psjobs.wait_phase("heal", "Running")
    assert status["restartCount"] == 0 and status["attempt"] == 0
    assert status["recoveries"] == 1 and status["servers"]["recoveries"] == 1
    assert eventually(lambda: psjobs.status("heal")["recovering"] == [], "the recovery closed")
    ready = psjobs.condition("heal", "Ready")
    assert ready is not None and ready["status"] == "True"
    recovered = next(e for e in psjobs.events("heal") if e["reason"] == "Recovered")
    assert recovered["message"].startswith("server-0 runs again ")
    assert "s after it was lost (pod heal-server-0, incarnation 1)" in recovered["message"]
    reasons = [e["reason"] for e in psjobs.events("heal")]
    assert "Restarting" not in reasons and "RecoveryFallback" not in reasons
    wide = psjobs.cluster.kubectl("get", "psj", "heal", "-n", psjobs.namespace, "-o", "wide")
    header, row = wide.stdout.splitlines()[:2]
    assert header.split()[-2:] == ["RECOVERIES", "AGE"]
    assert row.split()[-2] == "1"  # STEP and SAMPLES/S are empty here: count from the end


def test_a_pod_that_keeps_failing_falls_back_to_whole_restarts_until_backoff_limit(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    """Worker 0 always exits 75: recovered in place, its replacement fails at once, so the job
    restarts whole; in the next attempt the same, until backoffLimit."""
    psjobs.apply(
        job_manifest(
            "crashloop",
            workers={
                "replicas": 1,
                "restartPolicy": "ExitCode",
                "command": python_command(EXIT.format(code=75)),
            },
            runPolicy={"backoffLimit": 1},
        )
    )
    status = psjobs.wait_phase("crashloop", "Failed", timeout=120)
    assert status["restartCount"] == 1 and status["recoveries"] == 2
    failed = psjobs.condition("crashloop", "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    events = psjobs.events_once("crashloop", "RecoveryFallback", "RecoveryFallback", "Failed")
    reasons = [e["reason"] for e in events]
    assert reasons.count("Restarting") == 1
    assert reasons.count("RecoveryFallback") == 2 and reasons.count("Recovering") == 2
    fallback = next(e for e in events if e["reason"] == "RecoveryFallback")
    assert "worker-0" in fallback["message"]


def test_deadline_fails_the_job_and_stops_its_pods(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(
        job_manifest(
            "slow",
            workers={"replicas": 1, "command": SLEEP_FOREVER},
            runPolicy={"activeDeadlineSeconds": 5},
        )
    )
    psjobs.wait_phase("slow", "Failed", timeout=60)
    failed = psjobs.condition("slow", "Failed")
    assert failed is not None and failed["reason"] == "DeadlineExceeded"
    psjobs.wait_no_pods("slow")


def test_ttl_deletes_a_finished_job(operator: OperatorProcess, psjobs: PSJobs) -> None:
    psjobs.apply(job_manifest("brief", runPolicy={"ttlSecondsAfterFinished": 2}))
    psjobs.wait_phase("brief", "Succeeded", timeout=60)
    eventually(lambda: psjobs.missing("brief"), "the finished job to be deleted", timeout=30)


def test_suspend_removes_pods_and_resume_recreates_them(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(job_manifest("queue", workers={"replicas": 1, "command": SLEEP_FOREVER}))
    psjobs.wait_phase("queue", "Running", timeout=60)
    psjobs.patch_spec("queue", {"runPolicy": {"suspend": True}})
    psjobs.wait_phase("queue", "Suspended", timeout=30)
    psjobs.wait_no_pods("queue")
    assert psjobs.status("queue")["restartCount"] == 0
    psjobs.patch_spec("queue", {"runPolicy": {"suspend": False}})
    status = psjobs.wait_phase("queue", "Running", timeout=60)
    assert status["restartCount"] == 0
    suspended = psjobs.condition("queue", "Suspended")
    assert suspended is not None and suspended["status"] == "False"


def test_kubectl_scale_in_place_adds_and_removes_workers_beside_the_running_pods(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    """recovery InPlace (the default); a training job scaled mid-training: test_scaling.py."""
    psjobs.apply(job_manifest("live", workers={"replicas": 1, "command": SLEEP_FOREVER}))
    psjobs.wait_phase("live", "Running", timeout=60)
    before = psjobs.uids("live")
    psjobs.cluster.kubectl("scale", "-n", psjobs.namespace, "psjob/live", "--replicas=3")
    eventually(lambda: len(psjobs.pods("live")) == 4, "2 workers added", timeout=60)
    pods = {p["metadata"]["name"]: p for p in psjobs.pods("live")}
    assert {name: pods[name]["metadata"]["uid"] for name in before} == before
    assert psjobs.pod_env(pods["live-worker-2"])["WORLD_SIZE"] == "4"
    assert psjobs.pod_env(pods["live-worker-0"])["WORLD_SIZE"] == "2"
    assert {p["metadata"]["annotations"]["psjob.dev/attempt"] for p in pods.values()} == {"0"}
    psjobs.cluster.kubectl("scale", "-n", psjobs.namespace, "psjob/live", "--replicas=1")
    eventually(lambda: psjobs.uids("live") == before, "workers 1 and 2 removed", timeout=60)
    status = psjobs.wait_phase("live", "Running", timeout=30)
    assert (status["restartCount"], status["attempt"], status["recoveries"]) == (0, 0, 0)
    assert status["workers"]["summary"] == "1/1"
    reasons = [e["reason"] for e in psjobs.events_once("live", "Scaled", "Scaled")]
    assert reasons.count("Scaled") == 2 and "Restarting" not in reasons, reasons


def test_kubectl_scale_under_restart_job_restarts_with_the_new_world_size(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(
        job_manifest(
            "elastic",
            workers={"replicas": 1, "command": SLEEP_FOREVER},
            runPolicy={"recovery": "RestartJob"},
        )
    )
    psjobs.wait_phase("elastic", "Running", timeout=60)
    psjobs.cluster.kubectl("scale", "-n", psjobs.namespace, "psjob/elastic", "--replicas=3")
    eventually(
        lambda: (
            len(psjobs.pods("elastic")) == 4
            and all(
                p["metadata"]["annotations"]["psjob.dev/attempt"] == "1"
                for p in psjobs.pods("elastic")
            )
        ),
        "4 pods of the next attempt",
        timeout=60,
    )
    status = psjobs.wait_phase("elastic", "Running", timeout=60)
    assert status["restartCount"] == 0
    env = psjobs.pod_env(psjobs.pods("elastic")[0])
    assert env["WORLD_SIZE"] == "4"


def test_deleting_a_job_deletes_its_children_even_with_the_operator_down(
    start_operator: object, psjobs: PSJobs
) -> None:
    operator = start_operator()  # type: ignore[operator]
    psjobs.apply(job_manifest("gone", workers={"replicas": 1, "command": SLEEP_FOREVER}))
    psjobs.wait_phase("gone", "Running", timeout=60)
    operator.process.stop()
    psjobs.delete("gone")
    psjobs.wait_no_pods("gone", timeout=60)
    eventually(
        lambda: not psjobs.core.list_namespaced_service(psjobs.namespace).items,
        "the services to be garbage-collected",
    )
    assert psjobs.missing("gone")


def test_a_job_deleted_and_applied_again_under_the_same_name_runs_again(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(job_manifest("again"))
    psjobs.wait_phase("again", "Succeeded", timeout=60)
    psjobs.delete("again")
    eventually(lambda: psjobs.missing("again"), "the job to be deleted")
    psjobs.apply(job_manifest("again"))
    psjobs.wait_phase("again", "Succeeded", timeout=60)


def test_gang_scheduling_without_a_pod_group_crd_says_so_and_still_runs(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(job_manifest("gang", runPolicy={"schedulingPolicy": {"minAvailable": 3}}))
    psjobs.wait_phase("gang", "Succeeded", timeout=60)
    group = psjobs.condition("gang", "PodGroup")
    assert group is not None and group["status"] == "False"
    assert "not installed" in group["message"]
    assert "PodGroupUnavailable" in {e["reason"] for e in psjobs.events("gang")}


def test_a_template_the_api_server_refuses_fails_the_job_with_its_reason(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    psjobs.apply(job_manifest("broken", workers={"template": {"spec": {"dnsPolicy": "Bogus"}}}))
    psjobs.wait_phase("broken", "Failed", timeout=60)
    failed = psjobs.condition("broken", "Failed")
    assert failed is not None and failed["reason"] == "InvalidPodTemplate"
    assert "dnsPolicy" in failed["message"]
