"""The progress pieces on their own: the block on the wire, server 0's board, the metrics text
and the HTTP endpoint, without a job (test_progress.py runs them in one)."""

import datetime
import http.client
import json
import math
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from psjob_runtime import metrics, progress_block, progress_http
from psjob_runtime.progress import ProgressOutbox
from psjob_runtime.progress_block import BadBlockError, Report
from psjob_runtime.progress_board import ProgressBoard

LABELS = {"job": "demo", "namespace": "team-a", "role": "server", "index": "0"}


def raw_block(**changes: Any) -> bytes:
    """A valid block's bytes with some int64 slots overwritten (slot: value)."""
    block = bytearray(progress_block.encode(Report(5, 80, 0.5, {"accuracy": 0.75})))
    for slot, value in changes.items():
        index = int(slot.removeprefix("slot"))
        block[8 * index : 8 * index + 8] = int(value).to_bytes(8, "little", signed=True)
    return bytes(block)


def test_a_report_crosses_the_wire_whole() -> None:
    metrics_in = {f"m_{i}": i / 3 for i in range(16)}
    sent = Report(step=12, samples=4096, loss=0.25, metrics=metrics_in)
    block = progress_block.encode(sent)
    assert len(block) == progress_block.BYTES
    assert progress_block.decode(block) == sent


def test_a_non_finite_loss_arrives_as_no_loss() -> None:
    assert progress_block.decode(progress_block.encode(Report(1, 2, None))).loss is None
    nan_bits = int.from_bytes(bytes.fromhex("000000000000f87f"), "little")
    assert progress_block.decode(raw_block(slot2=nan_bits)).loss is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"slot0": -1}, "progress step -1 and samples 80 must be >= 0"),
        ({"slot1": -7}, "progress step 5 and samples -7 must be >= 0"),
        ({"slot3": 17}, "progress metrics count is 17, not 0..16"),
        ({"slot3": -1}, "progress metrics count is -1"),
        ({"slot3": 2}, "progress metric name 1 is ''"),
        ({"slot4": 0x7FF0000000000000}, "progress metric 'accuracy' is inf"),
        ({"slot20": int.from_bytes(b"1bad", "little")}, "progress metric name 0 is '1bad'"),
        ({"slot22": 1}, "progress metric name 0 is 'accuracy'"),  # bytes after the name's NUL
    ],
)
def test_a_bad_block_is_refused_naming_the_field(changes: dict[str, int], named: str) -> None:
    with pytest.raises(BadBlockError) as refused:
        progress_block.decode(raw_block(**changes))
    assert named in str(refused.value)


def test_report_leaves_out_what_breaks_the_rules_and_keeps_the_rest() -> None:
    outbox = ProgressOutbox(worker=0)
    many = {f"m{i}": float(i) for i in range(17)}
    kept = outbox.put(3, float("nan"), 10, {**many, "bad-name": 1.0, "x": float("inf")})
    assert kept is not None
    assert kept.loss is None and len(kept.metrics) == 16 and "m16" not in kept.metrics
    assert outbox.put(-1, 1.0, 10, {}) is None
    assert outbox.put(4, 1.0, -2, {}) is None
    assert outbox.put(True, 1.0, 1, {}) is None
    assert outbox.put(5, 2.0, 6, {}) == Report(5, 16, 2.0, {})  # samples: cumulative


def test_the_outbox_sends_at_most_every_interval_and_always_the_newest() -> None:
    outbox = ProgressOutbox(worker=0, interval=0.5)
    assert outbox.take(now=0.0) is None
    outbox.put(1, 1.0, 8, {})
    assert outbox.take(now=0.0) is not None
    outbox.put(2, 0.9, 8, {})
    assert outbox.take(now=0.2) is None
    outbox.put(3, 0.8, 8, {})
    block = outbox.take(now=0.6)
    assert block is not None and progress_block.decode(block) == Report(3, 24, 0.8, {})
    assert outbox.take(now=5.0) is None  # nothing new
    outbox.put(4, 0.7, 8, {})
    assert outbox.take(now=5.1, force=True) is not None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_board_sums_rates_and_means_losses_of_the_workers() -> None:
    clock = FakeClock()
    wall = datetime.datetime(2026, 12, 3, 6, 10, 0, tzinfo=datetime.UTC)
    board = ProgressBoard(3, clock=clock, wall=lambda: wall)
    assert board.summary() == {
        "step": 0,
        "samples": 0,
        "samplesPerSecond": 0.0,
        "loss": None,
        "metrics": {},
        "workersReporting": 0,
        "workers": 3,
        "checkpoint": None,
        "time": "2026-12-03T06:10:00Z",
    }
    for second in range(3):
        clock.now = 1000.0 + second
        board.record(0, Report(10 + second, 100 * (second + 1), 1.0, {"acc": 0.5}))
        board.record(1, Report(8 + second, 50 * (second + 1), None, {"acc": 0.7, "lr": 0.1}))
    board.checkpoint_written(10, wall - datetime.timedelta(minutes=1))
    summary = board.summary()
    assert summary["step"] == 12
    assert summary["samples"] == 300 + 150
    assert summary["samplesPerSecond"] == pytest.approx(100 + 50)
    assert summary["loss"] == 1.0  # worker 1 never sent a finite loss
    assert summary["metrics"] == {"acc": pytest.approx(0.6), "lr": pytest.approx(0.1)}
    assert summary["workersReporting"] == 2
    assert summary["checkpoint"] == {"step": 10, "time": "2026-12-03T06:09:00Z"}
    clock.now += 61  # worker 0 keeps reporting, worker 1 has gone quiet
    board.record(0, Report(13, 400, 0.5, {}))
    summary = board.summary()
    assert summary["workersReporting"] == 1
    assert summary["loss"] == 0.5
    # Worker 0's only recent report: its rate spans its last two reports, 61 s apart.
    assert summary["samplesPerSecond"] == pytest.approx(100 / 61)


def unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_strictly(text: str) -> dict[str, tuple[str, dict[str, str], float]]:
    """Each sample of a 0.0.4 text by name, after checking every line's form; then
    prometheus_client's own parser must agree."""
    typed: dict[str, str] = {}
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge"}, line
            typed[name] = kind
            continue
        name, _, rest = line.partition("{")
        label_text, _, number = rest.partition("} ")
        assert name in typed, f"{name} has no TYPE line"
        labels = dict(part.split("=", 1) for part in label_text.split(","))
        unescaped = {k: unescape(v.removeprefix('"').removesuffix('"')) for k, v in labels.items()}
        samples[name] = (typed[name], unescaped, float(number))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, found, value) in samples.items():
        family = families[name.removesuffix("_total")]
        assert family.type == kind
        assert [(s.labels, s.value) for s in family.samples] == [(found, value)]
    return samples


def test_metrics_text_parses_and_carries_the_labels() -> None:
    reading = metrics.ServerReading(
        updates=7,
        received_bytes=1024,
        sent_bytes=2048,
        table_rows=10,
        table_bytes=400,
        checkpoint_seconds=0.25,
        staleness=2,
        max_staleness=3,
    )
    progress = {"step": 7, "samplesPerSecond": 12.5, "loss": None, "workersReporting": 2}
    samples = parse_strictly(metrics.render({**LABELS, "job": 'a"b\\c'}, reading, progress))
    assert samples["psjob_server_updates_total"] == (
        "counter",
        {**LABELS, "job": 'a"b\\c'},
        7.0,
    )
    assert samples["psjob_job_samples_per_second"][2] == 12.5
    assert "psjob_job_loss" not in samples  # no loss yet: no sample rather than a made-up one
    assert samples["psjob_server_max_staleness_steps"][2] == 3


@pytest.fixture
def endpoint() -> Iterator[int]:
    routes: dict[str, progress_http.Route] = {
        "/progress": lambda: ("application/json", json.dumps({"step": 3}).encode())
    }
    server = progress_http.start(0, routes, "test")
    assert server is not None
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_endpoint_answers_get_only_and_known_paths_only(endpoint: int) -> None:
    assert get(endpoint, "/progress") == (200, b'{"step": 3}')
    assert get(endpoint, "/metrics")[0] == 404
    assert get(endpoint, "/progress", method="POST")[0] == 501


def test_silent_clients_neither_block_the_endpoint_nor_stay_forever(endpoint: int) -> None:
    silent = [socket.create_connection(("127.0.0.1", endpoint)) for _ in range(3)]
    started = time.monotonic()
    assert get(endpoint, "/progress")[0] == 200
    assert time.monotonic() - started < 2
    for sock in silent:
        sock.settimeout(progress_http.REQUEST_TIMEOUT_SECONDS + 5)
        assert sock.recv(1) == b""  # closed by the server after its request timeout
        sock.close()
    assert math.isclose(
        time.monotonic() - started, progress_http.REQUEST_TIMEOUT_SECONDS, abs_tol=3
    )


def test_more_clients_than_the_bound_are_closed_not_queued(endpoint: int) -> None:
    silent = [
        socket.create_connection(("127.0.0.1", endpoint))
        for _ in range(progress_http.MAX_CONNECTIONS + 4)
    ]
    time.sleep(0.5)
    extra = silent[-1]
    extra.settimeout(2)
    assert extra.recv(1) == b""  # over the bound: closed at once
    for sock in silent:
        sock.close()
    time.sleep(0.2)
    assert get(endpoint, "/progress")[0] == 200


def test_a_client_that_hangs_up_before_its_answer_leaves_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """As a scraper whose timeout ran out: the answer's write fails, and nothing is printed."""
    body = b"x" * (16 << 20)  # more than the socket buffers take: the write meets the hang-up
    server = progress_http.start(0, {"/metrics": lambda: ("text/plain", body)}, "test")
    assert server is not None
    port = server.server_address[1]
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1)
            # close with a reset, as a client killed mid-answer does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        time.sleep(1.0)
        assert get(port, "/metrics")[1] == body  # still serving
    finally:
        server.shutdown()
        server.server_close()
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out, printed.err[-2000:]
