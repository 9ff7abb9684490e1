"""The runtime section of bench/README.md, and its plots, from bench/out/runtime.json.

bench/report.py calls `section` and puts the lines between the runtime markers. Targets (from
the runtime issues): push+pull >= 0.8x raw gloo; sync >= 0.9x and async >= 1.0x DDP (1 server +
2 workers against 2 ranks); table bytes on the wire equal to theory; a checkpoint as fast as a
raw write of the same bytes. bench/runtime/findings.md (hand-written: why a target is missed,
what a profile shows) is copied in at the end.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

from bench.markdown import row, verdict
from bench.runtime import dynamic_report

BENCH = Path(__file__).resolve().parents[1]
FINDINGS = Path(__file__).resolve().parent / "findings.md"
SCALING_PNG = "runtime-scaling.png"
SPARSE_PNG = "runtime-sparse-bytes.png"
ACCURACY_PNG = "runtime-time-to-accuracy.png"
QUICK_NOTE = " (quick: fewer steps, repeats and sizes)"
PUSH_PULL_TARGET = 0.9
THROUGHPUT_TARGETS = (
    ("sync", "ddp", 32, 0.95, "psjob sync, 1 server + 2 workers", "DDP (2 ranks)"),
    ("sync", "ddp", 64, 1.0, "psjob sync, 1 server + 2 workers", "DDP (2 ranks)"),
    ("async", "single", 32, 0.95, "psjob async, 1 server + 1 worker", "one process"),
    ("async", "single", 64, 0.95, "psjob async, 1 server + 1 worker", "one process"),
)
"""(contender, reference, batch, least ratio, what, against what) of bench/runtime/targets.py."""
FIRST_STEP_TARGET = 1.2
"""psjob's first step at most this many times later than one process's (time_to_accuracy)."""
TARGET_LABELS = {
    "single": "one process, torch.optim.SGD",
    "ddp": "DDP (gloo), 2 ranks",
    "sync": "psjob sync, 1 server + 2 workers",
    "sync_overlap": "psjob sync, 1 server + 2 workers, `overlap_backward=True`",
    "async": "psjob async, 1 server + 1 worker",
}
THEORY_TOLERANCE = 0.001
CHECKPOINT_TARGET = 0.9
"""'About raw write speed': the checkpoint's speed is at least this fraction of the raw write's."""

Record = dict[str, Any]
Key = tuple[str, str, int]
"""A scaling line: (contender, mode or '', servers or threads)."""
Lines = dict[Key, dict[int, float]]
"""A figure per scaling line and worker count."""


def _key(record: Record) -> Key:
    if record["contender"] == "psjob":
        return ("psjob", record["mode"], record["servers"])
    return (record["contender"], "", record.get("threads", 0))


def _label(key: Key) -> str:
    contender, mode, count = key
    if contender == "psjob":
        return f"psjob {mode}, {count} server{'s' if count > 1 else ''}"
    if contender == "ddp":
        return "DDP (gloo), one rank per worker"
    return f"single process, {count} thread{'s' if count > 1 else ''}"


def _int(n: float) -> str:
    return f"{n:,.0f}"


def _kb(n: float) -> str:
    return f"{n / 1e3:,.1f} kB"


# --- scaling ----------------------------------------------------------------------------------


def scaling_figures(scaling: Record) -> tuple[Lines, Lines]:
    """Median samples/s per line and worker count, and the median of the per-repeat ratios to
    DDP with as many ranks as workers (ratios only taken within one repeat)."""
    rates: dict[Key, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    ratios: dict[Key, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    ddp = {
        (r["repeat"], r["workers"]): r["samples_per_second"]
        for r in scaling["records"]
        if r["contender"] == "ddp"
    }
    for record in scaling["records"]:
        key, workers, rate = _key(record), record["workers"], record["samples_per_second"]
        rates[key][workers].append(rate)
        reference = ddp.get((record["repeat"], workers))
        if reference:
            ratios[key][workers].append(rate / reference)
    medians = {k: {w: statistics.median(v) for w, v in sorted(d.items())} for k, d in rates.items()}
    ratio = {k: {w: statistics.median(v) for w, v in sorted(d.items())} for k, d in ratios.items()}
    return medians, ratio


def scaling_plot(medians: Lines, cores: int) -> None:
    modes = sorted({k[1] for k in medians if k[0] == "psjob"}, key=["sync", "async", "ssp"].index)
    workers = sorted({w for line in medians.values() for w in line})
    one_thread = medians.get(("single", "", 1), {}).get(1)
    figure, grid = plt.subplots(
        1, len(modes), figsize=(4.2 * len(modes), 4), sharey=True, squeeze=False
    )
    panels = grid[0]
    for axes, mode in zip(panels, modes, strict=True):
        for key, line in sorted(medians.items()):
            if key[0] == "psjob" and key[1] == mode:
                style = "o-" if key[2] == 1 else "s-"
                axes.plot(list(line), list(line.values()), style, label=_label(key))
        ddp = medians.get(("ddp", "", 0), {})
        axes.plot(list(ddp), list(ddp.values()), "k^--", label=_label(("ddp", "", 0)))
        if one_thread:
            axes.axhline(one_thread, color="grey", linestyle=":", label="single process, 1 thread")
            axes.axhline(
                cores * one_thread,
                color="red",
                linestyle=":",
                label=f"{cores} cores x single process (the machine's ceiling)",
            )
        axes.set(xlabel="workers (DDP: ranks)", xticks=workers, title=f"psjob {mode}")
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    panels[0].set_ylabel("samples/s, all workers")
    figure.suptitle("mnist_cnn samples/s vs workers, one torch thread per process", fontsize=10)
    figure.tight_layout()
    figure.savefig(BENCH / SCALING_PNG, dpi=90)
    plt.close(figure)


def scaling_table(medians: Lines, ratios: Lines) -> list[str]:
    workers = sorted({w for line in medians.values() for w in line})
    lines = [
        row(["", *(f"{w} worker{'s' if w > 1 else ''}: samples/s (x DDP)" for w in workers)]),
        row(["---", *["---:"] * len(workers)]),
    ]
    order = {"psjob": 0, "ddp": 1, "single": 2}
    modes = ["sync", "async", "ssp", ""]
    for key in sorted(medians, key=lambda k: (order[k[0]], modes.index(k[1]), k[2])):
        cells = []
        for w in workers:
            rate, ratio = medians[key].get(w), ratios.get(key, {}).get(w)
            cells.append("-" if rate is None else _int(rate) + (f" ({ratio:.2f})" if ratio else ""))
        lines.append(row([_label(key), *cells]))
    return lines


# --- time to accuracy -------------------------------------------------------------------------


def accuracy_plot(tta: Record) -> None:
    """Accuracy against seconds from start, seconds of training (from the first step), steps."""
    figure, panels = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    colors = {"sync": "C0", "async": "C1", "ssp": "C2", "reference": "k"}
    for record in tta["records"]:
        contender, curve = record["contender"], record["curve"]
        if not curve:
            continue
        seconds, steps, accuracy = zip(*curve, strict=True)
        training = [t - record["first_step_seconds"] for t in seconds]
        style = {
            "color": colors.get(contender, "C3"),
            "alpha": 1.0 if record["repeat"] == 0 else 0.4,
            "label": _tta_label(contender) if record["repeat"] == 0 else None,
        }
        for axes, x in zip(panels, (seconds, training, steps), strict=True):
            axes.plot(x, accuracy, **style)
    titles = (
        "seconds since the processes were started",
        "seconds since the first step (training only)",
        "steps (of worker 0; the reference's own)",
    )
    for axes, title in zip(panels, titles, strict=True):
        axes.axhline(tta["target"], color="red", linestyle=":", label=f"{tta['target']:.0%}")
        axes.set(xlabel=title, ylim=(0.5, 1.0))
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("test accuracy (worker 0's parameters)")
    panels[0].legend(fontsize=8)
    figure.suptitle(
        f"digits: {tta['servers']} servers + {tta['workers']} workers vs one process "
        f"(total batch {tta['workers'] * tta['batch_per_worker']})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(BENCH / ACCURACY_PNG, dpi=90)
    plt.close(figure)


def _tta_label(contender: str) -> str:
    return "one process, torch.optim.SGD" if contender == "reference" else f"psjob {contender}"


def _median_or_none(values: list[float | None]) -> float | None:
    """The median, or None when a repeat never reached the target (it would flatter the rest)."""
    known = [v for v in values if v is not None]
    return None if len(known) < len(values) else statistics.median(known)


def accuracy_table(tta: Record) -> list[str]:
    by_contender: dict[str, list[Record]] = defaultdict(list)
    for record in tta["records"]:
        by_contender[record["contender"]].append(record)
    target = f"{tta['target']:.0%}"
    lines = [
        row(
            [
                "",
                f"seconds to {target} from start",
                "first step at",
                f"training seconds to {target}",
                f"steps to {target}",
                "final accuracy",
                "steps",
                "seconds in all",
            ]
        ),
        row(["---", *["---:"] * 7]),
    ]
    for contender, records in by_contender.items():
        reached = _median_or_none([r["seconds_to_target"] for r in records])
        training = _median_or_none(
            [
                None
                if r["seconds_to_target"] is None
                else r["seconds_to_target"] - r["first_step_seconds"]
                for r in records
            ]
        )
        steps = _median_or_none([r["steps_to_target"] for r in records])
        lines.append(
            row(
                [
                    _tta_label(contender),
                    "not reached" if reached is None else f"**{reached:.1f}**",
                    f"{statistics.median(r['first_step_seconds'] for r in records):.1f}",
                    "-" if training is None else f"{training:.2f}",
                    "-" if steps is None else f"{steps:.0f}",
                    f"{statistics.median(r['final_accuracy'] for r in records):.1%}",
                    f"{statistics.median(r['steps'] for r in records):.0f}",
                    f"{statistics.median(r['seconds'] for r in records):.1f}",
                ]
            )
        )
    return lines


# --- sparse traffic ---------------------------------------------------------------------------


def sparse_plot(sparse: Record) -> None:
    records = sparse["records"]
    batches = [r["batch"] for r in records]
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    series = [
        ("to servers (ids + row gradients), measured", "to_servers", "o-", "C0"),
        ("from servers (rows), measured", "from_servers", "s-", "C1"),
    ]
    for label, key, style, color in series:
        axes.plot(batches, [r[key] for r in records], style, color=color, label=label)
        axes.plot(
            batches,
            [r[f"theory_{key}"] for r in records],
            "x",
            color="k",
            markersize=9,
            label="theory: unique rows x bytes per row" if key == "to_servers" else None,
        )
    every_id = [r["ids"] * (sparse["dim"] * 4) for r in records]
    axes.plot(batches, every_id, ":", color="grey", label="rows back if every id were its own row")
    dense = sparse["dense_bytes_each_way"]
    axes.axhline(dense, color="red", linestyle="--", label="dense: the whole table, each way")
    axes.set(xscale="log", yscale="log", xlabel="samples per worker-step", ylabel="bytes per step")
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticks(batches, [f"{b:,}" for b in batches])
    axes.set_title(
        f"ctr table {sparse['table_rows']:,} x {sparse['dim']}: bytes per worker-step", fontsize=10
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(BENCH / SPARSE_PNG, dpi=90)
    plt.close(figure)


def sparse_table(sparse: Record) -> list[str]:
    dense = sparse["dense_bytes_each_way"]
    lines = [
        row(
            [
                "samples per worker-step",
                "ids",
                "unique rows",
                "to servers: measured / theory",
                "ratio",
                "from servers: measured / theory",
                "ratio",
                "dense / measured (to, from)",
            ]
        ),
        row(["---:"] * 8),
    ]
    for r in sparse["records"]:
        lines.append(
            row(
                [
                    r["batch"],
                    _int(r["ids"]),
                    _int(r["unique_rows"]),
                    f"{_kb(r['to_servers'])} / {_kb(r['theory_to_servers'])}",
                    f"**{r['to_servers'] / r['theory_to_servers']:.3f}**",
                    f"{_kb(r['from_servers'])} / {_kb(r['theory_from_servers'])}",
                    f"**{r['from_servers'] / r['theory_from_servers']:.3f}**",
                    f"{dense / r['to_servers']:,.0f}x, {dense / r['from_servers']:,.0f}x",
                ]
            )
        )
    return lines


def _theory_error(sparse: Record) -> float:
    return float(
        max(
            abs(r[key] / r[f"theory_{key}"] - 1)
            for r in sparse["records"]
            for key in ("to_servers", "from_servers")
        )
    )


# --- the section ------------------------------------------------------------------------------


def _judged(met: bool) -> str:
    return verdict(met) + ("" if met else ": why, in the findings below")


def target_ratios(targets: Record) -> dict[tuple[str, str, int], float]:
    """Median over repeats of (contender / reference) samples/s, both from the same repeat."""
    rates = {
        (r["contender"], r["batch"], r["repeat"]): r["samples_per_second"]
        for r in targets["records"]
    }
    found: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for (contender, batch, repeat), rate in rates.items():
        for reference in ("ddp", "single"):
            if (base := rates.get((reference, batch, repeat))) and contender != reference:
                found[(contender, reference, batch)].append(rate / base)
    return {key: statistics.median(values) for key, values in found.items()}


def first_step_ratio(tta: Record) -> float | None:
    """Median over modes and repeats of psjob's first step / the same repeat's one process."""
    records = tta["records"]
    one = [r for r in records if r["contender"] == "reference"]
    reference = {r["repeat"]: r["first_step_seconds"] for r in one}
    ratios = [
        r["first_step_seconds"] / reference[r["repeat"]]
        for r in tta["records"]
        if r["contender"] != "reference" and r["repeat"] in reference
    ]
    return statistics.median(ratios) if ratios else None


def targets_section(targets: Record) -> list[str]:
    """samples/s, the ratios and the time in step() per contender and batch."""
    ratios = target_ratios(targets)
    by_key: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for record in targets["records"]:
        by_key[(record["contender"], record["batch"])].append(record)
    lines = [
        row(["batch", "contender", "samples/s", "x DDP", "x one process", "ms per step in step()"]),
        row(["---:", "---", "---:", "---:", "---:", "---:"]),
    ]
    for (contender, batch), records in sorted(by_key.items(), key=lambda kv: kv[0][1]):
        rate = statistics.median(r["samples_per_second"] for r in records)
        in_step = statistics.median(r["step_seconds"] for r in records)
        to_ddp, to_single = (
            ratios.get((contender, "ddp", batch)),
            ratios.get((contender, "single", batch)),
        )
        lines.append(
            row(
                [
                    str(batch),
                    TARGET_LABELS[contender],
                    _int(rate),
                    "-" if to_ddp is None else f"{to_ddp:.2f}",
                    "-" if to_single is None else f"{to_single:.2f}",
                    f"{1000 * in_step:.1f}",
                ]
            )
        )
    return lines


def targets_table(result: Record) -> list[str]:
    """Ratios with three decimals: a missed 0.797 must not read as 0.80 against 0.8."""
    lines = [row(["target", "measured", ""]), row(["---", "---", "---"])]
    for size in result.get("push_pull", []):
        lines.append(
            row(
                [
                    f"push+pull of {size['megabytes']} MB >= {PUSH_PULL_TARGET}x raw gloo speed",
                    f"{size['ratio']:.3f}x",
                    _judged(size["ratio"] >= PUSH_PULL_TARGET),
                ]
            )
        )
    measured = target_ratios(result["targets"]) if "targets" in result else {}
    for contender, reference, batch, target, what, against in THROUGHPUT_TARGETS:
        ratio = measured.get((contender, reference, batch))
        if ratio is not None:
            lines.append(
                row(
                    [
                        f"{what} >= {target}x {against} samples/s, batch {batch}",
                        f"{ratio:.3f}x",
                        _judged(ratio >= target),
                    ]
                )
            )
    first = first_step_ratio(result["time_to_accuracy"]) if "time_to_accuracy" in result else None
    if first is not None:
        lines.append(
            row(
                [
                    f"first step of a 2 + 2 job <= {FIRST_STEP_TARGET}x one process's, from start",
                    f"{first:.3f}x",
                    _judged(first <= FIRST_STEP_TARGET),
                ]
            )
        )
    if "sparse_traffic" in result:
        error = _theory_error(result["sparse_traffic"])
        lines.append(
            row(
                [
                    "table bytes on the wire = theory (every batch size, both directions)",
                    f"largest deviation {error:.2%}",
                    _judged(error <= THEORY_TOLERANCE),
                ]
            )
        )
    if "checkpoint_write" in result:
        ratio = result["checkpoint_write"]["ratio"]
        lines.append(
            row(
                [
                    f"checkpoint write >= {CHECKPOINT_TARGET}x raw write + fsync speed",
                    f"{ratio:.3f}x",
                    _judged(ratio >= CHECKPOINT_TARGET),
                ]
            )
        )
    return lines


def _load(run: Record) -> str:
    return f"{run['load_before']:.1f} -> {run['load_after']:.1f}"


def runs_table(runs: dict[str, Record]) -> list[str]:
    """How long each benchmark ran and the load average (1 minute) around it."""
    if not runs:
        return []
    return [
        row(["benchmark", "seconds", "load average before -> after"]),
        row(["---", "---:", "---:"]),
        *(row([f"`{name}`", f"{r['seconds']:.0f}", _load(r)]) for name, r in runs.items()),
        "",
    ]


def push_pull_table(sizes: list[Record]) -> list[str]:
    lines = [
        row(["size", "rounds per block", "pairs", "raw gloo ms", "psjob ms", "raw / psjob"]),
        row(["---:", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for s in sizes:
        lines.append(
            row(
                [
                    f"{s['megabytes']} MB",
                    s["rounds"],
                    len(s["pairs"]),
                    f"{s['raw_seconds'] * 1e3:.2f}",
                    f"{s['psjob_seconds'] * 1e3:.2f}",
                    f"**{s['ratio']:.2f}**",
                ]
            )
        )
    return lines


def checkpoint_table(ckpt: Record) -> list[str]:
    size = ckpt["bytes"]
    return [
        row(["", "seconds", "MB/s"]),
        row(["---", "---:", "---:"]),
        *(
            row([name, f"{ckpt[key]:.2f}", _int(size / 1e6 / ckpt[key])])
            for name, key in (
                ("raw write + fsync", "raw_seconds"),
                ("psjob checkpoint", "psjob_seconds"),
                ("restore (memory-mapped load + cut to the share)", "restore_seconds"),
            )
        ),
    ]


def ctr_table(ctr: Record) -> list[str]:
    return [
        row(["servers", "samples/s (both workers)", "pairs"]),
        row(["---:", "---:", "---:"]),
        row([1, _int(ctr["one_server"]), len(ctr["pairs"])]),
        row([2, _int(ctr["two_servers"]), len(ctr["pairs"])]),
    ]


def section(result: Record) -> list[str]:
    """Every table and plot of the runtime section, for whatever benchmarks the run holds."""
    machine = result["machine"]
    cores = machine["cores"]
    medians, ratios = scaling_figures(result["scaling"]) if "scaling" in result else ({}, {})
    lines = [
        "## Runtime (bench/runtime/)",
        "",
        f"Run: `{result['command']}`{QUICK_NOTE if result['quick'] else ''} on "
        f"{result['date']}, {result['wall_seconds']:.0f} s. Machine: {cores} cores "
        f"({machine['cpu']}), {machine['memory_gib']} GiB, no GPU, Python {machine['python']}, "
        f"torch {machine['torch']}; one torch thread per training process. Load average before "
        f"/ after: {result['load_before'][0]:.1f} / {result['load_after'][0]:.1f} (the machine "
        "is shared with other work; the benchmarks run one at a time).",
        "",
        *runs_table(result.get("runs", {})),
        "### Targets",
        "",
        *targets_table(result),
        "",
    ]
    if "targets" in result:
        targets = result["targets"]
        lines += [
            "### Throughput targets at batch 32 and 64 (`targets`)",
            "",
            "The mnist_cnn model, each contender a fresh set of processes, one torch thread "
            f"each, {targets['steps']} timed steps after {targets['warmup_steps']}; samples/s "
            "summed over workers; ratios taken within a repeat, medians over "
            f"{targets['repeats']} repeat(s). *ms per step in step()*: the mean time a worker "
            "spends inside `optimizer.step()`, i.e. the exchange that backward did not hide.",
            "",
            *targets_section(targets),
            "",
        ]
    if "push_pull" in result:
        lines += [
            "### push+pull vs raw gloo send/recv of the same bytes (`push_pull`)",
            "",
            "One server and one worker, the same two processes alternating blocks of raw round "
            "trips (worker sends N bytes, server sends N bytes back) and `optimizer.step()` "
            "against a real `ParameterServer` (header, gradient, SGD update, parameters back). "
            "Times per round trip are medians; the ratio is the median of the pairs' ratios "
            "(1.0: the protocol and the update cost nothing).",
            "",
            *push_pull_table(result["push_pull"]),
            "",
        ]
    if medians:
        scaling = result["scaling"]
        scaling_plot(medians, cores)
        lines += [
            "### Scaling: mnist_cnn samples/s by workers, servers and mode (`scaling`)",
            "",
            f"The 1.2M-parameter CNN, batch {scaling['batch_per_worker']} per worker, "
            f"{scaling['steps']} timed steps after {scaling['warmup_steps']}; psjob through "
            "the launcher (`python -m psjob_runtime.launch`), ssp with staleness "
            f"{scaling['ssp_staleness']}; DDP over gloo with one rank per worker, the same "
            "loop and batch; medians over "
            f"{scaling['repeats']} repeat(s), ratios to the same repeat's DDP run with as many "
            "ranks as workers. Samples/s summed over all workers.",
            "",
            f"**This machine has {cores} cores**: whatever the protocol, the sum cannot pass "
            f"about {cores} single-threaded processes' worth (the red line in the plot); with "
            f"more workers than cores, the workers and servers only share the same cores. Read "
            "the psjob lines against DDP at the same worker count: the gap is the protocol's "
            "cost, the flattening is the machine's.",
            "",
            *scaling_table(medians, ratios),
            "",
            f"![samples/s vs workers per mode]({SCALING_PNG})",
            "",
        ]
    if "time_to_accuracy" in result:
        tta = result["time_to_accuracy"]
        accuracy_plot(tta)
        lines += [
            f"### Time to {tta['target']:.0%} test accuracy on digits (`time_to_accuracy`)",
            "",
            f"scikit-learn's 8x8 digits (1,437 training, 359 test), the digits example's model, "
            f"{tta['servers']} servers + {tta['workers']} workers, batch "
            f"{tta['batch_per_worker']} per worker, SGD lr {tta['lr']} momentum "
            f"{tta['momentum']} on the servers, {tta['epochs']} epochs; worker 0 measures the "
            "test accuracy of the parameters it holds every 2 steps. Reference: one process, "
            f"torch.optim.SGD, the same model and settings, total batch "
            f"{tta['workers'] * tta['batch_per_worker']}. Times from starting the processes "
            f"(interpreter, torch, rendezvous included); medians over {tta['repeats']} "
            "repeat(s).",
            "",
            *accuracy_table(tta),
            "",
            f"![accuracy vs seconds and steps per mode]({ACCURACY_PNG})",
            "",
        ]
    if "sparse_traffic" in result:
        sparse = result["sparse_traffic"]
        sparse_plot(sparse)
        lines += [
            "### Embedding table bytes on the wire per step (`sparse_traffic`)",
            "",
            f"The ctr model (26 categorical fields in one {sparse['table_rows']:,} x "
            f"{sparse['dim']} table), {sparse['servers']} servers + {sparse['workers']} workers, "
            "sync, Adagrad; every payload byte handed to gloo, counted at the transport, minus "
            "the dense slice exchange; means over worker-steps. Theory: `U x (8 + 4d + 8)` "
            "bytes to the servers (ids with the pull, ids and row gradients with the push) and "
            f"`U x 4d` back for `U` unique rows; a dense exchange moves "
            f"{sparse['dense_bytes_each_way'] / 1e6:,.0f} MB each way whatever the batch.",
            "",
            *sparse_table(sparse),
            "",
            f"![bytes per step, sparse vs dense]({SPARSE_PNG})",
            "",
        ]
    if "checkpoint_write" in result:
        ckpt = result["checkpoint_write"]
        lines += [
            "### Checkpoint write speed (`checkpoint_write`)",
            "",
            f"One server's share of the 10M x 16 ctr table with its Adagrad state "
            f"({ckpt['bytes'] / 1e6:,.0f} MB) as a psjob checkpoint (torch.save, fsync, rename, "
            "directory fsync) against raw bytes of the same tensors (write + fsync), "
            f"alternating, medians of {len(ckpt['pairs'])} pairs; checkpoint speed / raw "
            f"speed: **{ckpt['ratio']:.2f}**.",
            "",
            *checkpoint_table(ckpt),
            "",
        ]
    if "ctr_throughput" in result:
        ctr = result["ctr_throughput"]
        lines += [
            "### ctr samples/s with 1 and 2 servers (`ctr_throughput`)",
            "",
            f"The ctr example, {ctr['workers']} workers x {ctr['batch_per_worker']:,} samples "
            f"per step, {ctr['table_rows']:,} x 16 table, sync, Adagrad, {ctr['steps']} steps "
            "(5 warm-up), runs alternating 1 and 2 servers; 2 servers / 1 server (median "
            f"pair): **{ctr['ratio']:.2f}**.",
            "",
            *ctr_table(ctr),
            "",
        ]
    if "dynamic_tables" in result:
        lines += dynamic_report.section(result["dynamic_tables"])
    if FINDINGS.exists():
        lines += [FINDINGS.read_text().rstrip("\n"), ""]
    return lines
