"""async and ssp train digits to a useful accuracy; ssp never lets a worker lead by more than K."""

import re
import sys
from pathlib import Path

import pytest

from tests.runtime.jobs import launch, run_recorder

DIGITS = [sys.executable, "-m", "psjob_runtime.examples.digits"]
SGD = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9"]


def accuracies(output: str) -> list[float]:
    return [float(a) / 100 for a in re.findall(r"test accuracy ([\d.]+)%", output)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--mode", "async"], ["--mode", "ssp", "--staleness", "2"]])
def test_digits_converges(mode: list[str]) -> None:
    done = launch(
        "--servers",
        "1",
        "--workers",
        "2",
        *mode,
        *SGD,
        "--config",
        '{"epochs": 8}',
        worker=DIGITS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = accuracies(done.stdout)
    assert len(found) == 2, done.stdout
    assert min(found) >= 0.93, done.stdout


@pytest.mark.slow
def test_ssp_lets_a_fast_worker_lead_by_exactly_the_bound(tmp_path: Path) -> None:
    # Worker 1 sleeps after every step, so worker 0 runs ahead until the servers hold it back.
    result = run_recorder(
        tmp_path,
        "--servers",
        "2",
        "--workers",
        "2",
        "--mode",
        "ssp",
        "--staleness",
        "2",
        *SGD,
        steps=25,
        slow_worker=1,
        slow_seconds=0.05,
    )
    assert result.returncode == 0, result.output
    assert result.records[0]["max_lead"] == [2, 2]
    leads = re.findall(r"max lead over slowest worker (\d+) \(bound 2\)", result.output)
    assert leads == ["2", "2"], result.output
