"""A real training job shows its progress in status, `kubectl get psj` and the operator's metrics.

The real runtime trains with workers that call session.report; the operator, at its default
interval, reads server 0's /progress through the pod's IP and its port `progress`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.e2e.operator.support import (
    OperatorProcess,
    PSJobs,
    eventually,
    job_manifest,
    python_command,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIRST_PROGRESS_SECONDS = 30
"""The issue's promise: a running job shows its step and samples/s within 30 s of training."""
STEPS = 240
PACED_WORKER = f"""
import time, psjob_runtime, torch
torch.set_num_threads(1)
session = psjob_runtime.init()
model = torch.nn.Linear(8, 1)
optimizer = session.optimizer(model)
for step in range(1, {STEPS} + 1):
    optimizer.zero_grad()
    loss = model(torch.ones(16, 8)).pow(2).mean()
    loss.backward()
    optimizer.step()
    session.report(step=step, loss=loss.item(), samples=16, accuracy=step / {STEPS})
    time.sleep(0.25)
session.finish()
"""
"""A worker that trains for about a minute at little CPU, reporting every step."""


def step_gauge(operator: OperatorProcess, namespace: str, job: str) -> float | None:
    pattern = rf'^psjob_job_step\{{job="{job}",namespace="{namespace}"\}} (\S+)$'
    found = re.search(pattern, operator.metrics(), re.MULTILINE)
    return None if found is None else float(found.group(1))


def kubectl_get_columns(psjobs: PSJobs, name: str) -> dict[str, str]:
    """`kubectl get psj NAME` as a user reads it: header word -> the job's value."""
    header, row = psjobs.cluster.kubectl("get", "psj", name, "-n", psjobs.namespace).stdout.split(
        "\n"
    )[:2]
    return dict(zip(header.split(), row.split(), strict=True))


def test_a_training_job_shows_its_step_and_speed_while_it_runs_and_keeps_them(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    job = job_manifest(
        "paced",
        servers={"replicas": 2},
        workers={"replicas": 2, "command": python_command(PACED_WORKER)},
        training={"totalSteps": STEPS},
    )
    del job["spec"]["servers"]["command"]  # the runtime's server
    psjobs.apply(job)
    psjobs.wait_phase("paced", "Running", timeout=120)

    def first_training_step() -> bool:
        return any("progress " in line for line in psjobs.logs("paced-worker-0").splitlines())

    eventually(first_training_step, "worker 0's first progress line", timeout=120)
    trained = time.monotonic()

    def progress() -> dict[str, Any] | None:
        shown: dict[str, Any] | None = psjobs.status("paced").get("progress")
        if shown and shown["step"] > 0 and shown["samplesPerSecond"] > 0:
            return shown
        return None

    first = eventually(progress, "status.progress", timeout=FIRST_PROGRESS_SECONDS)
    print(f"status.progress {time.monotonic() - trained:.1f} s after the first report: {first}")
    assert first["workers"] == 2 and 1 <= first["workersReporting"] <= 2
    assert first["loss"] >= 0 and 0 < first["metrics"]["accuracy"] <= 1
    assert first["percentDone"] > 0

    columns = kubectl_get_columns(psjobs, "paced")
    print(f"kubectl get psj: {columns}")
    assert int(columns["STEP"]) > 0 and float(columns["SAMPLES/S"]) > 0, columns
    gauge = eventually(lambda: step_gauge(operator, psjobs.namespace, "paced"), "the step gauge")
    assert gauge > 0

    def advanced() -> dict[str, Any] | None:
        shown: dict[str, Any] = psjobs.status("paced")["progress"]
        return shown if shown["step"] > first["step"] else None

    later = eventually(advanced, "a second reading", timeout=30)
    assert later["readTime"] > first["readTime"]
    if later["step"] < STEPS:  # two readings give a speed, so an estimate
        assert later["estimatedCompletionTime"] > later["readTime"]

    psjobs.kubectl_wait("paced", "Succeeded", timeout=300)
    kept = psjobs.status("paced")["progress"]
    assert kept["step"] >= later["step"]

    psjobs.delete("paced")
    eventually(
        lambda: step_gauge(operator, psjobs.namespace, "paced") is None,
        "the deleted job's gauge to go",
    )
