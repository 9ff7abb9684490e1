"""The local launcher: bad settings and bad user config stop the job at once with code 78."""

import json
import sys
import time

import pytest
from psjob_runtime.errors import ExitCode

from tests.runtime.jobs import launch

DIGITS = [sys.executable, "-m", "psjob_runtime.examples.digits"]


def test_ssp_without_staleness_is_refused_before_anything_starts() -> None:
    done = launch("--mode", "ssp", worker=DIGITS)
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert "mode ssp needs staleness" in done.stderr
    assert "started" not in done.stdout


@pytest.mark.slow
def test_a_worker_config_error_stops_the_servers_and_sets_the_exit_code() -> None:
    started = time.monotonic()
    done = launch("--config", json.dumps({"epochz": 3}), worker=DIGITS)
    assert done.returncode == ExitCode.CONFIG_ERROR, done.stdout
    assert "spec.training.config.epochz: Extra inputs are not permitted" in done.stdout
    assert "(configuration error); stopping the others" in done.stdout
    # The servers were waiting for worker 0 (timeout 60 s); the launcher stopped them instead.
    assert time.monotonic() - started < 45
