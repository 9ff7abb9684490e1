"""The recovery section of bench/README.md, from bench/out/recovery.json (issue 15).

    python -m bench.runtime.recovery_report

Rewrites only the text between the recovery markers (appends them with the section where they
are missing), as bench/report.py does for its own sections; the findings written by hand stay
below the end marker. Targets: goodput with in-place recovery >= 0.9x the failure-free run's and
>= 1.5x the whole-job restart's, under the same kill schedule; every killed worker back in
training within 5 s and every killed server within 10 s.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.markdown import between_markers, row, verdict

BENCH = Path(__file__).resolve().parents[1]
README = BENCH / "README.md"
RESULT = BENCH / "out" / "recovery.json"
BEGIN, END = "<!-- recovery-bench:begin -->", "<!-- recovery-bench:end -->"
FAILURE_FREE_TARGET = 0.9
RESTART_JOB_TARGET = 1.5
BACK_TARGETS = {"worker": 5.0, "server": 10.0}
"""Seconds from a kill to the first update applied after it, per role."""
QUICK_NOTE = " (quick: a shorter job)"

Record = dict[str, Any]


def back_times(job: Record, role: str) -> list[float | None]:
    """Seconds from each kill of `role` to the first update after it (None: never seen)."""
    return [kill["back_after"] for kill in job["kills"] if kill["role"] == role]


def restart_back_times(job: Record) -> list[float | None]:
    """Seconds from each kill to the next first step of any worker (a whole restart's workers
    each print one), None where none came before the job ended."""
    times: list[float | None] = []
    for kill in job["kills"]:
        later = [s["at"] for s in job["first_steps"] if s["at"] > kill["killed_at"]]
        times.append(min(later) - kill["killed_at"] if later else None)
    return times


def goodput_ratios(jobs: Record) -> tuple[float, float, bool]:
    """In place / failure-free, in place / restart-job, and whether the second is a lower
    bound (the restart-job run was stopped at the cap before it finished)."""
    in_place = jobs["in_place"]["goodput"]
    restart = jobs["restart_job"]
    lower_bound = restart["stopped_at"] is not None
    return in_place / jobs["failure_free"]["goodput"], in_place / restart["goodput"], lower_bound


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def spread(times: list[float | None]) -> str:
    """'median / max' of the times seen, and how many never came."""
    seen = [t for t in times if t is not None]
    text = f"{statistics.median(seen):.1f} / {max(seen):.1f} s" if seen else "none seen"
    missing = len(times) - len(seen)
    return text + (f", {missing} of {len(times)} never" if missing else "")


def targets(run: Record) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows of a run's figures (the record's "recovery")."""
    jobs = run["jobs"]
    finished = all(jobs[name]["finished"] for name in ("failure_free", "in_place"))
    free, restart, lower_bound = goodput_ratios(jobs)
    rows = [
        (
            f"goodput in place >= {FAILURE_FREE_TARGET}x the failure-free run",
            f"{free:.2f}x" + ("" if finished else " (a job failed: see below)"),
            finished and free >= FAILURE_FREE_TARGET,
        ),
        (
            f"goodput in place >= {RESTART_JOB_TARGET}x the whole-job restart",
            ("at least " if lower_bound else "") + f"{restart:.2f}x",
            finished and restart >= RESTART_JOB_TARGET,
        ),
    ]
    for role, limit in BACK_TARGETS.items():
        times = back_times(jobs["in_place"], role)
        rows.append(
            (
                f"every killed {role} back in training within {limit:.0f} s",
                f"median / max {spread(times)} ({len(times)} kills)",
                bool(times) and all(t is not None and t <= limit for t in times),
            )
        )
    return rows


def jobs_table(jobs: Record, losses: str) -> list[str]:
    """The three jobs side by side; `losses` names the column of kills (or deletions)."""
    failure_free = jobs["failure_free"]["goodput"]
    return [
        row(
            [
                "job",
                losses,
                "recovered in place",
                "whole restarts",
                "wall time",
                "useful samples",
                "goodput (samples/s)",
                "x failure-free",
                "test AUC",
            ]
        ),
        row(["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
        job_row("no failures", jobs["failure_free"], failure_free),
        job_row("in place", jobs["in_place"], failure_free),
        job_row("whole-job restart", jobs["restart_job"], failure_free),
    ]


def job_row(label: str, job: Record, failure_free: float) -> str:
    if job["stopped_at"] is not None:
        wall = f"stopped at {job['stopped_at']:.0f} s"
        samples = f"{job['useful_samples']:,} reached"
    else:
        wall = f"{job['wall_seconds']:.0f} s" + ("" if job["finished"] else " (failed)")
        samples = f"{job['useful_samples']:,}"
    auc = "-" if job["test_auc"] is None else f"{job['test_auc']:.4f}"
    return row(
        [
            label,
            len(job["kills"]),
            job["recovered_in_place"],
            job["whole_restarts"],
            wall,
            samples,
            f"{job['goodput']:,.0f}",
            f"**{job['goodput'] / failure_free:.2f}**",
            auc,
        ]
    )


def _kill_row(kill: Record) -> str:
    if kill["role"] == "worker":
        steps = kill["workers_at_step"][int(kill["victim"].rsplit("-", 1)[1])]
        resumed = kill.get("resumed_at_step")
        where = "no first step seen" if resumed is None else f"resumed at step {resumed}"
        where += f" (its last progress line before the kill: step {steps})"
    else:
        restored = kill.get("restored_step")
        where = "no checkpoint yet" if restored is None else f"restored checkpoint step {restored}"
        where += f"; update count before the kill {kill.get('updates_before')}"
    return row(
        [
            f"{kill['scheduled']:.1f} s",
            kill["victim"],
            seconds(kill["respawned_after"]),
            seconds(kill.get("answered_after")),
            f"**{seconds(kill['back_after'])}**",
            where,
        ]
    )


def section(result: Record) -> list[str]:
    run = result["recovery"]
    jobs, machine = run["jobs"], result["machine"]
    loads = " / ".join(f"{job['load_mean']:.1f}" for job in jobs.values())
    lines = [
        "## Recovery in place (bench/runtime/recovery.py)",
        "",
        f"Run: `{result['command']}`{QUICK_NOTE if result['quick'] else ''} on {result['date']}, "
        f"{result['wall_seconds']:.0f} s. Machine: {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}, torch {machine['torch']}. "
        f"Mean load average during each job (failure-free / in place / restart-job): {loads} "
        "(sampled every 10 s; the machine is shared with other work, and a 5-minute job cannot "
        "wait for it to be quiet).",
        "",
        f"Three jobs of the same work, one after another, through `python -m "
        f"psjob_runtime.launch`: the ctr example's model and data ({run['table_rows']:,} x 16 "
        f"table, Adagrad lr 0.05), {run['servers']} servers + {run['workers']} workers, sync, "
        f"{run['steps']:,} steps of {run['batch_per_worker']:,} samples per worker, a checkpoint "
        f"every {run['checkpoint_every']} steps. The second and third kill a server with SIGKILL "
        f"every {run['server_every']:.0f} s (server-1, server-0, ...) and a worker every "
        f"{run['worker_every']:.0f} s (worker-1, worker-0, ...; offset by "
        f"{run['worker_offset']:.1f} s so that no two kills coincide), counted from the job's "
        "first applied step; the second recovers in place (`--recovery in-place`), the third "
        "restarts the whole job from the checkpoint on every loss (`--recovery restart-job`). "
        "Goodput: the job's useful samples (the same fixed work in every run) over the "
        "launcher's wall time, start-up included. A restart-job run still going at "
        f"{run['cap_factor']}x the failure-free run's time is stopped; its goodput is then the "
        "samples its workers had reached over that time (an upper bound), and the ratio to it "
        "a lower bound.",
        "",
        row(["target", "measured", ""]),
        row(["---", "---", "---"]),
        *[row([what, measured, verdict(met)]) for what, measured, met in targets(run)],
        "",
        *jobs_table(jobs, "kills"),
        "",
        "With whole-job restarts, the job's next applied step (the restarted workers' first, "
        "from the newest complete checkpoint) came median / max "
        f"{spread(restart_back_times(jobs['restart_job']))} after a kill.",
        "",
        "Each kill of the in-place job: when the launcher had started the replacement, when a "
        "killed server's /metrics answered again, and when the first update after the kill was "
        "applied (a worker: its replacement's first `optimizer.step()` returned; a server: its "
        "update count passed the value read just before the kill); seconds after the kill.",
        "",
        row(["kill at", "victim", "started again", "/metrics again", "back in training", ""]),
        row(["---:", "---", "---:", "---:", "---:", "---"]),
        *[_kill_row(kill) for kill in jobs["in_place"]["kills"]],
        "",
    ]
    failed = [name for name, job in jobs.items() if not job["finished"] and not job["stopped_at"]]
    for name in failed:
        job = jobs[name]
        lines += [
            f"The {name} job failed (exit code {job['exit_code']}); its last lines "
            f"(`{job['log']}`):",
            "",
            "```",
            *[line.rstrip("\n") for line in job["tail"]],
            "```",
            "",
        ]
    return lines


def rewrite(text: str, lines: list[str]) -> str:
    """`text` with `lines` between the recovery markers (appended with them if absent)."""
    return between_markers(text, lines, BEGIN, END)


def main() -> int:
    result = json.loads(RESULT.read_text())
    README.write_text(rewrite(README.read_text(), section(result)))
    print(f"rewrote the recovery section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
