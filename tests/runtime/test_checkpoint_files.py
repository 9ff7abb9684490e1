"""Checkpoint files refuse broken input and lose nothing: writers never share a temporary file,
another job's files are never adopted, a full disk is a retryable failure that leaves no
temporary file, and a file whose body does not hold what its header says is passed over."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from psjob_runtime import checkpoint
from psjob_runtime.errors import ExitCode

from tests.runtime.checkpoints import saved_servers
from tests.runtime.jobs import RECORDER

MINE, THEIRS = "team-a/ctr", "team-b/ctr"


def write_job(root: Path, owner: str, step: int, total: int = 20, servers: int = 2) -> None:
    for saved in saved_servers(total, 10, 2, servers=servers, step=step):
        checkpoint.write(root, saved["server"], servers, step, saved, owner=owner)


def test_two_jobs_writing_the_same_file_at_once_each_publish_whole_files(tmp_path: Path) -> None:
    # Two threads share a pid, as the pid-1 servers of two jobs' containers do.
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def job(owner: str, marker: float) -> None:
        values = torch.full((500_000,), marker)
        for step in range(1, 9):
            barrier.wait()  # both write the same step's file at the same moment
            state = {"format": checkpoint.FORMAT, "step": step, "values": values}
            try:
                checkpoint.write(tmp_path, 0, 1, step, state, owner=owner)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=job, args=pair) for pair in ((MINE, 1.0), (THEIRS, 2.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    published = sorted(tmp_path.glob("step-*/server-0-of-1.pt"))
    assert len(published) == checkpoint.KEEP
    made_by_open = tmp_path / "made-by-open"
    made_by_open.touch()
    for path in published:
        assert path.stat().st_mode == made_by_open.stat().st_mode  # readable as before
        saved = torch.load(path)
        marker = {MINE: 1.0, THEIRS: 2.0}[saved["owner"]]
        assert bool((saved["values"] == marker).all()), f"{path} mixes both jobs' values"
    assert not list(tmp_path.glob("**/*.tmp"))


def test_another_jobs_files_are_passed_over_naming_the_file_and_its_owner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_job(tmp_path, MINE, step=5)
    write_job(tmp_path, THEIRS, step=10)  # the other job, sharing the directory, went on
    found = checkpoint.latest(tmp_path, owner=MINE)
    assert found is not None and found.step == 5
    foreign = checkpoint.step_dir(tmp_path, 10) / checkpoint.file_name(0, 2)
    assert (
        f"checkpoint {foreign} is unusable (it belongs to job 'team-b/ctr', not to this job "
        "'team-a/ctr'); falling back to the previous checkpoint" in capsys.readouterr().err
    )
    assert checkpoint.latest(tmp_path, owner="team-c/ctr") is None  # a third job starts fresh


def test_leftover_temporary_files_of_this_server_are_removed_and_no_one_elses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each writer, a child process, dies in the middle of torch.save (os._exit from its output).
    for owner, server in ((MINE, 0), (MINE, 1), (THEIRS, 0)):
        child = os.fork()
        if child == 0:
            try:
                checkpoint._Sink.write = lambda self, data: os._exit(9)  # type: ignore[method-assign]
                state = {"values": torch.zeros(1000)}
                checkpoint.write(tmp_path, server, 2, 7, state, owner=owner)
            finally:
                os._exit(1)  # never back into pytest
        assert os.waitpid(child, 0)[1] >> 8 == 9
    leftovers = sorted(tmp_path.glob("step-*/.*.tmp"))
    assert len(leftovers) == 3
    checkpoint.remove_leftovers(tmp_path, MINE, 0)
    remaining = sorted(tmp_path.glob("step-*/.*.tmp"))
    assert len(remaining) == 2  # server 1's and the other job's may still be written to
    (removed,) = set(leftovers) - set(remaining)
    assert f"removed {removed}, left by an interrupted checkpoint write" in capsys.readouterr().err


def _drop_tables(saved: dict[str, Any]) -> None:
    del saved["tables"]


def _ten_elements(saved: dict[str, Any]) -> None:
    saved["dense"]["values"] = saved["dense"]["values"][:10]


def _float64(saved: dict[str, Any]) -> None:
    saved["dense"]["values"] = saved["dense"]["values"].double()


def _short_state(saved: dict[str, Any]) -> None:
    saved["dense"]["state"]["exp_avg"] = saved["dense"]["state"]["exp_avg"][:-1]


def _slice_of_server_0(saved: dict[str, Any]) -> None:
    saved["dense"]["start"], saved["dense"]["stop"] = 0, 500


def _rows_of_another_shape(saved: dict[str, Any]) -> None:
    table = saved["tables"][0]
    table["rows"] = table["rows"][:, :1]


def _older_format(saved: dict[str, Any]) -> None:
    saved["format"] = 1


def _no_tables(saved: dict[str, Any]) -> None:
    saved["tables"] = []


def _worker_steps_text(saved: dict[str, Any]) -> None:
    saved["worker_steps"] = "10,10"


FILE = "step-000000010/server-1-of-2.pt is unusable"
STEP = "step-000000010 is unusable"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_drop_tables, f"{FILE} (tables is missing, expected a list)"),
        (_ten_elements, f"{FILE} (dense.values has shape [10], expected [500])"),
        (_float64, f"{FILE} (dense.values has dtype torch.float64, expected torch.float32)"),
        (_short_state, f"{FILE} (dense.state.exp_avg has shape [499], expected [500] or [])"),
        (
            _slice_of_server_0,
            f"{FILE} (dense.start is 0, but server 1 of 2 holds elements [500, 1000) of 1000)",
        ),
        (_rows_of_another_shape, f"{FILE} (tables[0].rows has shape [5, 1], expected [5, 2])"),
        (_older_format, f"{FILE} (not a psjob checkpoint of format 2 or 3 (format is 1))"),
        (_worker_steps_text, f"{FILE} (worker_steps is a str, expected a list)"),
        (_no_tables, f"{STEP} (server 1 of 2 has tables [], server 0 has [(0, 10, 2, ['sum'])])"),
    ],
)
def test_a_file_whose_body_does_not_fit_its_header_is_passed_over(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    write_job(tmp_path, MINE, step=5, total=1000)
    files = saved_servers(1000, 10, 2, servers=2, step=10)
    change(files[1])
    for saved in files:
        checkpoint.write(tmp_path, saved["server"], 2, 10, saved, owner=MINE)
    found = checkpoint.latest(tmp_path, owner=MINE)
    assert found is not None and found.step == 5
    assert f"{expected}; falling back to the previous checkpoint" in capsys.readouterr().err


def _private_tmpfs_works() -> bool:
    probe = ["unshare", "--mount", "sh", "-c", "mount -t tmpfs psjob-probe /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _private_tmpfs_works(), reason="needs root for a private tmpfs mount")
def test_a_full_disk_is_retryable_names_the_folder_and_keeps_the_older_checkpoints(
    tmp_path: Path,
) -> None:
    # A 768 KiB tmpfs, private to this command's mount namespace, holds two checkpoints of
    # about 290 KiB: the third write fills it.
    store = tmp_path / "store"
    store.mkdir()
    config = {"out": str(tmp_path), "steps": 40, "table_rows": 2000}
    launch = [
        *(sys.executable, "-m", "psjob_runtime.launch", "--servers", "1", "--workers", "1"),
        *("--optimizer", "adam", "--timeout", "60", "--config", json.dumps(config)),
        *("--checkpoint-dir", str(store), "--checkpoint-every", "2"),
        *("--", sys.executable, str(RECORDER)),
    ]
    script = (
        'mount -t tmpfs -o size=768k psjob-full "$STORE" || exit 99\n'
        '"$@"; code=$?\n'
        'echo "=== left in the store"; find "$STORE" -mindepth 1 | sort\n'
        "exit $code\n"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", *launch],
        env={**os.environ, "STORE": str(store)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == ExitCode.RETRYABLE, output
    folder = checkpoint.step_dir(store, 6)
    assert (
        f"[server-0] psjob: checkpoint step 6 could not be written in {folder} "
        "(spec.training.checkpoint.dir): No space left on device (ENOSPC)" in output
    )
    kept = [checkpoint.step_dir(store, step) for step in (2, 4)]
    left = output.split("=== left in the store")[1].split()
    assert left == [str(path) for folder in kept for path in (folder, folder / "server-0-of-1.pt")]


class _RunsCode:
    """Unpickling this would run a shell command (a file crafted to execute code on restore)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_would_run_code_when_loaded_is_passed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, marker = tmp_path / "store", tmp_path / "code-ran"
    write_job(root, MINE, step=5)
    files = saved_servers(20, 10, 2, servers=2, step=10)
    files[1]["dense"]["values"] = _RunsCode(marker)
    for saved in files:
        checkpoint.write(root, saved["server"], 2, 10, saved, owner=MINE)
    found = checkpoint.latest(root, owner=MINE)
    assert found is not None and found.step == 5
    assert not marker.exists()
    assert f"{FILE} (UnpicklingError: Weights only load failed" in capsys.readouterr().err
