"""Random and mutated requests at a real server: it never aborts, stays within a memory bound and
always ends with a psjob message and an exit code of the failure table (docs/runtime.md).

Each example starts a server and the scripted worker (workloads/rogue.py), plays a valid prefix
(INIT, maybe a fixed or dynamic table and a pull), then one request built valid for a random op
and mutated in a few fields: op code, worker, step, numel, extra, announced bytes, the payloads'
types and lengths, a cut header. The server either refuses it (75, 78, or 1 for a model
mismatch), or serves it and then loses the worker, which leaves (75), or finishes (0).

Not generated: a message longer than the receive the server posts for it. Gloo aborts the process
on that before any check of ours can run (test_protocol.py pins it; docs/security.md). For a
PUSH_PULL, whose gradient travels inside the request, that receive is the slice's gradient.
"""

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psjob_runtime.errors import ExitCode
from psjob_runtime.wire import HEADER_LEN, INLINE_OPS, Op

from tests.runtime.protocol_jobs import run_rogue

MODEL, ROWS, DIM, IDS = 64, 50, 4, 3
EXAMPLES = int(os.environ.get("PSJOB_FUZZ_EXAMPLES", "8"))
"""About 6 s each on 2 cores, most of it two processes importing torch and joining: 8 keep the
test near a minute in `make test`; set PSJOB_FUZZ_EXAMPLES for a longer run."""
PEAK_RSS_BOUND = 1 << 30
"""A bare server peaks near 0.6 GB (torch, gloo); what a request may add is bounded by this."""
MESSAGE_BYTES = 1 << 16
TABLE = [0, DIM, 0]
DENSE = [MODEL, 0, 0]

VALID: dict[str, dict[str, Any]] = {
    "INIT": {"numel": MODEL, "extra": DENSE, "messages": [("float32", MODEL)]},
    "PULL": {"numel": MODEL, "extra": DENSE, "reply": ("float32", MODEL)},
    "PUSH_PULL": {
        "numel": MODEL,
        "extra": DENSE,
        "messages": [("float32", MODEL)],
        "reply": ("float32", MODEL),
    },
    "DONE": {"numel": MODEL, "extra": DENSE, "reply": ("int64", HEADER_LEN)},
    "RESUME": {"numel": MODEL, "extra": DENSE, "reply": ("int64", HEADER_LEN)},
    "DECLARE_TABLE": {"numel": ROWS, "extra": TABLE, "messages": [("float32", 1)]},
    "DECLARE_DYNAMIC": {"numel": 0, "extra": TABLE, "messages": [("float32", 1), ("int64", 3)]},
    "SPARSE_PULL": {
        "numel": IDS,
        "extra": TABLE,
        "messages": [("int64", IDS)],
        "reply": ("float32", IDS * DIM),
    },
    "SPARSE_PUSH": {
        "numel": IDS,
        "extra": TABLE,
        "messages": [("int64", IDS), ("float32", IDS * DIM)],
    },
}
WIDTH = {"float32": 4, "float64": 8, "int64": 8}


def valid(op: str, reply: bool = True) -> dict[str, Any]:
    spec = VALID[op]
    request: dict[str, Any] = {
        "op": op,
        "numel": spec["numel"],
        "extra": list(spec["extra"]),
        "messages": [
            {"dtype": dtype, "count": count, "fill": 0.5}
            for dtype, count in spec.get("messages", [])
        ],
    }
    if reply and "reply" in spec:
        request["reply"] = {"dtype": spec["reply"][0], "count": spec["reply"][1]}
    return request


INTERESTING = st.sampled_from(
    [
        0,
        1,
        2,
        3,
        7,
        8,
        49,
        50,
        51,
        63,
        64,
        65,
        255,
        256,
        4096,
        -1,
        -64,
        2**31,
        2**40,
        2**62,
        -(2**62),
    ]
) | st.integers(-(2**63), 2**63 - 1)


def mutated(field: Any, draw: st.DrawFn) -> Any:
    return draw(st.one_of(st.just(field), INTERESTING))


@st.composite
def scripts(draw: st.DrawFn) -> list[dict[str, Any]]:
    prefix = [valid("INIT")]
    table = draw(st.sampled_from(["", "DECLARE_TABLE", "DECLARE_DYNAMIC"]))
    if table:
        prefix.append(valid(table))
    if draw(st.booleans()):
        prefix.append(valid("PULL"))
    op = draw(st.sampled_from(sorted(VALID)))
    last = valid(op, reply=False)
    if draw(st.booleans()):
        last["op_code"] = draw(st.sampled_from([0, 9, 255, -1, int(Op[op])]))
    last["worker"] = draw(st.sampled_from([0, 0, 0, 1, -1, 99]))
    last["step"] = mutated(0, draw)
    last["numel"] = mutated(last["numel"], draw)
    last["extra"] = [mutated(value, draw) for value in last["extra"]]
    announced = [m["count"] * WIDTH[m["dtype"]] for m in last["messages"]] + [0, 0]
    payload = [mutated(value, draw) for value in announced[:2]]
    last["payload"] = payload
    # Messages no longer than what was announced for them: anything longer aborts in gloo.
    # An inline payload shares the server's request buffer: no longer than the slice's gradient.
    last["messages"] = []
    posted = 4 * MODEL if Op[op] in INLINE_OPS else MESSAGE_BYTES
    for bytes_ in payload:
        room = min(max(bytes_, 0), MESSAGE_BYTES, posted)
        if room == 0:
            break
        dtype = draw(st.sampled_from(sorted(WIDTH)))
        count = draw(st.integers(0, room // WIDTH[dtype]))
        fill = draw(st.sampled_from([0.5, -1, 49, 10**6]))
        last["messages"].append({"dtype": dtype, "count": count, "fill": fill})
    last["header_len"] = draw(st.sampled_from([HEADER_LEN] * 4 + list(range(1, HEADER_LEN))))
    return [*prefix, last]


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(script=scripts())
def test_the_server_survives_any_request_with_a_psjob_message(
    tmp_path_factory: pytest.TempPathFactory, script: list[dict[str, Any]]
) -> None:
    end = run_rogue(tmp_path_factory.mktemp("fuzz"), script, linger=0.5, timeoutSeconds=10)
    allowed = {0, ExitCode.USER_ERROR, ExitCode.RETRYABLE, ExitCode.CONFIG_ERROR}
    assert end.returncode in allowed, f"{script[-1]}\n{end.log}"
    assert end.peak_rss_bytes < PEAK_RSS_BOUND, (end.peak_rss_bytes, script[-1])
    assert "Traceback" not in end.log, f"{script[-1]}\n{end.log}"
    if end.returncode:
        assert "psjob: " in end.log, f"{script[-1]}\n{end.log}"
