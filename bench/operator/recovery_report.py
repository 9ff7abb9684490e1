"""The dev-cluster recovery section of bench/README.md, from bench/out/cluster-recovery.json.

    python -m bench.operator.recovery_report

Rewrites only the text between its markers (appends them with the section where they are
missing); the figures are bench/runtime/recovery_report.py's, measured through the operator. The
issue's targets are set for the local launcher: here they are shown for comparison.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.markdown import between_markers, row, verdict
from bench.runtime.recovery_report import (
    QUICK_NOTE,
    jobs_table,
    restart_back_times,
    seconds,
    spread,
    targets,
)

BENCH = Path(__file__).resolve().parents[1]
README = BENCH / "README.md"
RESULT = BENCH / "out" / "cluster-recovery.json"
BEGIN, END = "<!-- cluster-recovery-bench:begin -->", "<!-- cluster-recovery-bench:end -->"

Record = dict[str, Any]


def _kill_row(kill: Record) -> str:
    if kill["role"] == "worker":
        steps = kill["workers_at_step"][int(kill["victim"].rsplit("-", 1)[1])]
        resumed = kill.get("resumed_at_step")
        where = "no first step seen" if resumed is None else f"resumed at step {resumed}"
        where += f" (its last progress line before the deletion: step {steps})"
    else:
        restored = kill.get("restored_step")
        where = "no checkpoint yet" if restored is None else f"restored checkpoint step {restored}"
        where += f"; the workers had reached steps {kill['workers_at_step']}"
    return row(
        [
            f"{kill['scheduled']:.1f} s",
            kill["victim"],
            seconds(kill["running_after"]),
            f"**{seconds(kill['back_after'])}**",
            where,
        ]
    )


def section(result: Record) -> list[str]:
    run = result["recovery"]
    jobs, machine = run["jobs"], result["machine"]
    loads = " / ".join(f"{job['load_mean']:.1f}" for job in jobs.values())
    restart = jobs["restart_job"]
    lines = [
        "## Recovery in place on the dev cluster (bench/operator/recovery.py)",
        "",
        f"Run: `{result['command']}`{QUICK_NOTE if result['quick'] else ''} on {result['date']}, "
        f"{result['wall_seconds']:.0f} s. Machine: {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}, torch {machine['torch']}. "
        f"Mean load average during each job (failure-free / in place / restart-job): {loads}.",
        "",
        "The same work as the section above, as three PSJobs through `psjob operator` on "
        "`make dev-cluster`'s cluster (real kube-apiserver, etcd and controller-manager; pods "
        f"run as processes of the node agent): {run['servers']} servers + {run['workers']} "
        f"workers, sync, {run['steps']:,} steps of {run['batch_per_worker']:,} samples per "
        f"worker, a checkpoint every {run['checkpoint_every']} steps. The second and third have "
        "a server pod deleted every 60 s and a worker pod every 45 s (offset 22.5 s), at once "
        "(`gracePeriodSeconds: 0`), counted from the job's first applied step; the second "
        "runs with `runPolicy.recovery: InPlace`, the third with `RestartJob` (the operator's "
        "back-off of 2, 4, 8, ... s before each whole restart included). Goodput: useful "
        "samples over the time from creating the PSJob to its Succeeded. A restart-job run "
        f"still going at {run['cap_factor']}x the failure-free run's time is stopped (its "
        "ratio is then a lower bound). The targets are the issue's for the local launcher, "
        "shown here for comparison.",
        "",
        row(["target (set for the local launcher)", "measured on the dev cluster", ""]),
        row(["---", "---", "---"]),
        *[row([what, measured, verdict(met)]) for what, measured, met in targets(run)],
        "",
        *jobs_table(jobs, "deletions"),
        "",
        "With whole-job restarts, the job's next applied step came median / max "
        f"{spread(restart_back_times(restart))} after a deletion.",
        "",
        "Each deletion of the in-place job: when the replacement pod was seen Running, and when "
        "training went on (a worker: its replacement's first applied step; a server: the end "
        "of the workers' stall that began with the deletion); seconds after the deletion.",
        "",
        row(["deleted at", "victim", "replacement Running", "back in training", ""]),
        row(["---:", "---", "---:", "---:", "---"]),
        *[_kill_row(kill) for kill in jobs["in_place"]["kills"]],
        "",
    ]
    for name, job in jobs.items():
        if not job["finished"] and not job["stopped_at"]:
            lines += [f"The {name} job ended {job['phase'] or 'without a phase'}; its Events:", ""]
            lines += ["```", *job["events"], "```", ""]
    return lines


def main() -> int:
    result = json.loads(RESULT.read_text())
    README.write_text(between_markers(README.read_text(), section(result), BEGIN, END))
    print(f"rewrote the dev-cluster recovery section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
