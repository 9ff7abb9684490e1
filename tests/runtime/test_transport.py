"""Messages larger than one chunk arrive whole and in order."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings

ECHO = Path(__file__).parent / "workloads" / "chunked_echo.py"


@pytest.mark.slow
def test_a_message_split_into_chunks_arrives_intact() -> None:
    argv = [sys.executable, str(ECHO)]
    training = TrainingSettings.model_validate({"timeoutSeconds": 60})
    plans = [replace(plan, argv=argv) for plan in plan_job(1, 1, training, argv)]
    procs = [subprocess.Popen(plan.argv, env=plan.env) for plan in plans]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
