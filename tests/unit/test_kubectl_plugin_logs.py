"""`kubectl psjob logs` and the plugin's command line: prefixes, interleaving, kubeconfig."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from psjob_operator.kubectl_plugin.cli import PluginError, build_parser, connect
from psjob_operator.kubectl_plugin.log_lines import (
    LINE_MAX,
    LineSplitter,
    PodLog,
    interleave,
    source,
)
from psjob_operator.models import Role


def test_lines_carry_the_local_launchers_prefix() -> None:
    logs = [PodLog(source(Role.SERVER, 0), ["listening"]), PodLog(source(Role.WORKER, 1), ["go"])]
    assert list(interleave(logs)) == ["[server-0] listening", "[worker-1] go"]


def test_timestamped_lines_interleave_by_time_and_print_without_the_time() -> None:
    server = PodLog(
        "server-0",
        ["2026-01-01T00:00:01Z up", "2026-01-01T00:00:03.5Z step 1 applied"],
    )
    worker = PodLog(
        "worker-0",
        ["2026-01-01T00:00:02.000000001Z joined", "2026-01-01T00:00:03.25Z step 1 sent"],
    )
    assert list(interleave([server, worker])) == [
        "[server-0] up",
        "[worker-0] joined",
        "[worker-0] step 1 sent",
        "[server-0] step 1 applied",
    ]


def test_logs_without_times_print_pod_after_pod_each_in_its_own_order() -> None:
    logs = [PodLog("server-0", ["b", "a"]), PodLog("worker-0", ["2026-01-01 00:00:00 x", "y"])]
    assert list(interleave(logs)) == [
        "[server-0] b",
        "[server-0] a",
        "[worker-0] 2026-01-01 00:00:00 x",
        "[worker-0] y",
    ]


def test_a_stream_becomes_whole_lines_however_its_chunks_fall() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"first li") == []
    assert splitter.feed(b"ne\r\nsecond\nthi") == ["first line", "second"]
    assert splitter.feed(b"rd \xff\n") == ["third \ufffd"]
    assert splitter.feed(b"no newline at the end") == []
    assert splitter.end() == ["no newline at the end"]
    assert splitter.end() == []


def test_an_endless_line_is_cut_instead_of_filling_memory() -> None:
    splitter = LineSplitter()
    pieces = splitter.feed(b"x" * (LINE_MAX * 2 + 10))
    assert pieces == ["x" * LINE_MAX] * 2
    assert splitter.end() == ["x" * 10]
    assert splitter.feed(b"y" * (LINE_MAX + 1) + b"\n") == ["y" * LINE_MAX, "y"]


def test_connection_flags_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["-n", "team", "--context", "dev", "status", "job"])
    after = parser.parse_args(["logs", "job", "-f", "--role", "worker", "-n", "team"])
    assert (before.namespace, before.context, before.name) == ("team", "dev", "job")
    assert (after.namespace, after.follow, after.role, after.tail) == ("team", True, "worker", None)
    assert parser.parse_args(["status", "job"]).namespace is None


@pytest.mark.parametrize(
    "argv",
    [["status", "Bad_Name"], ["logs", "job", "--tail", "0"], ["logs", "job", "--role", "ps"]],
)
def test_bad_arguments_are_refused_before_any_request(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def kubeconfig(path: Path, server: str = "https://127.0.0.1:1") -> Path:
    contexts = [
        {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
        {"name": "prod", "context": {"cluster": "c", "user": "u"}},
    ]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": contexts,
                "current-context": "dev",
            }
        )
    )
    return path


def test_the_namespace_comes_from_the_flag_else_the_context_else_default(tmp_path: Path) -> None:
    config = str(kubeconfig(tmp_path / "config"))
    parse = build_parser().parse_args
    assert connect(parse(["--kubeconfig", config, "status", "j"]))[1] == "team-a"
    assert connect(parse(["--kubeconfig", config, "--context", "prod", "status", "j"]))[1] == (
        "default"
    )
    assert connect(parse(["--kubeconfig", config, "status", "j", "-n", "x"]))[1] == "x"
    with pytest.raises(PluginError, match="no context 'nope'"):
        connect(parse(["--kubeconfig", config, "--context", "nope", "status", "j"]))


def run_plugin(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psjob_operator.kubectl_plugin", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_an_unreadable_kubeconfig_or_unreachable_cluster_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    missing = run_plugin("status", "j", env={"KUBECONFIG": str(tmp_path / "none")})
    assert missing.returncode == 1
    assert missing.stderr.startswith("kubectl-psjob: cannot read the kubeconfig")
    config = str(kubeconfig(tmp_path / "config"))
    unreachable = run_plugin("status", "j", env={"KUBECONFIG": config})
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("kubectl-psjob: cannot reach the API server")
    assert unreachable.stdout == ""
