"""Checkpoints: a killed job resumes where its checkpoint left it, on any server count; a broken
checkpoint falls back to the previous one; SIGTERM makes a server write a final checkpoint."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from psjob_runtime import checkpoint
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import plan_job
from psjob_runtime.reslice import dense_share, table_share
from psjob_runtime.sharding import balanced_slices
from psjob_runtime.training import TrainingSettings

from tests.runtime.checkpoints import saved_servers
from tests.runtime.jobs import RECORDER, pid_of, run_recorder, start_plans, wait_for_text

ADAM = ["--optimizer", "adam", "--lr", "0.01"]
LOCAL = "local/local"
"""The owner of a job the launcher starts with its default --name."""


@pytest.mark.parametrize(("old", "new"), [(2, 3), (3, 2), (2, 1), (1, 3)])
def test_reslicing_keeps_every_parameter_and_its_state(old: int, new: int) -> None:
    total, rows, dim = 101, 53, 4
    files = saved_servers(total, rows, dim, old, step=7)
    dense_parts, table_parts = [], []
    for part in balanced_slices(total, new):
        values, state = dense_share(files, part)
        torch.testing.assert_close(state["exp_avg"], 2 * values)
        assert float(state["step"]) == 7
        dense_parts.append(values)
        shard_rows, shard_state = table_share([f["tables"][0] for f in files], part.server, new)
        # Server k of the new count holds ids k, k+new, ...: row i holds the value i.
        expected = torch.arange(part.server, rows, new, dtype=torch.float32)
        torch.testing.assert_close(shard_rows, expected.unsqueeze(1).repeat(1, dim))
        torch.testing.assert_close(shard_state["sum"], 2 * shard_rows)
        table_parts.append(shard_rows)
    assert torch.equal(torch.cat(dense_parts), torch.arange(total, dtype=torch.float32))
    assert sum(len(p) for p in table_parts) == rows


def test_a_truncated_or_incomplete_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for step in (5, 10, 15):
        for saved in saved_servers(20, 10, 2, servers=2, step=step):
            checkpoint.write(tmp_path, saved["server"], 2, step, saved, owner=LOCAL)
    newest = checkpoint.step_dir(tmp_path, 15) / checkpoint.file_name(1, 2)
    newest.unlink()  # server 1 died before writing step 15
    broken = checkpoint.step_dir(tmp_path, 10) / checkpoint.file_name(1, 2)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # cut off mid-write
    found = checkpoint.latest(tmp_path, owner=LOCAL)
    assert found is not None and found.step == 5
    assert float(found.files[1]["dense"]["values"][0]) == 10.0  # server 1's slice starts at 10
    log = capsys.readouterr().err
    assert "step-000000015 is incomplete" in log
    assert f"checkpoint {broken} is unusable" in log
    assert log.count("falling back to the previous") == 2


def test_each_server_keeps_its_newest_files_only(tmp_path: Path) -> None:
    for step in range(1, 7):
        for saved in saved_servers(20, 10, 2, servers=2, step=step):
            checkpoint.write(tmp_path, saved["server"], 2, step, saved, owner=LOCAL)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == [checkpoint.step_dir(tmp_path, s).name for s in (4, 5, 6)]
    assert not list(tmp_path.glob("**/*.tmp"))


@pytest.mark.slow
def test_a_killed_job_resumes_on_three_servers_and_ends_where_an_uninterrupted_run_does(
    tmp_path: Path,
) -> None:
    config = {"steps": 30, "batch": 16, "seed": 2, "table_rows": 500, "ids_per_batch": 100}
    (tmp_path / "straight").mkdir()
    straight = run_recorder(tmp_path / "straight", "--servers", "2", *ADAM, **config)
    assert straight.returncode == 0, straight.output

    store, first, second = tmp_path / "checkpoints", tmp_path / "first", tmp_path / "second"
    first.mkdir()
    checkpointing = ["--checkpoint-dir", str(store), "--checkpoint-every", "5", *ADAM]
    # Worker 0 hangs after step 12 until the attempt ends: it cannot finish before the kill.
    slow = {**config, "out": str(first), "hang_worker": 0, "hang_after_step": 12}
    log = tmp_path / "first.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(
            [
                *(sys.executable, "-m", "psjob_runtime.launch", "--servers", "2"),
                *("--timeout", "60", *checkpointing, "--config", json.dumps(slow)),
                *("--recovery", "restart-job", "--backoff-limit", "0"),
                *("--", sys.executable, str(RECORDER)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        os.kill(pid_of(wait_for_text(log, "[worker-0] step 12 done"), "server-1"), signal.SIGKILL)
        assert launcher.wait(60) == 128 + signal.SIGKILL
    assert not list(first.glob("worker-*.pt")), "the first attempt must not have finished"

    second.mkdir()
    env = {**os.environ, "PSJOB_RESTART_COUNT": "1"}
    resumed = subprocess.run(
        [
            *(sys.executable, "-m", "psjob_runtime.launch", "--servers", "3", "--timeout", "60"),
            *(*checkpointing, "--config", json.dumps({**config, "out": str(second)})),
            *("--", sys.executable, str(RECORDER)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(2 -> 3 servers)" in resumed.stdout
    for worker in (0, 1):
        record = torch.load(second / f"worker-{worker}.pt")
        assert record["start_step"] in (10, 15), record["start_step"]
        assert len(record["losses"]) == 30 - record["start_step"]
        expected = straight.records[worker]
        torch.testing.assert_close(
            record["losses"], expected["losses"][record["start_step"] :], rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(record["params"], expected["params"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(record["rows"], expected["rows"], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_sigterm_to_every_server_writes_one_complete_final_checkpoint(tmp_path: Path) -> None:
    # The job's pods deleted at once: each server settles on the same round, then writes.
    training = TrainingSettings.model_validate(
        {
            "timeoutSeconds": 60,
            "checkpoint": {"dir": str(tmp_path / "store"), "everySteps": 1000},
            "config": {"out": str(tmp_path), "steps": 100000, "table_rows": 1000},
        }
    )
    plans = plan_job(2, 2, training, [sys.executable, str(RECORDER)])
    procs, logs = start_plans(plans, tmp_path)
    try:
        wait_for_text(logs["worker-0"], "step 8 done")
        for name in ("server-0", "server-1"):
            procs[name].send_signal(signal.SIGTERM)
        codes = [procs[name].wait(30) for name in ("server-0", "server-1")]
    finally:
        for proc in procs.values():
            proc.kill()
    assert codes == [ExitCode.TERMINATED, ExitCode.TERMINATED]
    steps = [
        re.findall(r"checkpoint step (\d+) \(SIGTERM\)", logs[name].read_text())
        for name in ("server-0", "server-1")
    ]
    assert steps[0] == steps[1] and len(steps[0]) == 1, steps
    found = checkpoint.latest(tmp_path / "store", owner=LOCAL)
    assert found is not None and found.step == int(steps[0][0]) >= 8
    assert found.num_servers == 2
    assert [f["worker_steps"] for f in found.files] == [[found.step] * 2] * 2
