"""Operator benchmarks on a no-run local cluster; JSON for bench/report.py.

    python -m bench.operator [--quick] [--profile]
    python -m bench.operator --largest
    python -m bench.operator --memory --servers 4 --sizes 1000 2500 5000 10000

1. growth: one PSJob (4 servers, 10/100/1,000 workers) through the operator, and the same
   rendered objects through `kubectl create` (the reference), alternating, `--repeats` times;
2. many jobs: 100 PSJobs of 10 pods in one `kubectl apply`: time to Running, operator RSS, API
   requests per job, and status latency under that load.
`--profile` runs the operator under py-spy (slower: for finding hot spots, not for figures).
`--largest` runs only the schema's largest job (10,000 servers and 10,000 workers) through the
operator: its creation and all-ready times and the largest status it wrote, in bytes. No
kubectl reference at that size (it would double the run); about 10 minutes on 2 cores, most
of it the scheduler's (bench/operator/findings.md, the schema's largest job).
`--memory` runs only the operator, one job per size (`--servers` servers, `--sizes` workers),
smallest first in one stage: the operator's RSS after each and its peak so far, to tell how its
memory grows with a job before trying a bigger one (with `--profile`, py-spy's profile too).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.operator.harness import ROOT, rss_bytes, stage
from bench.operator.scenarios import many_jobs, operator_run, reference_run

OUT = ROOT / "bench" / "out"
SERVERS = 4
LARGEST = 10_000
"""The schema's maximum of replicas per role."""


def _machine() -> dict[str, Any]:
    return {
        **describe(),
        "kopf": metadata.version("kopf"),
        "kubernetes_client": metadata.version("kubernetes"),
        "psjob_operator": metadata.version("psjob-operator"),
    }


def _brief(result: dict[str, Any]) -> str:
    """A run's figures for the console: without request breakdowns and latency samples."""

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k not in ("requests", "samples")}
        return round(value, 3) if isinstance(value, float) else value

    return json.dumps(drop(result))


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.operator", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeats": args.repeats,
        "machine": _machine(),
        "load_before": os.getloadavg(),
        "growth": {"reference": [], "operator": []},
    }
    profile = OUT / "operator-profile.txt" if args.profile else None
    with (
        tempfile.TemporaryDirectory(prefix="psjob-bench-") as root,
        stage(Path(root), profile) as s,
    ):
        result["machine"]["kube_apiserver"] = s.server_version()
        for repeat in range(args.repeats):
            for workers in args.sizes:
                # alternate who goes first, so that drift in machine load hits both sides
                order = (reference_run, operator_run)
                for measure in order if repeat % 2 == 0 else order[::-1]:
                    side = "reference" if measure is reference_run else "operator"
                    _log(f"{side}: {SERVERS} servers, {workers} workers (repeat {repeat + 1})")
                    outcome = measure(s, SERVERS, workers)
                    _log(_brief(outcome))
                    result["growth"][side].append(outcome)
        _log(f"reference: {args.jobs} rendered jobs x (2 servers + 8 workers)")
        result["many_jobs_reference"] = reference_run(s, 2, 8, jobs=args.jobs)
        _log(_brief(result["many_jobs_reference"]))
        _log(f"many jobs: {args.jobs} x (2 servers + 8 workers)")
        result["many_jobs"] = many_jobs(s, args.jobs, 2, 8)
        _log(_brief(result["many_jobs"]))
    result["load_after"] = os.getloadavg()
    return result


def run_largest(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.operator", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="psjob-bench-") as root, stage(Path(root)) as s:
        result["machine"]["kube_apiserver"] = s.server_version()
        _log(f"operator: {LARGEST} servers, {LARGEST} workers")
        # The last run of the stage: the cluster goes with its 20,000 pods, no clean-up to wait.
        result["largest"] = operator_run(s, LARGEST, LARGEST, clean=False)
        _log(_brief(result["largest"]))
    result["load_after"] = os.getloadavg()
    return result


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.operator", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_before": os.getloadavg(),
        "memory": [],
    }
    profile = OUT / "operator-memory-profile.txt" if args.profile else None
    with (
        tempfile.TemporaryDirectory(prefix="psjob-bench-") as root,
        stage(Path(root), profile) as s,
    ):
        result["machine"]["kube_apiserver"] = s.server_version()
        result["operator_rss_after_warm_up"] = rss_bytes(s.operator_pid)
        for workers in sorted(args.sizes):
            _log(f"operator: {args.servers} servers, {workers} workers")
            result["memory"].append(operator_run(s, args.servers, workers))
            _log(_brief(result["memory"][-1]))
    result["load_after"] = os.getloadavg()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat (a few minutes)")
    parser.add_argument("--repeats", type=int, help="repeats of the growth runs (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], metavar="W")
    parser.add_argument("--jobs", type=int, default=100, help="PSJobs in the many-jobs run")
    parser.add_argument("--profile", action="store_true", help="py-spy the operator")
    parser.add_argument(
        "--largest", action="store_true", help="only the schema's largest job (20,000 pods)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="only the operator, one job per size (--sizes)"
    )
    parser.add_argument("--servers", type=int, default=SERVERS, help="servers per job (--memory)")
    parser.add_argument("--out", type=Path, help="result file (default bench/out/operator.json)")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    runner = run_largest if args.largest else run_memory if args.memory else run
    result = runner(args)
    result["wall_seconds"] = time.monotonic() - started
    name = (
        "operator-largest"
        if args.largest
        else "operator-memory"
        if args.memory
        else "operator-profiled"
        if args.profile
        else "operator"
    )
    out = args.out or OUT / f"{name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    _log(f"wrote {out} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
