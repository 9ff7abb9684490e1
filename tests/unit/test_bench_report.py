"""The pure parts of the benchmark tooling: request counters, the profile summary, and the
report's rewrite of its own section of bench/README.md (the runtime section must survive)."""

from __future__ import annotations

from pathlib import Path

from bench.operator.apimetrics import delta, parse_request_counts, summary
from bench.operator.profile import summary as profile_summary
from bench.report import BEGIN, END, _rewrite

METRICS = """\
# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 12
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="psjob.dev",resource="psjobs",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 4
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 15
apiserver_request_duration_seconds_count{verb="POST"} 99
"""  # noqa: E501


def test_request_counts_sum_over_codes_and_split_operator_writes() -> None:
    counts = parse_request_counts(METRICS)
    assert counts[("POST", "", "pods", "")] == 15
    assert counts[("POST", "", "pods", "binding")] == 15
    figures = summary(delta(parse_request_counts(""), counts), jobs=2)
    assert figures["total"] == 34
    assert figures["operator_writes"] == 19  # pod creates and status patches, not bindings
    assert figures["operator_writes_per_job"] == 9.5


def test_delta_keeps_only_what_grew() -> None:
    before = parse_request_counts(METRICS)
    after = parse_request_counts(METRICS.replace("} 4\n", "} 6\n"))
    assert dict(delta(before, after)) == {("PATCH", "psjob.dev", "psjobs", "status"): 2}


def test_profile_summary_leaves_out_waiting_threads(tmp_path: Path) -> None:
    profile = tmp_path / "raw.txt"
    profile.write_text(
        "thread (1): MainThread;run (asyncio/runners.py:1);reconcile "
        "(psjob_operator/controller.py:10);deepcopy (copy.py:5) 30\n"
        "thread (2): psjob-api_0;_worker (concurrent/futures/thread.py:83);create "
        "(psjob_operator/kube.py:4);SSLSocket.read (ssl.py:1) 70\n"
        "thread (3): psjob-api_1;create (psjob_operator/kube.py:4);HTTPSConnection.connect "
        "(urllib3/connection.py:9) 10\n"
    )
    text = "\n".join(profile_summary(profile))
    assert text.startswith("40 busy samples")
    assert "MainThread 75%" in text and "psjob-api 25%" in text
    assert "| `reconcile (psjob_operator/controller.py)` | 75.0% |" in text
    assert "| `HTTPSConnection.connect (urllib3/connection.py)` | 25.0% |" in text


def test_rewrite_replaces_only_between_the_markers() -> None:
    text = f"# Benchmarks\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Runtime\n\nkept\n"
    rewritten = _rewrite(text, ["new", "lines"])
    assert (
        rewritten == f"# Benchmarks\n\nintro\n\n{BEGIN}\nnew\nlines\n{END}\n\n## Runtime\n\nkept\n"
    )


def test_rewrite_appends_the_section_when_the_markers_are_missing() -> None:
    assert _rewrite("# Benchmarks\n", ["new"]) == f"# Benchmarks\n\n{BEGIN}\nnew\n{END}\n"
