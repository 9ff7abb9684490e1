"""The pure parts of the recovery benchmarks: the kill schedule, the update count read from a
server's /metrics, the times read from the pods' logs on the cluster, and the targets and
sections written into bench/README.md."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from kubernetes import client
from psjob_runtime.metrics import ServerReading, render

from bench.operator.recovery import Job as ClusterJob
from bench.operator.recovery_report import section as cluster_section
from bench.runtime.recovery import FIRST_STEP, STALLED, parse_updates, schedule
from bench.runtime.recovery_report import (
    BEGIN,
    END,
    restart_back_times,
    rewrite,
    section,
    targets,
)


def test_the_schedule_alternates_victims_and_never_kills_two_at_once() -> None:
    kills = schedule(horizon=200)
    assert [(k.at, k.victim) for k in kills] == [
        (22.5, "worker-1"),
        (60.0, "server-1"),
        (67.5, "worker-0"),
        (112.5, "worker-1"),
        (120.0, "server-0"),
        (157.5, "worker-0"),
        (180.0, "server-1"),
    ]
    later = schedule(horizon=3600)
    assert min(b.at - a.at for a, b in pairwise(later)) == 7.5


def test_the_update_count_is_read_from_what_a_server_serves() -> None:
    reading = ServerReading(1234, 10, 20, 0, 0, None, None, None)
    text = render({"job": "j", "namespace": "n", "role": "server", "index": "1"}, reading, None)
    assert parse_updates(text) == 1234
    assert parse_updates("# nothing here\n") is None


def kill(role: str, back: float | None, victim: str = "") -> dict[str, Any]:
    return {
        "role": role,
        "victim": victim or f"{role}-1",
        "scheduled": 60.0,
        "respawned_after": 0.1,
        "answered_after": 2.0 if role == "server" else None,
        "back_after": back,
        "workers_at_step": [10, 12],
        "resumed_at_step": 11,
        "restored_step": 300,
        "updates_before": 312,
    }


def job(goodput: float, kills: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "goodput": goodput,
        "kills": kills,
        "finished": True,
        "stopped_at": None,
        "exit_code": 0,
        "wall_seconds": 300.0,
        "useful_samples": 7_372_800,
        "recovered_in_place": len(kills),
        "whole_restarts": 0,
        "test_auc": 0.87,
        "load_before": 2.0,
        "load_after": 2.5,
        "load_mean": 2.2,
        "log": "bench/out/recovery-x.log",
        "tail": [],
        "first_steps": [],
        **extra,
    }


def run(restart: dict[str, Any], kills: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "servers": 2,
        "workers": 2,
        "batch_per_worker": 2048,
        "table_rows": 10_000_000,
        "steps": 1800,
        "checkpoint_every": 300,
        "server_every": 60.0,
        "worker_every": 45.0,
        "worker_offset": 22.5,
        "cap_factor": 2.5,
        "jobs": {
            "failure_free": job(25_000.0, []),
            "in_place": job(23_000.0, kills),
            "restart_job": restart,
        },
    }


def result_of(record: dict[str, Any], module: str) -> dict[str, Any]:
    """A benchmark's JSON around `record`, as record_run writes it."""
    return {
        "command": f"python -m {module}",
        "quick": False,
        "date": "2026-12-03T12:00:00+00:00",
        "wall_seconds": 1500.0,
        "machine": {"cores": 2, "cpu": "x", "memory_gib": 23.5, "python": "3.11", "torch": "2"},
        "recovery": record,
    }


def test_targets_judge_ratios_and_every_kill() -> None:
    kills = [kill("worker", 2.0), kill("worker", 4.0), kill("server", 9.0), kill("server", 3.0)]
    rows = targets(run(job(10_000.0, kills), kills))
    assert rows[0] == ("goodput in place >= 0.9x the failure-free run", "0.92x", True)
    assert rows[1] == ("goodput in place >= 1.5x the whole-job restart", "2.30x", True)
    assert rows[2][1:] == ("median / max 3.0 / 4.0 s (2 kills)", True)
    assert rows[3][1:] == ("median / max 6.0 / 9.0 s (2 kills)", True)

    late = [kill("worker", 6.0), kill("server", None), kill("server", 3.0)]
    stopped = job(20_000.0, late, finished=False, stopped_at=750.0, exit_code=143)
    rows = targets(run(stopped, late))
    assert rows[1] == ("goodput in place >= 1.5x the whole-job restart", "at least 1.15x", False)
    assert rows[2][1:] == ("median / max 6.0 / 6.0 s (1 kills)", False)
    assert rows[3][1:] == ("median / max 3.0 / 3.0 s, 1 of 2 never (2 kills)", False)


def test_a_whole_restart_is_back_at_the_next_first_step_of_any_worker() -> None:
    kills = [{"killed_at": 40.0}, {"killed_at": 60.0}, {"killed_at": 90.0}]
    steps = [{"worker": w, "step": 0, "at": 20.0} for w in (0, 1)]
    steps += [{"worker": 1, "step": 283, "at": 55.5}, {"worker": 0, "step": 283, "at": 55.0}]
    assert restart_back_times({"kills": kills, "first_steps": steps}) == [15.0, None, None]


def test_the_section_shows_a_failed_job_with_its_last_lines() -> None:
    kills = [kill("worker", 2.0), kill("server", 9.0, "server-0")]
    record = run(job(10_000.0, kills), kills)
    record["jobs"]["in_place"].update(
        finished=False, exit_code=1, tail=["[launch] worker-1 exited with code 1\n"]
    )
    text = "\n".join(section(result_of(record, "bench.runtime.recovery")))
    assert "| goodput in place >= 0.9x the failure-free run | 0.92x (a job failed" in text
    assert "The in_place job failed (exit code 1)" in text
    assert "[launch] worker-1 exited with code 1\n```" in text
    assert "| 60.0 s | server-0 | 0.1 s | 2.0 s | **9.0 s** | restored checkpoint step 300;" in text
    assert (
        "| **2.0 s** | resumed at step 11 (its last progress line before the kill: step 12) |"
        in text
    )


def test_rewrite_replaces_only_the_recovery_section() -> None:
    text = f"# Benchmarks\n\n{BEGIN}\nold\n{END}\n\nhand-written findings\n"
    assert (
        rewrite(text, ["new"]) == f"# Benchmarks\n\n{BEGIN}\nnew\n{END}\n\nhand-written findings\n"
    )
    assert rewrite("# Benchmarks\n", ["new"]) == f"# Benchmarks\n\n{BEGIN}\nnew\n{END}\n"


def cluster_job(kills: list[dict[str, Any]]) -> ClusterJob:
    """The dev-cluster benchmark's job, fed log lines by hand (no API call is made)."""
    followed = ClusterJob(client.ApiClient(), "recovery-in-place", True, None)
    followed.began = 1000.0
    followed.kills = kills
    return followed


def deletion(victim: str, at: float) -> dict[str, Any]:
    role = victim.split("-")[0]
    return {"victim": victim, "pod": f"recovery-in-place-{victim}", "role": role, "killed_at": at}


def test_on_the_cluster_a_server_is_back_when_the_stall_its_deletion_began_ends() -> None:
    server: dict[str, Any] = {**deletion("server-1", 60.0), "back_after": None}
    followed = cluster_job([server])
    # A stall that ended before the deletion, then one that began after it (not this one's).
    followed._follow("recovery-in-place-worker-0", f"{STALLED} 1.50 s before step 90 at 1050.000")
    followed._follow("recovery-in-place-worker-0", f"{STALLED} 1.20 s before step 99 at 1065.000")
    assert server["back_after"] is None
    followed._follow("recovery-in-place-worker-1", f"{STALLED} 4.80 s before step 97 at 1064.500")
    assert server["back_after"] == 4.5


def test_on_the_cluster_a_worker_is_back_at_its_replacements_first_step() -> None:
    worker: dict[str, Any] = {**deletion("worker-1", 22.5), "back_after": None}
    followed = cluster_job([worker])
    followed._follow("recovery-in-place-worker-0", f"{FIRST_STEP} 400 at 1025.000")
    assert worker.get("back_after") is None
    followed._follow("recovery-in-place-worker-1", f"{FIRST_STEP} 401 at 1025.500")
    assert (worker["back_after"], worker["resumed_at_step"]) == (3.0, 401)


def test_the_cluster_section_compares_with_the_launchers_targets() -> None:
    kills = [kill("worker", 2.0), kill("server", 9.0, "server-0")]
    for each in kills:
        each["running_after"] = 1.5
    record = run(job(10_000.0, kills), kills)
    record["jobs"]["restart_job"].update(events=[], phase="Succeeded")
    text = "\n".join(cluster_section(result_of(record, "bench.operator.recovery")))
    assert "| goodput in place >= 1.5x the whole-job restart | 2.30x | **met** |" in text
    assert "| 60.0 s | server-0 | 1.5 s | **9.0 s** | restored checkpoint step 300;" in text
