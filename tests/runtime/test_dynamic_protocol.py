"""A server refuses bad requests about dynamic tables before it allocates anything for them."""

from pathlib import Path
from typing import Any

import pytest
from psjob_runtime.dynamic_table import RESERVED_ID
from psjob_runtime.errors import ExitCode

from tests.runtime.test_protocol import assert_refused


def declare(dim: int = 4, options: int = 0, numel: int = 0) -> dict[str, Any]:
    return {
        "op": "DECLARE_DYNAMIC",
        "numel": numel,
        "extra": [0, dim, 0],
        "messages": [
            {"dtype": "float32", "count": 1, "fill": 0.01},
            {"dtype": "int64", "count": 3, "fill": options},
        ],
    }


@pytest.mark.slow
@pytest.mark.parametrize(("dim", "numel"), [(0, 0), (1 << 17, 0), (4, 5)])
def test_a_dynamic_table_of_no_or_huge_width_is_refused(
    tmp_path: Path, dim: int, numel: int
) -> None:
    assert_refused(
        tmp_path,
        [declare(dim=dim, numel=numel)],
        ExitCode.RETRYABLE,
        f"numel {numel} and extra1 (dim) {dim}: a dynamic table has numel 0 and dim 1..65536",
    )


@pytest.mark.slow
def test_negative_options_are_refused(tmp_path: Path) -> None:
    assert_refused(
        tmp_path,
        [declare(options=-1)],
        ExitCode.RETRYABLE,
        "its options [-1, -1, -1]: admit_after must be in 0..2147483647, got -1",
    )


@pytest.mark.slow
def test_the_reserved_id_is_refused(tmp_path: Path) -> None:
    pull = {
        "op": "SPARSE_PULL",
        "numel": 2,
        "extra": [0, 4, 0],
        "messages": [{"dtype": "int64", "count": 2, "fill": RESERVED_ID}],
        "reply": {"dtype": "float32", "count": 8},
    }
    # It ends the message, where it reads as the marker of a message cut short.
    assert_refused(
        tmp_path, [declare(), pull], ExitCode.RETRYABLE, f"or hold the reserved id {RESERVED_ID}"
    )


@pytest.mark.slow
def test_a_request_of_more_ids_than_a_request_may_carry_is_refused(tmp_path: Path) -> None:
    # 257 rows of 65536 floats would be a 64 MiB receive: refused on the header alone.
    push = {
        "op": "SPARSE_PUSH",
        "numel": 257,
        "extra": [0, 1 << 16, 0],
        "payload": [8 * 257, 4 * 257 * (1 << 16)],
        "messages": [],
    }
    end = assert_refused(
        tmp_path,
        [declare(dim=1 << 16), push],
        ExitCode.RETRYABLE,
        "numel (ids) is 257, more than the 256 ids one request may carry for dynamic table 0",
    )
    assert "Traceback" not in end
