"""Recovery under a kill schedule: in place against a whole-job restart and against no failures.

One run, three jobs of the same fixed work one after another, each through the local launcher
(`python -m psjob_runtime.launch`; servers are the real `python -m psjob_runtime server`): the
ctr example's model and data (10M x 16 table, Adagrad), 2 servers + 2 workers, sync, STEPS steps
of 2,048 samples per worker, checkpoints every CHECKPOINT_EVERY steps:
1. no failures;
2. `--recovery in-place` with a server SIGKILLed every 60 s (server-1, server-0, ...) and a
   worker every 45 s (worker-1, worker-0, ...), counted from the job's first applied step; the
   workers' kills are 22.5 s later in their period so that no two kills coincide (the nearest
   are 7.5 s apart);
3. the same schedule with `--recovery restart-job` (every loss restarts the whole job from the
   newest complete checkpoint).

Goodput: the job's useful samples (steps x batch x workers, the same in every run: a replacement
resumes where the servers recorded its worker) over the launcher's wall time, start-up included.
A restart-job run still going at CAP_FACTOR x the failure-free run's time is stopped; its goodput
is then the samples its workers had reached over that time (an upper bound: the work since its
checkpoint would be done again), so the ratio to it is a lower bound.

Time back in training, for each kill of run 2:
- a worker: from the kill to its replacement's first step applied, i.e. the replacement's first
  `optimizer.step()` returned (sync: after the servers applied that round), as the replacement
  prints it: the workers run this module's `--role`, the ctr example's training loop with that
  one line added;
- a server: from the kill to its `psjob_server_updates_total` (GET /metrics) passing the value
  read just before the kill: the replacement starts from its checkpoint's count and takes the
  workers' round when they rejoin, so the first count above it is an update applied after the
  kill.

    python -m bench.runtime.recovery [--quick]   # writes bench/out/recovery.json (and each
                                                 # job's output, recovery-<job>.log)
    python -m bench.runtime.recovery_report      # its section of bench/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.runtime.jobs import ROOT, log, role_argv

SERVERS, WORKERS, BATCH, TABLE_ROWS = 2, 2, 2048, 10_000_000
TRAINING = ["--mode", "sync", "--optimizer", "adagrad", "--lr", "0.05"]
SERVER_EVERY, WORKER_EVERY, WORKER_OFFSET = 60.0, 45.0, 22.5
"""Seconds between server kills and between worker kills, and the workers' offset."""
EVAL_SAMPLES = 20_000
CAP_FACTOR = 2.0
"""A restart-job run is stopped at this many times the failure-free run's wall time."""
BACKOFF_LIMIT = 1000
"""Whole-job restarts allowed: far more than any run makes, so none gives up."""
GIVE_UP_SECONDS = 180.0
"""A killed server whose update count has not passed its value by then counts as not back."""
POLL_SECONDS = 0.05
HTTP_SECONDS = 3.0
"""How long one GET /metrics may take: a server starved of CPU answers slowly, and a client that
hangs up early makes it print a BrokenPipeError."""
LOAD_EVERY = 10.0
"""Seconds between samples of the load average while a job runs (the machine is shared)."""
FIRST_STEP = "recovery-bench: first step"
STALLED = "recovery-bench: stalled"
STALL_SECONDS = 1.0
"""A gap between two applied steps longer than this is printed (a step takes about 0.1 s): the
end of the stall a lost server causes is when training resumed."""
OUT = ROOT / "bench" / "out"
JOBS = (
    ("failure_free", "in-place", False),
    ("in_place", "in-place", True),
    ("restart_job", "restart-job", True),
)
"""(name, --recovery, killed on the schedule) of each job, in the order they run."""


@dataclass(frozen=True)
class Size:
    steps: int
    checkpoint_every: int


FULL = Size(steps=6000, checkpoint_every=500)
"""About 5 minutes without failures on 2 quiet cores (20 steps/s, 2 s per checkpoint)."""
QUICK = Size(steps=1800, checkpoint_every=300)
"""Long enough for two worker kills and one server kill."""


@dataclass(frozen=True)
class Kill:
    at: float
    """Seconds after the job's first applied step."""
    victim: str
    """The launcher's name of the process: server-1, worker-0, ..."""


def schedule(horizon: float) -> list[Kill]:
    """Every kill due before `horizon`, in time order; each role's victims alternate, 1 first."""
    servers = [
        Kill(SERVER_EVERY * n, f"server-{n % SERVERS}")
        for n in range(1, int(horizon // SERVER_EVERY) + 1)
    ]
    workers = [
        Kill(WORKER_OFFSET + WORKER_EVERY * n, f"worker-{(n + 1) % WORKERS}")
        for n in range(int((horizon - WORKER_OFFSET) // WORKER_EVERY) + 1)
        if WORKER_OFFSET + WORKER_EVERY * n < horizon
    ]
    return sorted(servers + workers, key=lambda kill: kill.at)


STARTED = re.compile(r"^\[launch\] started ((?:server|worker)-\d+) \(rank \d+\) pid (\d+)")
AGAIN = re.compile(r"^\[launch\] ((?:server|worker)-\d+) .*started it again in place as pid (\d+)")
WHOLE = re.compile(r"^\[launch\] .*restarting the whole job")
FIRST = re.compile(rf"^\[worker-(\d+)\] {FIRST_STEP} (\d+) at ([\d.]+)")
PROGRESS = re.compile(r"^\[worker-(\d+)\] progress worker \d+\s+step (\d+)")
RESTORED = re.compile(r"^\[(server-\d+)\] server \d+: restored checkpoint step (\d+)")
AUC = re.compile(r"test AUC ([\d.]+), hidden model's AUC ([\d.]+)")


def parse_updates(metrics: str) -> int | None:
    """psjob_server_updates_total from a server's GET /metrics text."""
    for line in metrics.splitlines():
        if line.startswith("psjob_server_updates_total{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def _updates(port: int) -> int | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=HTTP_SECONDS
        ) as answer:
            return parse_updates(answer.read(1 << 16).decode(errors="replace"))
    except (OSError, ValueError):
        return None


def _progress_port(pid: int) -> int | None:
    """The server's PSJOB_PROGRESS_PORT, from its environment (the launcher chose it)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"PSJOB_PROGRESS_PORT="):
            return int(entry.split(b"=", 1)[1])
    return None


def _gone(pid: int) -> bool:
    """Dead: reaped, or a zombie the launcher has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class Job:
    """One job through the launcher: its output read as it comes, its processes' pids and
    ports followed, and, with kills, the schedule carried out and each return timed."""

    def __init__(self, name: str, size: Size, recovery: str, kills: bool, cap: float | None):
        self.name, self.size, self.recovery, self.cap = name, size, recovery, cap
        self.kills_on = kills
        self.in_place = kills and recovery == "in-place"
        """Whether each kill's return is timed (a whole restart's is read from first_steps)."""
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.training = threading.Event()
        self.began = 0.0
        """time.time() at the launch: every time in the record is seconds after it."""
        self.trained_from: float | None = None
        self.pids: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.kills: list[dict[str, Any]] = []
        self.first_steps: list[dict[str, Any]] = []
        self.reached = [0] * WORKERS
        """Each worker's latest step, from its progress lines (for a stopped run)."""
        self.restarts = 0
        self.stopped_at: float | None = None
        """Seconds from the launch to the cap's stop (None: the job ended by itself)."""
        self.watchers: list[threading.Thread] = []

    def _now(self) -> float:
        return time.time() - self.began

    def run(self, checkpoints: Path) -> dict[str, Any]:
        config = {
            "tableRows": TABLE_ROWS,
            "batchSize": BATCH,
            "steps": self.size.steps,
            "evalSamples": EVAL_SAMPLES,
        }
        argv = [
            *(sys.executable, "-m", "psjob_runtime.launch"),
            *("--servers", str(SERVERS), "--workers", str(WORKERS), *TRAINING),
            *("--checkpoint-dir", str(checkpoints)),
            *("--checkpoint-every", str(self.size.checkpoint_every)),
            *("--recovery", self.recovery, "--backoff-limit", str(BACKOFF_LIMIT)),
            *("--config", json.dumps(config), "--", *role_argv("recovery")),
        ]
        output = OUT / f"recovery-{self.name}.log"
        self.began, started, load = time.time(), time.monotonic(), os.getloadavg()[0]
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        killer = threading.Thread(target=self._kill_on_schedule, daemon=True)
        stopper = threading.Timer(self.cap or 0.0, self._stop, args=(proc, started))
        if self.kills_on:
            killer.start()
        if self.cap is not None:
            stopper.start()
        assert proc.stdout is not None
        lines: list[str] = []
        loads: list[float] = []
        with output.open("w") as copy:
            for line in proc.stdout:
                copy.write(f"{self._now():8.2f} {line}")
                lines.append(line)
                self._follow(line.rstrip("\n"))
                if self._now() >= LOAD_EVERY * len(loads):
                    loads.append(os.getloadavg()[0])
        code = proc.wait()
        wall = time.monotonic() - started
        self.done.set()
        stopper.cancel()
        for thread in [killer, *self.watchers]:
            if thread.is_alive():
                thread.join()
        text = "".join(lines)
        auc = AUC.search(text)
        samples = self.size.steps * BATCH * WORKERS
        if self.stopped_at is not None:
            samples = sum(step + 1 for step in self.reached) * BATCH
        return {
            "recovery": self.recovery if self.kills_on else None,
            "exit_code": code,
            "finished": code == 0,
            "stopped_at": self.stopped_at,
            "wall_seconds": wall,
            "first_step_after": self.trained_from,
            "useful_samples": samples,
            "goodput": samples / (self.stopped_at or wall),
            "whole_restarts": self.restarts,
            "recovered_in_place": _count(AGAIN, text),
            "test_auc": float(auc.group(1)) if auc else None,
            "hidden_auc": float(auc.group(2)) if auc else None,
            "kills": self.kills,
            "first_steps": self.first_steps,
            "load_before": load,
            "load_after": os.getloadavg()[0],
            "load_mean": sum(loads) / len(loads) if loads else load,
            "log": str(output.relative_to(ROOT)),
            "tail": lines[-15:] if code else [],
        }

    def _stop(self, proc: subprocess.Popen[str], started: float) -> None:
        """The cap: SIGTERM to the launcher, which stops every process."""
        self.stopped_at = time.monotonic() - started
        log(f"recovery: {self.name} still running at {self.stopped_at:.0f} s: stopping it")
        proc.send_signal(signal.SIGTERM)

    def _follow(self, line: str) -> None:
        """Keep what the line says about pids, restarts, first steps and progress."""
        again = AGAIN.match(line)
        if found := STARTED.match(line) or again:
            name, pid = found.group(1), int(found.group(2))
            with self.lock:
                self.pids[name] = pid
                if name.startswith("server") and name not in self.ports:
                    port = _progress_port(pid)
                    if port:
                        self.ports[name] = port
                if again:
                    self._respawned(name)
        elif WHOLE.match(line):
            self.restarts += 1
        elif found := FIRST.match(line):
            worker, step, at = int(found.group(1)), int(found.group(2)), float(found.group(3))
            when = at - self.began
            with self.lock:
                self.first_steps.append({"worker": worker, "step": step, "at": when})
                if self.trained_from is None:
                    self.trained_from = when
                    self.training.set()
                for kill in reversed(self.kills if self.in_place else []):
                    if kill["victim"] == f"worker-{worker}" and kill["killed_at"] < when:
                        if kill["back_after"] is None:
                            kill["back_after"] = when - kill["killed_at"]
                            kill["resumed_at_step"] = step
                        break
        elif found := PROGRESS.match(line):
            self.reached[int(found.group(1))] = int(found.group(2))
        elif found := RESTORED.match(line):
            with self.lock:
                for kill in reversed(self.kills):
                    if kill["victim"] == found.group(1):
                        kill.setdefault("restored_step", int(found.group(2)))
                        break

    def _respawned(self, name: str) -> None:
        """The launcher started `name` again: time it on that name's newest kill (lock held)."""
        for kill in reversed(self.kills):
            if kill["victim"] == name:
                if kill["respawned_after"] is None:
                    kill["respawned_after"] = self._now() - kill["killed_at"]
                return

    def _kill_on_schedule(self) -> None:
        while not self.training.wait(0.5):
            if self.done.is_set():
                return
        origin = time.monotonic()
        for kill in schedule(horizon=24 * 3600):
            if self.done.wait(max(0.0, origin + kill.at - time.monotonic())):
                return
            self._kill(kill)

    def _kill(self, kill: Kill) -> None:
        with self.lock:
            pid, port = self.pids.get(kill.victim), self.ports.get(kill.victim)
            steps = list(self.reached)
        if pid is None:
            return
        role = kill.victim.split("-")[0]
        before = _updates(port) if role == "server" and self.in_place and port else None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        record: dict[str, Any] = {
            "victim": kill.victim,
            "role": role,
            "scheduled": kill.at,
            "killed_at": self._now(),
            "pid": pid,
            "workers_at_step": steps,
            "respawned_after": None,
            "back_after": None,
        }
        if before is not None:
            record["updates_before"] = before
        with self.lock:
            self.kills.append(record)
        log(f"recovery: {self.name}: killed {kill.victim} (pid {pid}) at {kill.at:.1f} s")
        if role == "server" and self.in_place and port and before is not None:
            watcher = threading.Thread(
                target=self._watch_server, args=(record, pid, port, before), daemon=True
            )
            self.watchers.append(watcher)
            watcher.start()

    def _watch_server(self, record: dict[str, Any], pid: int, port: int, before: int) -> None:
        """Time the killed server's endpoint coming back and its count passing `before`."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        while not self.done.is_set() and time.monotonic() < deadline:
            updates = _updates(port)
            if updates is not None:
                with self.lock:
                    if record.get("answered_after") is None:
                        record["answered_after"] = self._now() - record["killed_at"]
                    if updates > before:
                        record["back_after"] = self._now() - record["killed_at"]
                        return
            time.sleep(POLL_SECONDS)


def _count(pattern: re.Pattern[str], text: str) -> int:
    return sum(1 for line in text.splitlines() if pattern.match(line))


def role_main() -> None:
    """A worker: the ctr example's training loop; its first applied step printed with the time."""
    import psjob_runtime
    import torch
    from psjob_runtime.examples.ctr import CtrConfig, CtrModel, Synthetic, evaluate
    from torch import nn

    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(CtrConfig)
    torch.manual_seed(config.seed)
    data = Synthetic(config)
    model = CtrModel(session.embedding(config.table_rows, config.dim), config.dim)
    optimizer = session.optimizer(model)
    loss_fn = nn.BCEWithLogitsLoss()
    last = time.monotonic()
    for step in range(session.start_step, config.steps):
        dense, ids, clicks = data.batch(session.worker_index, step, config.batch_size)
        optimizer.zero_grad()
        loss = loss_fn(model(dense, ids), clicks)
        loss.backward()
        optimizer.step()
        now = time.monotonic()
        if step == session.start_step:
            print(f"{FIRST_STEP} {step} at {time.time():.3f}", flush=True)
        elif now - last > STALL_SECONDS:
            print(
                f"{STALLED} {now - last:.2f} s before step {step} at {time.time():.3f}", flush=True
            )
        last = now
        session.report(step=step, loss=loss.item(), samples=config.batch_size)
    session.quiesce()
    if session.worker_index == 0:
        trained, hidden = evaluate(model, data, config.eval_samples)
        print(f"worker 0: test AUC {trained:.4f}, hidden model's AUC {hidden:.4f}", flush=True)
    session.finish()


Save = Callable[[dict[str, Any]], None]
"""Writes the record so far (record_run's)."""


def measure(quick: bool, done: Save) -> dict[str, Any]:
    """Run the three jobs; `done` gets the record so far after each one (a run of most of an
    hour should not lose its finished jobs to a crash or a kill)."""
    size = QUICK if quick else FULL
    jobs: dict[str, dict[str, Any]] = {}
    record = {
        "servers": SERVERS,
        "workers": WORKERS,
        "batch_per_worker": BATCH,
        "table_rows": TABLE_ROWS,
        "steps": size.steps,
        "checkpoint_every": size.checkpoint_every,
        "server_every": SERVER_EVERY,
        "worker_every": WORKER_EVERY,
        "worker_offset": WORKER_OFFSET,
        "cap_factor": CAP_FACTOR,
        "jobs": jobs,
    }
    cap: float | None = None
    for name, recovery, kills in JOBS:
        capped = cap if name == "restart_job" else None
        log(f"recovery: {name}, {size.steps} steps" + (f", cap {capped:.0f} s" if capped else ""))
        folder = Path(tempfile.mkdtemp(prefix=f"psjob-recovery-{name}-"))
        try:
            job = Job(name, size, recovery, kills, capped)
            jobs[name] = job.run(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result = jobs[name]
        log(
            f"recovery: {name}: exit {result['exit_code']} in {result['wall_seconds']:.0f} s, "
            f"{len(result['kills'])} kills, {result['recovered_in_place']} in place, "
            f"{result['whole_restarts']} whole restarts"
        )
        if name == "failure_free":
            cap = CAP_FACTOR * result["wall_seconds"]
        done(record)
    return record


def record_run(
    module: str, quick: bool, out: Path, measure: Callable[[Save], object]
) -> dict[str, Any]:
    """Run `measure`, writing `out` (the command, the machine, the record so far) whenever it
    hands over its record: after each job, so a run of most of an hour keeps its finished jobs."""
    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result: dict[str, Any] = {
        "command": shlex.join(["python", "-m", module, *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {**describe(), "torch": torch.__version__},
        "load_before": os.getloadavg(),
    }

    def save(record: dict[str, Any]) -> None:
        result.update(recovery=record, load_after=os.getloadavg())
        result["wall_seconds"] = time.monotonic() - started
        out.write_text(json.dumps(result, indent=1) + "\n")

    measure(save)
    log(f"wrote {out} in {result['wall_seconds']:.0f} s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime.recovery", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.steps} steps, not {FULL.steps}"
    )
    parser.add_argument("--out", type=Path, default=OUT / "recovery.json")
    args = parser.parse_args()
    record_run(
        "bench.runtime.recovery", args.quick, args.out, lambda save: measure(args.quick, save)
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--role"]:
        role_main()
    else:
        sys.exit(main())
