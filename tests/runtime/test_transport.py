"""Transport: chunked messages arrive whole; a server name that never resolves ends the wait."""

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from psjob_runtime.errors import PeerLostError
from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings
from psjob_runtime.transport import wait_for_dns

ECHO = Path(__file__).parent / "workloads" / "chunked_echo.py"


@pytest.mark.slow
def test_a_message_split_into_chunks_arrives_intact() -> None:
    argv = [sys.executable, str(ECHO)]
    training = TrainingSettings.model_validate({"timeoutSeconds": 60})
    plans = [replace(plan, argv=argv) for plan in plan_job(1, 1, training, argv)]
    procs = [subprocess.Popen(plan.argv, env=plan.env) for plan in plans]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]


def test_a_name_that_never_resolves_ends_the_wait_with_a_retryable_error() -> None:
    started = time.monotonic()
    with pytest.raises(PeerLostError, match=r"MASTER_ADDR\) did not resolve within 1 s"):
        wait_for_dns("psjob-no-such-host.invalid", timeout=1.0)
    # Bounded by the timeout plus at most one resolver attempt in flight when it expires.
    assert time.monotonic() - started < 30


def test_a_name_that_resolves_returns_at_once() -> None:
    wait_for_dns("localhost", timeout=1.0)
