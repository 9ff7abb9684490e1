"""Progress in a running job: workers' reports reach server 0 on their requests, and the servers
answer GET /progress and /metrics on PSJOB_PROGRESS_PORT while training goes on."""

import datetime
import http.client
import json
import math
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from psjob_runtime import contract
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings

from tests.runtime.jobs import WORKLOADS, launch, start_plans
from tests.runtime.protocol_jobs import run_rogue
from tests.runtime.test_progress_parts import parse_strictly

REPORTER = WORKLOADS / "reporter.py"
STEPS, BATCH, EVERY = 30, 16, 5


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def wait_for(condition: Any, what: str, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {limit} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_running_job_shows_its_progress_and_metrics(tmp_path: Path) -> None:
    settings = TrainingSettings.model_validate(
        {
            "timeoutSeconds": 120,
            "checkpoint": {"dir": str(tmp_path / "checkpoints"), "everySteps": EVERY},
            "config": {
                "out": str(tmp_path),
                "steps": STEPS,
                "batch": BATCH,
                "step_seconds": 0.05,
                "hold_seconds": 170,
            },
        }
    )
    plans = plan_job(2, 2, settings, [sys.executable, str(REPORTER)])
    ports = [int(p.env[contract.ENV_PROGRESS_PORT]) for p in plans if p.name.startswith("server")]
    procs, logs = start_plans(plans, tmp_path)
    try:

        def listening() -> bool:
            try:
                return get(ports[0], "/progress")[0] == 200
            except OSError:
                return False

        wait_for(listening, "server 0 serves /progress")
        # A client that connects and says nothing, held through the whole run.
        silent = socket.create_connection(("127.0.0.1", ports[0]))
        holding = [tmp_path / f"holding-{worker}" for worker in range(2)]
        wait_for(lambda: all(path.exists() for path in holding), "both workers trained")

        status, body = get(ports[0], "/progress")
        assert status == 200
        progress = json.loads(body)
        assert set(progress) == {
            "step", "samples", "samplesPerSecond", "loss", "metrics", "workersReporting",
            "workers", "checkpoint", "time",
        }  # fmt: skip
        # Reports leave at most every 0.5 s: the newest one may wait for the worker's DONE.
        assert STEPS - 1 - 12 <= progress["step"] <= STEPS - 1
        assert 0 < progress["samples"] <= 2 * STEPS * BATCH
        assert progress["samples"] % BATCH == 0
        assert progress["samplesPerSecond"] > 0
        assert math.isfinite(progress["loss"]) and progress["loss"] > 0
        assert set(progress["metrics"]) == {"accuracy"}
        assert 0 <= progress["metrics"]["accuracy"] <= 1
        assert progress["workersReporting"] == progress["workers"] == 2
        assert progress["checkpoint"]["step"] == STEPS
        written = datetime.datetime.strptime(progress["checkpoint"]["time"], "%Y-%m-%dT%H:%M:%SZ")
        age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - written
        assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=5)
        assert progress["time"].endswith("Z")

        for index, port in enumerate(ports):
            status, body = get(port, "/metrics")
            assert status == 200
            samples = parse_strictly(body.decode())
            labels = {"job": "local", "namespace": "local", "role": "server", "index": str(index)}
            assert all(sample[1] == labels for sample in samples.values())
            assert samples["psjob_server_updates_total"][2] == STEPS
            assert samples["psjob_server_received_bytes_total"][2] > 0
            assert samples["psjob_server_sent_bytes_total"][2] > 0
            assert samples["psjob_server_checkpoint_duration_seconds"][2] > 0
            assert samples["psjob_server_table_rows"][2] == 0
            job_gauges = {name for name in samples if name.startswith("psjob_job_")}
            if index == 0:
                assert samples["psjob_job_step"][2] == progress["step"]
                assert samples["psjob_job_workers_reporting"][2] == 2
                assert job_gauges == {
                    "psjob_job_step", "psjob_job_samples_per_second", "psjob_job_loss",
                    "psjob_job_workers_reporting",
                }  # fmt: skip
            else:
                assert not job_gauges
        assert get(ports[1], "/progress")[0] == 404
        assert get(ports[0], "/nothing")[0] == 404
        silent.settimeout(10)
        assert silent.recv(1) == b""  # the silent client was let go, training was not held
        silent.close()

        (tmp_path / "release").touch()
        for name, proc in procs.items():
            assert proc.wait(60) == 0, logs[name].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_bad_reports_are_left_out_and_training_is_unchanged(tmp_path: Path) -> None:
    runs = {}
    for hostile in (False, True):
        out = tmp_path / f"hostile-{hostile}"
        out.mkdir()
        config = {"out": str(out), "steps": 6, "hostile": hostile}
        done = launch(
            "--servers", "1", "--workers", "2", "--config", json.dumps(config),
            worker=[sys.executable, str(REPORTER)],
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert output.count("[launch] progress: http://127.0.0.1:") == 1, output
        runs[hostile] = (output, [torch.load(out / f"worker-{w}.pt")["params"] for w in (0, 1)])
    (clean_output, clean), (hostile_output, hostile_params) = runs[False], runs[True]
    for worker in (0, 1):
        assert torch.equal(hostile_params[worker], clean[worker])
        for problem in (
            "loss=nan is not a finite number: not sent",
            "metric 'm16': at most 16 metrics are sent",
            "metric 'bad-name': a name must match",
            "step=-1 is not an integer >= 0: the report is dropped",
        ):
            line = f"psjob: worker {worker}: session.report(): {problem}"
            assert hostile_output.count(line) == 1, hostile_output
    assert "session.report()" not in clean_output


MODEL = 8


def request(op: str, reply: bool = True, **fields: Any) -> dict[str, Any]:
    """A well-formed dense request of the rogue's one-server, 8-element model."""
    built: dict[str, Any] = {"op": op, "numel": MODEL, "extra": [MODEL, 0, 0], **fields}
    if op in ("INIT", "PUSH_PULL"):
        built["messages"] = [{"dtype": "float32", "count": MODEL, "fill": 0.5}]
    if reply and op != "INIT":
        built["reply"] = (
            {"dtype": "int64", "count": 11}
            if op == "DONE"
            else {"dtype": "float32", "count": MODEL}
        )
    return built


def block(**fields: Any) -> dict[str, Any]:
    return {"step": 3, "samples": 48, "loss": 0.5, "names": ["accuracy"], "values": [0.9], **fields}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (request("PUSH_PULL", progress=block(count=17)), "progress metrics count is 17, not 0..16"),
        (request("PUSH_PULL", progress=block(names=["1bad"])), "progress metric name 0 is '1bad'"),
        (request("PUSH_PULL", progress=block(step=-1)), "progress step -1 and samples 48"),
        (request("PULL", progress=block()), "its progress field is 1184: a progress block"),
        (request("PUSH_PULL", progress_field=12), "its progress field is 12"),
    ],
)
def test_server_0_refuses_a_bad_progress_block_naming_the_field(
    tmp_path: Path, bad: dict[str, Any], named: str
) -> None:
    end = run_rogue(tmp_path, [request("INIT"), bad])
    assert end.returncode == ExitCode.RETRYABLE, end.log
    assert "psjob: server 0: worker 0 (rank 1) sent a bad" in end.log, end.log
    assert named in end.log, end.log


@pytest.mark.slow
def test_a_nan_loss_in_a_block_is_ignored_not_fatal(tmp_path: Path) -> None:
    script = [
        request("INIT"),
        request("PULL"),
        request("PUSH_PULL", progress=block(loss="nan")),
        request("DONE", progress=block(step=4, loss="nan")),
    ]
    end = run_rogue(tmp_path, script)
    assert end.returncode == 0, end.log
    assert "server 0: all 1 workers finished" in end.log, end.log
