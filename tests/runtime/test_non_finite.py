"""spec.training.refuseNonFinite (on by default): NaN and Inf reach neither model nor checkpoint."""

from pathlib import Path
from typing import Any

import pytest
import torch
from psjob_runtime.errors import ExitCode
from psjob_runtime.wire import HEADER_LEN

from tests.runtime.protocol_jobs import run_rogue

MODEL = 8


def request(
    op: str, step: int = 0, fill: float | str | None = None, reply: bool = True
) -> dict[str, Any]:
    """A well-formed dense request of the rogue's one-server, 8-element model."""
    built: dict[str, Any] = {"op": op, "step": step, "numel": MODEL, "extra": [MODEL, 0, 0]}
    if fill is not None:
        built["messages"] = [{"dtype": "float32", "count": MODEL, "fill": fill}]
    if reply:
        count, dtype = (HEADER_LEN, "int64") if op == "DONE" else (MODEL, "float32")
        built["reply"] = {"dtype": dtype, "count": count}
    return built


def training(pushes: list[float | str]) -> list[dict[str, Any]]:
    """INIT with ones, the first PULL, one PUSH_PULL per gradient value, DONE."""
    script = [request("INIT", fill=1.0, reply=False), request("PULL")]
    script += [request("PUSH_PULL", step=i, fill=g) for i, g in enumerate(pushes)]
    return [*script, request("DONE")]


def saved_values(folder: Path) -> torch.Tensor:
    values: torch.Tensor = torch.load(folder / "server-0-of-1.pt", weights_only=True)["dense"][
        "values"
    ]
    return values


@pytest.mark.slow
def test_a_nan_push_is_refused_counted_and_reported(tmp_path: Path) -> None:
    pushes: list[float | str] = [1.0, "nan", "inf", 1.0]
    end = run_rogue(
        tmp_path,
        training(pushes),
        optimizer={"lr": 0.5},
        checkpoint={"dir": str(tmp_path / "ckpt"), "everySteps": 1},
    )
    assert end.returncode == 0, end.log
    assert "refused worker 0 (rank 1)'s push of step 1: it holds NaN or Inf" in end.log
    assert "(2 refused so far" in end.log
    assert "refused 2 non-finite pushes" in end.log  # the server's last line
    # Two real steps of -0.5 from ones; the refused ones moved nothing.
    final = saved_values(tmp_path / "ckpt" / "step-000000004")
    assert torch.equal(final, torch.zeros(MODEL)), final


@pytest.mark.slow
def test_with_the_option_off_a_nan_push_is_applied(tmp_path: Path) -> None:
    end = run_rogue(
        tmp_path,
        training(["nan"]),
        refuseNonFinite=False,
        checkpoint={"dir": str(tmp_path / "ckpt"), "everySteps": 1},
    )
    assert end.returncode == 0, end.log
    assert saved_values(tmp_path / "ckpt" / "step-000000001").isnan().all()


@pytest.mark.slow
def test_no_checkpoint_is_written_from_non_finite_state_and_the_last_finite_one_stays(
    tmp_path: Path,
) -> None:
    # A finite gradient that the learning rate overflows to -Inf: the state turns non-finite
    # without any NaN on the wire. Version 2 wrote steps 2-5 and pruned step 1, the finite one.
    end = run_rogue(
        tmp_path,
        training([1.0, 1e30, 1.0, 1.0, 1.0]),
        optimizer={"lr": 1e10},
        checkpoint={"dir": str(tmp_path / "ckpt"), "everySteps": 1},
    )
    assert end.returncode == 0, end.log
    assert "checkpoint step 2 (every 1 steps) skipped: the parameters or optimizer state hold" in (
        end.log
    )
    assert "the newest finite checkpoint (step 1) stays" in end.log
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-000000001"]
    assert torch.isfinite(saved_values(tmp_path / "ckpt" / "step-000000001")).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "text"),
    [
        ([request("INIT", fill="nan", reply=False)], "worker 0's initial parameters hold NaN"),
        (
            [
                {
                    "op": "DECLARE_TABLE",
                    "numel": 10,
                    "extra": [0, 2, 0],
                    "messages": [{"dtype": "float32", "count": 1, "fill": "nan"}],
                }
            ],
            "worker 0 (rank 1) declares table 0 with init_scale nan: pass a finite",
        ),
    ],
)
def test_non_finite_initial_values_are_refused_with_a_clear_error(
    tmp_path: Path, script: list[dict[str, Any]], text: str
) -> None:
    end = run_rogue(tmp_path, script)
    assert end.returncode == ExitCode.USER_ERROR, end.log
    assert f"psjob: server 0: {text}" in end.log, end.log
    assert "Traceback" not in end.log
