"""The dynamic tables' part of the runtime section of bench/README.md (bench/runtime/report.py).

Targets (issue 19): the ctr example on a dynamic table of 64-bit hashed ids at >= 0.8x the fixed
10M-row table's samples/s; table bytes on the wire equal to theory; server memory per stored row
<= 1.5x the row and its optimizer state; with a capacity below the distinct ids, RSS flat over a
run of >= 10x the capacity in distinct ids per server.
"""

from __future__ import annotations

from typing import Any

from bench.markdown import row, verdict

THROUGHPUT_TARGET = 0.8
MEMORY_TARGET = 1.5
FLAT_TOLERANCE = 0.05
"""RSS is flat when the servers' RSS from the run's second quarter to its end moves by at most
this fraction (the first quarter holds the start-up: imports, gloo, the first steps)."""
THEORY_TOLERANCE = 0.001

Record = dict[str, Any]


def _flat(quarters: list[list[float]]) -> float:
    """The largest relative RSS change of any server from the 2nd quarter to the end."""
    return max(abs(q[-1] - q[1]) / q[1] for q in quarters if len(q) == 4)


def targets(dynamic: Record) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows."""
    wire, memory, ratio = dynamic["wire"], dynamic["memory"], dynamic["throughput"]["ratio"]
    deviation = max(
        abs(wire["to_servers"] / wire["theory_to_servers"] - 1),
        abs(wire["from_servers"] / wire["theory_from_servers"] - 1),
    )
    bounded = dynamic["capacity"]["bounded"]
    flat = _flat(bounded["rss_mb_by_quarter"])
    over = dynamic["capacity"]["distinct_over_capacity"]
    return [
        (
            f"ctr on a dynamic table >= {THROUGHPUT_TARGET}x the fixed 10M-row table's samples/s",
            f"{ratio:.2f}x",
            ratio >= THROUGHPUT_TARGET,
        ),
        (
            "dynamic table bytes on the wire = theory (both directions)",
            f"largest deviation {deviation:.2%}",
            deviation <= THEORY_TOLERANCE,
        ),
        (
            f"server memory per stored row <= {MEMORY_TARGET}x row + optimizer state",
            f"{memory['ratio']:.2f}x (RSS growth)",
            memory["ratio"] <= MEMORY_TARGET,
        ),
        (
            "RSS flat with a capacity, over >= 10x the capacity in distinct ids per server",
            f"{flat:.1%} from the 2nd quarter to the end, {over:.1f}x",
            flat <= FLAT_TOLERANCE and over >= 10,
        ),
    ]


def section(dynamic: Record) -> list[str]:
    throughput, memory, wire = dynamic["throughput"], dynamic["memory"], dynamic["wire"]
    capacity = dynamic["capacity"]
    lines = [
        "### Dynamic tables against the fixed 10M-row table (`dynamic_tables`)",
        "",
        f"The ctr example, {dynamic['servers']} servers, {dynamic['workers']} workers x "
        f"{dynamic['batch_per_worker']:,} samples, sync, Adagrad, dim {dynamic['dim']}: the "
        f"fixed {dynamic['table_rows']:,}-row table against a dynamic table looked up by the "
        "64-bit hashes of the same ids (same batches, same unique rows per step), runs "
        f"alternating, {throughput['steps']} steps (5 warm-up).",
        "",
        row(["target", "measured", ""]),
        row(["---", "---", "---"]),
        *[row([what, measured, verdict(met)]) for what, measured, met in targets(dynamic)],
        "",
        row(["table", "samples/s (both workers)", "pairs"]),
        row(["---", "---:", "---:"]),
        row(["fixed, 10M rows", f"{throughput['fixed']:,.0f}", len(throughput["pairs"])]),
        row(["dynamic, hashed ids", f"{throughput['dynamic']:,.0f}", len(throughput["pairs"])]),
        "",
        f"Wire, per worker-step ({wire['worker_steps']} worker-steps, "
        f"{wire['unique_rows']:,.0f} unique rows): {wire['to_servers']:,.0f} bytes to the "
        f"servers (theory {wire['theory_to_servers']:,.0f}), {wire['from_servers']:,.0f} back "
        f"(theory {wire['theory_from_servers']:,.0f}).",
        "",
        f"Memory: one server's shard fed {memory['steps']} steps of the ctr stream in one "
        f"process holds {memory['rows']:,} rows; its RSS grew {memory['rss_per_row']:.0f} bytes "
        f"per row (the shard counts {memory['own_bytes_per_row']:.0f}: rows, Adagrad state, id, "
        "counters, free list, index), against "
        f"{memory['row_and_state_bytes']} bytes of row and state: **{memory['ratio']:.2f}x**; "
        f"{memory['apply_ms_per_push']:.1f} ms per push.",
        "",
        f"Capacity: {capacity['steps']} steps, maxRowsPerServer {capacity['max_rows_per_server']:,}"
        f" against {min(capacity['distinct_ids_per_server']):,}+ distinct ids per server "
        f"({capacity['distinct_over_capacity']:.1f}x).",
        "",
        row(
            [
                "run",
                "rows per server at the end",
                "servers' RSS (MB) at 25/50/75/100 %",
                "test AUC",
                "hidden model's AUC",
            ]
        ),
        row(["---", "---:", "---", "---:", "---:"]),
    ]
    for name in ("unbounded", "bounded"):
        run = capacity[name]
        rows = ", ".join(f"{s['rows']:,}" for s in run["servers_at_end"])
        rss = "; ".join(" / ".join(f"{mb:.0f}" for mb in q) for q in run["rss_mb_by_quarter"])
        lines.append(row([name, rows, rss, f"{run['test_auc']:.4f}", f"{run['hidden_auc']:.4f}"]))
    return [*lines, ""]
