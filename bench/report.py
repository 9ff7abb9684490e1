"""Turn the benchmark JSON under bench/out/ into the plots and tables of bench/README.md.

    python -m bench.report

Reads bench/out/operator.json (from `python -m bench.operator`, with
bench/out/operator-profile.txt from `--profile` when present) and bench/out/runtime.json (from
`python -m bench.runtime`), whichever exist. Draws PNGs next to this file and rewrites, for each
result it has, only the text between that part's markers in bench/README.md, so that a section
whose benchmark did not run stays as it was. bench/operator/findings.md and
bench/runtime/findings.md (written by hand: what the profile means, why a target is missed)
are copied into their sections as they are.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.markdown import between_markers, row, verdict
from bench.operator.profile import summary as profile_summary
from bench.runtime.report import section as runtime_section

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
README = BENCH / "README.md"
FINDINGS = BENCH / "operator" / "findings.md"
BEGIN, END = "<!-- operator-bench:begin -->", "<!-- operator-bench:end -->"
MARKERS = {
    "operator": (BEGIN, END),
    "runtime": ("<!-- runtime-bench:begin -->", "<!-- runtime-bench:end -->"),
}
CREATION_PNG = "operator-creation.png"
LATENCY_PNG = "operator-status-latency.png"
RATIO_TARGET = 1.5
FLAT_TOLERANCE = 1.25
"""Time per pod at the largest size may exceed the next size's by this factor and be 'flat'."""
RSS_TARGET_MB = 200
LATENCY_P99_TARGET = 2.0

Run = dict[str, Any]


def _median_by_size(runs: list[Run], value: Any) -> dict[int, float]:
    """Median of `value(run)` (or of `run[value]`) per job size in pods."""
    by_size: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        by_size[run["pods"]].append(value(run) if callable(value) else run[value])
    return {pods: statistics.median(values) for pods, values in sorted(by_size.items())}


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


# --- plots ------------------------------------------------------------------------------------


def creation_plot(growth: dict[str, list[Run]]) -> None:
    series = [
        ("operator: pods and services created", "operator", "created_seconds", "C0", "o-"),
        ("kubectl create (reference)", "reference", "created_seconds", "C1", "o-"),
        ("operator: status shows all ready", "operator", "ready_seconds", "C0", "s--"),
        ("reference: all pods Running", "reference", "running_seconds", "C1", "s--"),
    ]
    figure, (total, per_pod) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, side, key, color, style in series:
        medians = _median_by_size(growth[side], key)
        sizes = list(medians)
        total.plot(sizes, list(medians.values()), style, color=color, label=label)
        per_pod.plot(sizes, [1000 * t / n for n, t in medians.items()], style, color=color)
    total.set(xscale="log", yscale="log", xlabel="pods in the job", ylabel="seconds from kubectl")
    total.set_title("One PSJob (4 servers + W workers)")
    per_pod.set(xscale="log", xlabel="pods in the job", ylabel="milliseconds per pod")
    per_pod.set_title("Time per pod (flat = linear growth)")
    per_pod.set_ylim(bottom=0)
    total.legend(fontsize=8)
    for axes in (total, per_pod):
        axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(BENCH / CREATION_PNG, dpi=90)
    plt.close(figure)


def latency_plot(many: Run) -> None:
    samples = {
        "pod Running -> status counts it ready": many["latency_running_to_status"],
        "worker Succeeded -> status counts it": many["latency_finished_to_status"],
    }
    if "latency_finished_seen_to_status" in many:
        samples["worker Succeeded on a watch -> status counts it"] = many[
            "latency_finished_seen_to_status"
        ]
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for label, stats in samples.items():
        ordered = stats.get("samples", [])
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.plot(ordered, fractions, label=f"{label} (p99 {stats.get('p99', 0):.2f} s)")
    axes.axvline(LATENCY_P99_TARGET, color="red", linestyle=":", label="p99 target (2 s)")
    axes.set(xlabel="seconds from pod change to PSJob status", ylabel="fraction of changes")
    axes.set_title(f"Status latency, {many['jobs']} PSJobs of {many['pods'] // many['jobs']} pods")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(BENCH / LATENCY_PNG, dpi=90)
    plt.close(figure)


# --- tables -----------------------------------------------------------------------------------


def growth_figures(growth: dict[str, list[Run]]) -> dict[str, dict[int, float]]:
    op, ref = growth["operator"], growth["reference"]
    return {
        "kubectl": _median_by_size(ref, "created_seconds"),
        "ref_running": _median_by_size(ref, "running_seconds"),
        "created": _median_by_size(op, "created_seconds"),
        "active": _median_by_size(op, "active_seconds"),
        "ready": _median_by_size(op, "ready_seconds"),
        "writes": _median_by_size(op, lambda r: r["requests"]["operator_writes"]),
        "requests": _median_by_size(op, lambda r: r["requests"]["total"]),
        "ref_requests": _median_by_size(ref, lambda r: r["requests"]["total"]),
        "rss": _median_by_size(op, "operator_rss_bytes"),
    }


def growth_table(f: dict[str, dict[int, float]]) -> list[str]:
    lines = [
        row(
            [
                "pods",
                "kubectl create",
                "operator: all created",
                "ratio",
                "status: all active",
                "ratio",
                "reference: all Running",
                "status: all ready",
                "ratio",
                "ms per pod, created (op / ref)",
                "ms per pod, ready (op / ref)",
            ]
        ),
        row(["---:"] * 11),
    ]
    for pods in f["created"]:
        kubectl, running = f["kubectl"][pods], f["ref_running"][pods]
        lines.append(
            row(
                [
                    pods,
                    f"{kubectl:.2f} s",
                    f"{f['created'][pods]:.2f} s",
                    f"**{f['created'][pods] / kubectl:.2f}**",
                    f"{f['active'][pods]:.2f} s",
                    f"**{f['active'][pods] / kubectl:.2f}**",
                    f"{running:.2f} s",
                    f"{f['ready'][pods]:.2f} s",
                    f"**{f['ready'][pods] / running:.2f}**",
                    f"{1000 * f['created'][pods] / pods:.1f} / {1000 * kubectl / pods:.1f}",
                    f"{1000 * f['ready'][pods] / pods:.1f} / {1000 * running / pods:.1f}",
                ]
            )
        )
    return lines


def requests_table(f: dict[str, dict[int, float]], many: Run) -> list[str]:
    many_requests = many["requests"]
    lines = [
        row(["job", "operator writes per job", "per pod", "all requests per job", "per pod"]),
        row(["---", "---:", "---:", "---:", "---:"]),
    ]
    for pods in f["writes"]:
        lines.append(
            row(
                [
                    f"one job of {pods} pods",
                    f"{f['writes'][pods]:.0f}",
                    f"{f['writes'][pods] / pods:.2f}",
                    f"{f['requests'][pods]:.0f}",
                    f"{f['requests'][pods] / pods:.2f}",
                ]
            )
        )
    size = many["pods"] // many["jobs"]
    lines.append(
        row(
            [
                f"{many['jobs']} jobs of {size} pods",
                f"{many_requests['operator_writes_per_job']:.1f}",
                f"{many_requests['operator_writes_per_job'] / size:.2f}",
                f"{many_requests['total_per_job']:.1f}",
                f"{many_requests['total_per_job'] / size:.2f}",
            ]
        )
    )
    return lines


CPU_COLUMNS = ("psjob-operator", "kube-apiserver", "etcd", "kube-scheduler", "node-agent")


def cpu_table(pairs: list[tuple[str, Run | None]]) -> list[str]:
    """CPU seconds each process used during a run: where the machine's 2 cores went."""
    lines = [row(["run", *CPU_COLUMNS]), row(["---", *["---:"] * len(CPU_COLUMNS)])]
    for label, run in pairs:
        used = (run or {}).get("cpu_seconds")
        if used:
            lines.append(row([label, *(f"{used.get(name, 0.0):.1f}" for name in CPU_COLUMNS)]))
    return lines if len(lines) > 2 else []


def _largest(runs: list[Run]) -> Run | None:
    """The last run of the largest size (the median is in the tables; this shows one run)."""
    return max(runs, key=lambda r: r["pods"], default=None)


def _flat(f: dict[str, dict[int, float]]) -> bool:
    sizes = sorted(f["created"])
    if len(sizes) < 2:
        return True
    big, before = sizes[-1], sizes[-2]
    return all(
        f[key][big] / big <= FLAT_TOLERANCE * f[key][before] / before
        for key in ("created", "ready")
    )


def _finish_split_rows(many: Run) -> list[str]:
    """The burst's latency in two: the API server taking the status patch and showing it on a
    watch (what any client waits for), then the operator's reaction to that event."""
    parts = [
        ("of which the API server: patch sent -> pod Succeeded on a watch", "patch_to_watch"),
        ("of which the operator: pod Succeeded on a watch -> counted", "seen_to_status"),
    ]
    rows = []
    for label, key in parts:
        stats = many.get(f"latency_finished_{key}")
        if stats:
            rows.append(row([label, f"{stats['p50']:.3f} / {stats['p99']:.3f} s", "-"]))
    return rows


def operator_section(result: Run) -> list[str]:
    growth, many = result["growth"], result["many_jobs"]
    reference = result.get("many_jobs_reference")
    machine = result["machine"]
    f = growth_figures(growth)
    creation_plot(growth)
    latency_plot(many)
    big = max(f["created"])
    start, finish = many["latency_running_to_status"], many["latency_finished_to_status"]
    p99 = max(start.get("p99", 0.0), finish.get("p99", 0.0))
    rss, peak = many["operator_rss_bytes"], many["operator_peak_rss_bytes"]
    ratios = {
        "created": f["created"][big] / f["kubectl"][big],
        "active": f["active"][big] / f["kubectl"][big],
        "ready": f["ready"][big] / f["ref_running"][big],
    }
    size = many["pods"] // many["jobs"]
    many_rows = [
        row(["", "operator", "reference (kubectl create, rendered)"]),
        row(["---", "---:", "---:"]),
        row(
            [
                f"all {many['pods']} pods Running",
                f"{many['pods_running_seconds']:.1f} s",
                f"{reference['running_seconds']:.1f} s" if reference else "-",
            ]
        ),
        row(["every PSJob's status Running", f"{many['jobs_running_seconds']:.1f} s", "-"]),
        row(["operator RSS at the end (peak)", f"{_mb(rss)} ({_mb(peak)})", "-"]),
        row(
            [
                "status latency, pod Running -> counted ready: p50 / p99 (changes)",
                f"{start['p50']:.3f} / {start['p99']:.3f} s ({start['count']})",
                "-",
            ]
        ),
        row(
            [
                "status latency, worker Succeeded -> counted: p50 / p99 (changes)",
                f"{finish['p50']:.3f} / {finish['p99']:.3f} s ({finish['count']})",
                "-",
            ]
        ),
        *_finish_split_rows(many),
    ]
    return [
        "## Operator (bench/operator/)",
        "",
        f"Run: `{result['command']}` (medians of {result.get('repeats', 1)} alternating "
        f"repeat(s)) on {result['date']}, {result['wall_seconds']:.0f} s. "
        f"Machine: {machine['cores']} cores "
        f"({machine['cpu']}), {machine['memory_gib']} GiB, Python {machine['python']}, "
        f"kube-apiserver {machine['kube_apiserver']} (local no-run cluster, docs/cluster.md), "
        f"kopf {machine['kopf']}, kubernetes client {machine['kubernetes_client']}. Load average "
        f"before / after: {result['load_before'][0]:.1f} / {result['load_after'][0]:.1f} (the "
        "machine is shared with other work).",
        "",
        "The node agent marks pods Running without starting a process (no-run mode), so the "
        "figures measure the control plane and the operator. Times run from the start of "
        "`kubectl` to the event seen on a watch. The reference is `kubectl create` of exactly "
        "what `psjob render` prints for the same jobs, through the same API server, alternating "
        "with the operator run; its *all Running* is when the scheduler and the node agent have "
        "run every pod: no controller can report them sooner.",
        "",
        "### Targets",
        "",
        row(["target", "measured", ""]),
        row(["---", "---", "---"]),
        row(
            [
                f"{big} pods created within {RATIO_TARGET}x `kubectl create`",
                f"{ratios['created']:.2f}x",
                verdict(ratios["created"] <= RATIO_TARGET),
            ]
        ),
        row(
            [
                f"status shows all {big} replicas active within {RATIO_TARGET}x `kubectl create`",
                f"{ratios['active']:.2f}x",
                verdict(ratios["active"] <= RATIO_TARGET),
            ]
        ),
        row(
            [
                f"status shows all {big} replicas ready within {RATIO_TARGET}x the reference's "
                "all Running",
                f"{ratios['ready']:.2f}x",
                verdict(ratios["ready"] <= RATIO_TARGET),
            ]
        ),
        row(
            [
                f"time per pod flat (largest size within {FLAT_TOLERANCE}x the next)",
                "see the table",
                verdict(_flat(f)),
            ]
        ),
        row(
            [
                f"operator RSS after {many['jobs']} jobs of {size} pods < {RSS_TARGET_MB} MB",
                f"{_mb(rss)} (peak {_mb(peak)})",
                verdict(rss < RSS_TARGET_MB * 10**6),
            ]
        ),
        row(
            [
                f"status latency p99 < {LATENCY_P99_TARGET:.0f} s under that load",
                f"{p99:.2f} s",
                verdict(p99 < LATENCY_P99_TARGET),
            ]
        ),
        "",
        "### One job, growing (4 servers + 10, 100, 1,000 workers)",
        "",
        *growth_table(f),
        "",
        f"![creation time vs job size]({CREATION_PNG})",
        "",
        f"### {many['jobs']} jobs of {size} pods at once",
        "",
        "Submitted in one `kubectl apply`. Status latency is measured twice: from each pod's "
        "Running event (during the burst) to the first status that counts that many ready pods, "
        "and from a kubelet-like status patch that marks worker 0 of every job Succeeded (all at "
        "once, afterwards) to the first status that counts it.",
        "",
        *many_rows,
        "",
        f"![status latency]({LATENCY_PNG})",
        "",
        "### API requests (the API server's `apiserver_request_total`, before and after)",
        "",
        "Operator writes: pod and service creates, status patches, core/v1 Events. All "
        "requests add the scheduler's bindings and events, the node agent's pod status patches "
        "and kubectl's own.",
        "",
        *requests_table(f, many),
        "",
        "### CPU seconds per process during one run",
        "",
        *cpu_table(
            [
                (f"one job of {big} pods: operator", _largest(growth["operator"])),
                (f"one job of {big} pods: kubectl reference", _largest(growth["reference"])),
                (f"{many['jobs']} jobs: operator", many),
                (f"{many['jobs']} jobs: kubectl reference", reference),
            ]
        ),
        "",
    ]


def _rewrite(text: str, section: list[str], part: str = "operator") -> str:
    """`text` with `section` between `part`'s markers (appended, markers and all, if absent)."""
    return between_markers(text, section, *MARKERS[part])


def operator_part() -> list[str]:
    section = operator_section(json.loads((OUT / "operator.json").read_text()))
    profile = OUT / "operator-profile.txt"
    if profile.exists():
        section += ["### Operator profile (py-spy)", "", *profile_summary(profile), ""]
    if FINDINGS.exists():
        section += [FINDINGS.read_text().rstrip("\n"), ""]
    return section


def main() -> int:
    parts: dict[str, Callable[[], list[str]]] = {
        "operator": operator_part,
        "runtime": lambda: runtime_section(json.loads((OUT / "runtime.json").read_text())),
    }
    found = [part for part in parts if (OUT / f"{part}.json").exists()]
    if not found:
        print(
            f"neither {OUT}/operator.json nor {OUT}/runtime.json exists: run "
            "`make bench-operator` or `make bench-runtime` first",
            file=sys.stderr,
        )
        return 1
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    for part in found:
        text = _rewrite(text, parts[part](), part)
    README.write_text(text)
    print(f"rewrote the {' and '.join(found)} section(s) of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
