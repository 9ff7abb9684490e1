"""The local launcher: bad settings and bad user config stop the job at once with code 78; a
launcher that dies (SIGKILL) or loses its terminal (SIGHUP) leaves no process running."""

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from psjob_runtime import checkpoint
from psjob_runtime.errors import ExitCode
from psjob_runtime.launch import STOP_GRACE_SECONDS
from psjob_runtime.server import SETTLE_LIMIT_SECONDS

from tests.runtime.jobs import RECORDER, launch, pid_of, wait_for_text

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


def test_the_stop_grace_outlasts_a_servers_settle_limit_on_sigterm() -> None:
    # A server stopped by the launcher may settle its round for SETTLE_LIMIT_SECONDS, then
    # writes its final checkpoint: killed sooner, it would lose that checkpoint.
    assert STOP_GRACE_SECONDS > SETTLE_LIMIT_SECONDS + 10


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its reaper has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def survivors(pids: list[int], limit: float) -> list[int]:
    """The pids still running after up to `limit` seconds of waiting for them to end."""
    deadline = time.monotonic() + limit
    while (running := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running


def hanging_job(folder: Path, *options: str) -> list[str]:
    """A job whose worker 0 sleeps after step 3: no process writes output any more, so none of
    them would notice a dead launcher by a broken pipe."""
    config = {"out": str(folder), "steps": 100000, "hang_worker": 0, "hang_after_step": 3}
    return [
        *(sys.executable, "-m", "psjob_runtime.launch", "--servers", "1", "--workers", "2"),
        *("--timeout", "60", "--config", json.dumps(config), *options),
        *("--", sys.executable, str(RECORDER)),
    ]


NAMES = ("server-0", "worker-0", "worker-1")


def stop(launcher: subprocess.Popen[bytes], children: list[int]) -> None:
    """Whatever a failed test left running."""
    launcher.kill()
    for pid in survivors(children, limit=0):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_sigkilled_launchers_children_stop_and_the_server_writes_its_checkpoint(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    # Relative, as on a laptop: the launcher makes it absolute, as the spec requires.
    checkpointing = ("--checkpoint-dir", "store", "--checkpoint-every", "100000")
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(
            hanging_job(tmp_path, *checkpointing),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    children: list[int] = []
    try:
        text = wait_for_text(log, "[worker-0] step 3 done")
        children = [pid_of(text, name) for name in NAMES]
        launcher.kill()
        assert launcher.wait(10) == -signal.SIGKILL
        assert survivors(children, limit=15) == [], log.read_text()
    finally:
        stop(launcher, children)
    # Each child got SIGTERM: the server settled its round and wrote a final checkpoint.
    found = checkpoint.latest(store, owner="local/local")
    assert found is not None and found.step >= 3


@pytest.mark.slow
def test_a_closed_terminal_stops_every_process_with_the_sighup_code(tmp_path: Path) -> None:
    terminal, launcher_side = os.openpty()

    def own_terminal() -> None:  # the launcher leads a session whose terminal is this pty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    launcher = subprocess.Popen(
        hanging_job(tmp_path),
        stdin=launcher_side,
        stdout=launcher_side,
        stderr=launcher_side,
        start_new_session=True,
        preexec_fn=own_terminal,
    )
    os.close(launcher_side)
    children: list[int] = []
    try:
        shown = ""
        deadline = time.monotonic() + 180
        while "[worker-0] step 3 done" not in shown:
            assert time.monotonic() < deadline, shown
            if select.select([terminal], [], [], 1.0)[0]:
                shown += os.read(terminal, 65536).decode(errors="replace")
        children = [pid_of(shown, name) for name in NAMES]
        os.close(terminal)  # the terminal window closes: the kernel hangs up its session
        assert launcher.wait(STOP_GRACE_SECONDS + 10) == 128 + signal.SIGHUP
        assert survivors(children, limit=5) == []
    finally:
        stop(launcher, children)
