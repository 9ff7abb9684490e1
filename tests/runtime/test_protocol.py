"""A server refuses every request its header or its payload makes wrong, naming the peer and the
field, and ends as the failure table says: 75 for a misbehaving peer, 78 for a config error."""

from pathlib import Path
from typing import Any

import pytest
from psjob_runtime.errors import ExitCode
from psjob_runtime.wire import HEADER_LEN, PROTOCOL_VERSION

from tests.runtime.protocol_jobs import run_rogue

PEER = "worker 0 (rank 1)"
MODEL = 1000
"""Elements of the rogue's model: one server holds the whole slice."""


def init(**changes: Any) -> dict[str, Any]:
    request = {
        "op": "INIT",
        "numel": MODEL,
        "extra": [MODEL, 0, 0],
        "messages": [{"dtype": "float32", "count": MODEL}],
    }
    return {**request, **changes}


PULL = {
    "op": "PULL",
    "numel": MODEL,
    "extra": [MODEL, 0, 0],
    "reply": {"dtype": "float32", "count": MODEL},
}
DECLARE = {
    "op": "DECLARE_TABLE",
    "numel": 100,
    "extra": [0, 4, 0],
    "messages": [{"dtype": "float32", "count": 1, "fill": 0.01}],
}


def sparse_push(count: int = 3) -> dict[str, Any]:
    return {
        "op": "SPARSE_PUSH",
        "numel": count,
        "extra": [0, 4, 0],
        "messages": [{"dtype": "int64", "count": count}, {"dtype": "float32", "count": 4 * count}],
    }


def assert_refused(tmp_path: Path, script: list[dict[str, Any]], code: int, *texts: str) -> str:
    end = run_rogue(tmp_path, script)
    assert end.returncode == code, end.log
    assert f"psjob: server 0: {PEER}" in end.log, end.log
    for text in texts:
        assert text in end.log, end.log
    assert "Traceback" not in end.log
    return end.log


@pytest.mark.slow
def test_a_payload_of_another_type_is_refused_before_it_is_received(tmp_path: Path) -> None:
    # float64 values honestly announced: version 2 read them as float32 or aborted in gloo.
    float64 = init(messages=[{"dtype": "float64", "count": MODEL}])
    assert_refused(
        tmp_path,
        [float64],
        ExitCode.RETRYABLE,
        "bad INIT request: it announces payloads of 8000 and 0 bytes, the op carries 4000 and 0",
    )


@pytest.mark.slow
def test_a_payload_shorter_than_announced_is_refused_not_half_read(tmp_path: Path) -> None:
    # One element sent for a 1000-element model: version 2 adopted 999 uninitialised values.
    short = init(payload=[4 * MODEL, 0], messages=[{"dtype": "float32", "count": 1}])
    assert_refused(
        tmp_path, [short], ExitCode.RETRYABLE, "initial parameters were shorter than the header"
    )


@pytest.mark.slow
def test_a_header_shorter_than_the_protocols_is_refused(tmp_path: Path) -> None:
    assert_refused(
        tmp_path,
        [{**PULL, "header_len": 5}],
        ExitCode.RETRYABLE,
        f"sent a header shorter than {HEADER_LEN} int64 values",
    )


@pytest.mark.slow
def test_another_protocol_version_is_a_config_error(tmp_path: Path) -> None:
    assert_refused(
        tmp_path,
        [{**PULL, "version": 2}],
        ExitCode.CONFIG_ERROR,
        f"peer speaks protocol version 2, this process {PROTOCOL_VERSION}",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (init(numel=-5), "step 0 and numel -5 must be >= 0"),
        (init(extra=[-1000, 0, 0], numel=0, messages=[]), "extra0 (the model's elements) is -1000"),
        (
            init(numel=999, messages=[{"dtype": "float32", "count": 999}]),
            "numel is 999, but a model",
        ),
        ({**DECLARE, "extra": [0, -4, 0]}, "rows >= 1 and dim >= 1, got 100 x -4"),
        ({**DECLARE, "extra": [7, 4, 0]}, "extra0 (table) is 7: tables are declared in order"),
        ({**PULL, "worker": 5}, "its worker field is 5, its connection is worker 0 (rank 1)"),
        (
            {"op": "DONE", "worker": 99, "reply": {"dtype": "int64", "count": HEADER_LEN}},
            "worker field is 99",
        ),
    ],
)
def test_header_fields_are_checked_before_anything_is_allocated(
    tmp_path: Path, request_: dict[str, Any], field: str
) -> None:
    assert_refused(tmp_path, [request_], ExitCode.RETRYABLE, field)


@pytest.mark.slow
@pytest.mark.parametrize(
    "request_",
    [
        init(numel=1 << 50, extra=[1 << 50, 0, 0], payload=[4 << 50, 0], messages=[]),
        {**DECLARE, "numel": 1 << 40, "extra": [0, 1 << 20, 0]},
    ],
)
def test_a_model_or_table_larger_than_the_servers_memory_is_refused_unallocated(
    tmp_path: Path, request_: dict[str, Any]
) -> None:
    end = run_rogue(tmp_path, [request_])
    assert end.returncode == ExitCode.CONFIG_ERROR, end.log
    assert "GB of values and optimizer state" in end.log, end.log
    assert "this server may use" in end.log, end.log
    assert end.peak_rss_bytes < 1 << 30, end.peak_rss_bytes  # a bare server peaks near 0.6 GB


@pytest.mark.slow
def test_ids_outside_the_shard_are_refused(tmp_path: Path) -> None:
    pull = {
        "op": "SPARSE_PULL",
        "numel": 1,
        "extra": [0, 4, 0],
        "messages": [{"dtype": "int64", "count": 1, "fill": 100}],
        "reply": {"dtype": "float32", "count": 4},
    }
    assert_refused(
        tmp_path, [DECLARE, pull], ExitCode.RETRYABLE, "ids 100..100 outside table 0 (100 x 4)"
    )


@pytest.mark.slow
def test_more_ids_than_the_shard_has_rows_are_refused(tmp_path: Path) -> None:
    assert_refused(
        tmp_path,
        [DECLARE, sparse_push(count=101)],
        ExitCode.RETRYABLE,
        "numel (ids) is 101, more than the 100 ids one request may carry for table 0 (100 x 4)",
    )


@pytest.mark.slow
def test_one_pending_sparse_push_per_table_and_step(tmp_path: Path) -> None:
    # Version 2 held every one of them until the next PUSH_PULL: memory without bound.
    assert_refused(
        tmp_path,
        [DECLARE, *[sparse_push() for _ in range(40)]],
        ExitCode.RETRYABLE,
        "a second push of table 0 before its PUSH_PULL",
    )


@pytest.mark.slow
def test_a_second_init_of_worker_0_is_received_and_dropped(tmp_path: Path) -> None:
    # What a replacement of worker 0 (or its rejoin to a replaced server) sends: the model stays.
    again = init(messages=[{"dtype": "float32", "count": MODEL, "fill": 1e30}])
    pull = {"op": "PULL", "numel": MODEL, "reply": {"dtype": "float32", "count": MODEL}}
    end = run_rogue(tmp_path, [init(), again, pull])
    assert "rogue: sent request 2 (PULL)" in end.rogue_log, end.rogue_log + end.log
    assert "bad INIT request" not in end.log


@pytest.mark.slow
def test_a_payload_longer_than_announced_is_refused_before_a_byte_of_it_is_read(
    tmp_path: Path,
) -> None:
    """Gloo aborted the whole server here; the frame's byte count now comes before its bytes."""
    liar = init(payload=[4 * MODEL, 0], messages=[{"dtype": "float32", "count": 2 * MODEL}])
    assert_refused(
        tmp_path,
        [liar],
        ExitCode.RETRYABLE,
        f"sent a frame of tag 2 with {8 * MODEL} bytes where tag 2 with at most {4 * MODEL} bytes",
    )
