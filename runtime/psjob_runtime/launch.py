"""Run a whole job as local processes with the pods' environment contract (like torchrun).

    python -m psjob_runtime.launch --servers 2 --workers 2 --mode sync -- \\
        python -m psjob_runtime.examples.digits

Servers run `python -m psjob_runtime server`, workers run the given command. Output is prefixed
with the process's name; worker 0's progress line is redrawn in place on a terminal, and the
job's progress is served by server 0 at the URL printed at start.

A process that is lost (killed by a signal, exit 75 or a server's 143) is started again in place
under the same rank while the others run on (`--recovery in-place`, the default), as the operator
recreates one pod; one whose replacement dies again within KEEPS_DYING_SECONDS falls back to a
restart of the whole job, from the checkpoint, at most `--backoff-limit` times. With
`--recovery restart-job` every loss restarts the whole job. The job succeeds when every worker
does, as under the operator: a server lost after that is not started again (a replacement would
wait for workers that finished with its predecessor), and one still running
SERVERS_FINISH_SECONDS later is stopped. A permanent failure (an exception in
user code, a configuration error) stops all others and its exit code becomes the launcher's (a
signal death N becomes 128+N, as in a shell); Ctrl-C, SIGTERM and SIGHUP (a closed terminal)
stop everything. On Linux the children are tied to the launcher: if it dies, even by SIGKILL,
each one gets SIGTERM (servers then write their final checkpoint), so none is left training for
nobody.
"""

import argparse
import contextlib
import ctypes
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, NoReturn

from pydantic import ValidationError

from psjob_runtime import contract as c
from psjob_runtime.errors import ExitCode
from psjob_runtime.progress import PROGRESS_PREFIX
from psjob_runtime.training import TrainingSettings

STOP_GRACE_SECONDS = 30.0
"""SIGTERM to SIGKILL when stopping: a server on SIGTERM may wait up to its settle limit
(server.SETTLE_LIMIT_SECONDS, 10 s) for the round in progress and then writes its final
checkpoint, so give it what Kubernetes gives a pod by default. (Not derived from that constant:
server.py imports torch, which the launcher never loads; a test keeps the two in order.)"""
KEEPS_DYING_SECONDS = 30.0
"""A process started again in place that is lost again this soon falls back to a whole restart."""
SERVERS_FINISH_SECONDS = 5.0
"""Once every worker has finished, how long the servers get to end on their own (they write their
final checkpoint and exit within a second) before they are stopped: a server started again in
place after a worker finished never hears from that worker, and would wait for it."""
CAUSE_GRACE_SECONDS = 2.0
"""How long a lost-peer exit waits for the peer's own exit, which names the real cause."""
_EXIT_MEANINGS = {
    int(ExitCode.USER_ERROR): "an exception in user code",
    int(ExitCode.RETRYABLE): "retryable: a peer was lost or timed out",
    int(ExitCode.CONFIG_ERROR): "configuration error",
}


_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when the thread that started it ends."""


@dataclass(frozen=True)
class ProcessPlan:
    name: str
    rank: int
    argv: list[str]
    env: dict[str, str]


def free_ports(host: str, count: int) -> list[int]:
    """Ports the OS says are free now (held open together so that they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def plan_job(
    servers: int,
    workers: int,
    training: TrainingSettings,
    worker_argv: list[str],
    name: str = "local",
    host: str = "127.0.0.1",
    base_env: dict[str, str] | None = None,
) -> list[ProcessPlan]:
    """Every process of a local job with the same contract variables the operator renders."""
    ports = free_ports(host, 2 * servers)
    ports, progress_ports = ports[:servers], ports[servers:]
    addrs = ",".join(f"{host}:{port}" for port in ports)
    shared = dict(os.environ if base_env is None else base_env)
    shared.update(
        {
            c.ENV_JOB_NAME: name,
            c.ENV_NAMESPACE: "local",
            c.ENV_NUM_SERVERS: str(servers),
            c.ENV_NUM_WORKERS: str(workers),
            c.ENV_SERVER_ADDRS: addrs,
            c.ENV_MASTER_ADDR: host,
            c.ENV_MASTER_PORT: str(ports[0]),
            c.ENV_WORLD_SIZE: str(servers + workers),
            c.ENV_TRAINING: training.to_json(),
            c.ENV_RESTART_COUNT: shared.get(c.ENV_RESTART_COUNT, "0"),
            # A new secret per job, as the operator makes one per PSJob (auth.py).
            c.ENV_SECRET: secrets.token_hex(32),
            "PYTHONUNBUFFERED": "1",
        }
    )
    plans = []
    server_argv = [sys.executable, "-m", "psjob_runtime", "server"]
    for role, count, argv in (("server", servers, server_argv), ("worker", workers, worker_argv)):
        for index in range(count):
            rank = index if role == "server" else servers + index
            env = dict(shared)
            env.update({c.ENV_ROLE: role, c.ENV_REPLICA_INDEX: str(index), c.ENV_RANK: str(rank)})
            env[c.ENV_PROGRESS_PORT] = str(progress_ports[index]) if role == "server" else "0"
            plans.append(ProcessPlan(f"{role}-{index}", rank, list(argv), env))
    return plans


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    meaning = _EXIT_MEANINGS.get(code)
    return f"exited with code {code}" + (f" ({meaning})" if meaning else "")


def shell_exit_code(returncode: int) -> int:
    """Popen's returncode as a shell reports it: a death by signal N is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def progress_url(plans: list[ProcessPlan]) -> str:
    """Where server 0 of a planned job answers GET /progress."""
    (server0,) = [plan for plan in plans if plan.name == "server-0"]
    host = server0.env[c.ENV_MASTER_ADDR]
    return f"http://{host}:{server0.env[c.ENV_PROGRESS_PORT]}/progress"


class Console:
    """Prefixed output from many processes; worker 0's progress line is redrawn on a tty."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.live = out.isatty()
        self._progress_shown = False

    def line(self, source: str, text: str) -> None:
        if self.live and text.startswith(PROGRESS_PREFIX):
            if source != "worker-0":
                return
            self._write(f"\r\033[K[{source}] {text}")
            self._progress_shown = True
        else:
            if self._progress_shown:
                self._write("\n")
                self._progress_shown = False
            self._write(f"[{source}] {text}\n")

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except OSError:
            # The terminal closed (EIO) or a pipe's reader left (EPIPE). Nobody reads on, but
            # the job must still be stopped and its exit code kept, so the rest goes to
            # /dev/null (Python would fail its last flush at exit and change the code to 120).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
            self.out.flush()

    def note(self, text: str) -> None:
        self.line("launch", text)


class Recovery(StrEnum):
    IN_PLACE = "in-place"
    RESTART_JOB = "restart-job"


def is_lost(code: int) -> bool:
    """A process gone for a reason a restart can fix: a signal, a lost peer, a server's SIGTERM."""
    return code < 0 or code in (ExitCode.RETRYABLE, ExitCode.TERMINATED)


class Job:
    def __init__(
        self,
        plans: list[ProcessPlan],
        console: Console,
        recovery: Recovery = Recovery.IN_PLACE,
        backoff_limit: int = 0,
    ):
        self.plans = {plan.name: plan for plan in plans}
        self.console = console
        self.recovery = recovery
        self.backoff_limit = backoff_limit
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pumps: list[threading.Thread] = []
        self.restarts = 0
        """Whole-job restarts so far (PSJOB_RESTART_COUNT of the processes)."""
        self.recoveries: dict[str, int] = {}
        """In-place restarts so far, by process."""
        self.recovered_at: dict[str, float] = {}

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put((name, raw.decode(errors="replace").rstrip("\r\n")))

    def _spawn(self, plan: ProcessPlan) -> subprocess.Popen[bytes]:
        env = dict(plan.env, **{c.ENV_RESTART_COUNT: str(self.restarts)})
        proc = subprocess.Popen(
            plan.argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops everyone.
            preexec_fn=_tied_to(os.getpid()),
        )
        self.procs[plan.name] = proc
        return proc

    def _read(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        pump = threading.Thread(target=self._pump, args=(name, proc.stdout), daemon=True)
        pump.start()
        self.pumps.append(pump)

    def start(self) -> None:
        """Start every process, then the threads that read their output.

        In that order because the tie to the launcher runs between fork and exec, which is safe
        only while no other thread can hold a lock the child would need (the tie itself takes
        none, which is what makes starting one process again beside the pumps safe).
        """
        for plan in self.plans.values():
            proc = self._spawn(plan)
            self.console.note(f"started {plan.name} (rank {plan.rank}) pid {proc.pid}")
        for name, proc in self.procs.items():
            self._read(name, proc)

    def drain(self) -> None:
        while True:
            try:
                name, text = self.lines.get_nowait()
            except queue.Empty:
                return
            self.console.line(name, text)

    def failures(self) -> dict[str, int]:
        return {
            name: code
            for name, proc in self.procs.items()
            if (code := proc.poll()) is not None and code != 0
        }

    def telling_failure(self) -> tuple[str, int] | None:
        """The failure that names the cause, or None while every process runs or succeeded.

        A process that lost a peer exits 75 because another one failed first, often before that
        one's own exit is seen. So a lone 75 waits CAUSE_GRACE_SECONDS for a permanent failure
        (a config error, an exception in user code) to appear, and that failure wins: it is what
        the user must fix and what the job's exit code must say.
        """
        failures = self.failures()
        if not failures:
            return None
        deadline = time.monotonic() + CAUSE_GRACE_SECONDS
        while all(code == ExitCode.RETRYABLE for code in failures.values()):
            if time.monotonic() >= deadline or all(
                p.poll() is not None for p in self.procs.values()
            ):
                break
            time.sleep(0.05)
            failures = self.failures()
        permanent = {n: c for n, c in failures.items() if not is_lost(c)}
        return next(iter((permanent or failures).items()))

    def workers_succeeded(self) -> bool:
        return all(
            proc.poll() == 0
            for name, proc in self.procs.items()
            if self.plans[name].env[c.ENV_ROLE] == "worker"
        )

    def end_servers(self) -> tuple[str, int] | None:
        """After every worker succeeded: let the servers end, stop those that outlast
        SERVERS_FINISH_SECONDS, and return a server's permanent failure if one had any.

        A lost server is not started again now: nobody is left to train with it."""
        deadline = time.monotonic() + SERVERS_FINISH_SECONDS
        while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
            self.drain()
            time.sleep(0.05)
        running = [name for name, proc in self.procs.items() if proc.poll() is None]
        if running:
            self.console.note(
                f"every worker finished, and {', '.join(running)} still ran "
                f"{SERVERS_FINISH_SECONDS:.0f} s later: stopping it (a server writes its final "
                "checkpoint on SIGTERM)"
            )
            self.stop()
        failures = self.failures()
        for name in sorted(set(failures) - set(running)):
            if is_lost(failures[name]):
                self.console.note(
                    f"{name} {describe_exit(failures[name])} after every worker finished; not "
                    "started again"
                )
        permanent = {n: code for n, code in failures.items() if not is_lost(code)}
        return next(iter(permanent.items()), None)

    def stop(self) -> None:
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()

    def finish_output(self) -> None:
        for pump in self.pumps:
            pump.join(timeout=2.0)
        self.drain()

    def _recover_in_place(self, name: str, code: int) -> bool:
        """Start `name` again under its rank; False where that is not the way (see the
        module's docstring), and the whole job restarts instead."""
        if self.recovery is not Recovery.IN_PLACE:
            return False
        since = time.monotonic() - self.recovered_at.get(name, -KEEPS_DYING_SECONDS)
        if since < KEEPS_DYING_SECONDS:
            self.console.note(
                f"{name} {describe_exit(code)} {since:.0f} s after it was started again in "
                "place: falling back to restarting the whole job"
            )
            return False
        count = self.recoveries[name] = self.recoveries.get(name, 0) + 1
        proc = self._spawn(self.plans[name])
        self.recovered_at[name] = time.monotonic()
        self._read(name, proc)
        self.console.note(
            f"{name} {describe_exit(code)}; started it again in place as pid {proc.pid} "
            f"(recovery {count}); the others run on"
        )
        return True

    def _restart_all(self, name: str, code: int) -> bool:
        if self.restarts >= self.backoff_limit:
            return False
        self.restarts += 1
        self.console.note(
            f"{name} {describe_exit(code)}; restarting the whole job (restart {self.restarts} "
            f"of at most {self.backoff_limit})"
        )
        self.stop()
        self.recovered_at.clear()
        self.start()
        return True

    def run(self) -> int:
        started = time.monotonic()
        self.start()
        while True:
            self.drain()
            if self.workers_succeeded():
                return self._succeed(started)
            failure = self.telling_failure()
            if failure is not None:
                name, code = failure
                if is_lost(code) and (
                    self._recover_in_place(name, code) or self._restart_all(name, code)
                ):
                    continue
                proc = self.procs[name]
                self.console.note(
                    f"{name} (pid {proc.pid}) {describe_exit(code)}; stopping the others"
                )
                self.stop()
                self.finish_output()
                return shell_exit_code(code)
            time.sleep(0.05)

    def _succeed(self, started: float) -> int:
        """Every worker succeeded: end the servers and report the job (0 unless a server
        failed permanently, e.g. could not write its final checkpoint)."""
        failure = self.end_servers()
        self.finish_output()
        if failure is not None:
            name, code = failure
            self.console.note(f"{name} {describe_exit(code)} after every worker finished")
            return shell_exit_code(code)
        elapsed = time.monotonic() - started
        recovered = sum(self.recoveries.values())
        ended = "succeeded" if not self.failures() else "ended (every worker succeeded)"
        self.console.note(
            f"all {len(self.procs)} processes {ended} in {elapsed:.1f} s"
            + (f" (recovered in place: {recovered})" if recovered else "")
            + (f" (whole-job restarts: {self.restarts})" if self.restarts else "")
        )
        return 0


def _tied_to(launcher: int) -> Callable[[], None] | None:
    """What each child runs before exec so that it gets SIGTERM when the launcher dies.

    A parent-death signal reaches a child even when the launcher is SIGKILLed (it survives exec);
    SIGTERM rather than SIGKILL so that a server still writes its final checkpoint. It fires
    when the thread that forked the child ends: `Job.start` runs in the main thread. Linux only
    (prctl); elsewhere the children of a killed launcher live on.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def tie() -> None:
        # The launcher's own handler, inherited until exec, would swallow an early death signal.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != launcher:  # it died before the tie was made
            os._exit(128 + signal.SIGTERM)

    return tie


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m psjob_runtime.launch",
        description="Run a psjob training job as local processes.",
        epilog="example: python -m psjob_runtime.launch --servers 2 --workers 2 -- "
        "python -m psjob_runtime.examples.digits",
    )
    parser.add_argument("--servers", type=int, default=1, help="parameter servers (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--mode", choices=["sync", "async", "ssp"], default="sync")
    parser.add_argument("--staleness", type=int, help="ssp: steps a worker may lead the slowest")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adagrad"], default="sgd")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--timeout", type=int, default=300, help="peer timeout in seconds")
    parser.add_argument("--checkpoint-dir", help="servers write checkpoints here and resume")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between them")
    parser.add_argument("--config", default="{}", help="JSON object for the user's code")
    parser.add_argument("--name", default="local", help="job name (PSJOB_NAME)")
    parser.add_argument(
        "--recovery",
        choices=[r.value for r in Recovery],
        default=Recovery.IN_PLACE.value,
        help="a lost process: start it again in place (default) or restart the whole job",
    )
    parser.add_argument(
        "--backoff-limit",
        type=int,
        default=3,
        help="whole-job restarts before the launcher gives up (default 3)",
    )
    if "--" not in argv:
        parser.error("give the worker command after --, e.g. -- python train.py")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("the worker command after -- is empty")
    if args.servers < 1 or args.workers < 1:
        parser.error("--servers and --workers must be at least 1")
    return args, command


def _settings(args: argparse.Namespace) -> TrainingSettings:
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as error:
        raise ValueError(f"--config is not valid JSON: {error}") from None
    try:
        return TrainingSettings.model_validate(
            {
                "mode": args.mode,
                "staleness": args.staleness,
                "optimizer": {
                    "name": args.optimizer,
                    "lr": args.lr,
                    "momentum": args.momentum,
                    "weightDecay": args.weight_decay,
                },
                "timeoutSeconds": args.timeout,
                "checkpoint": (
                    # The spec wants an absolute path; on a laptop a relative one is natural.
                    {
                        "dir": os.path.abspath(args.checkpoint_dir),
                        "everySteps": args.checkpoint_every,
                    }
                    if args.checkpoint_dir
                    else None
                ),
                "config": config,
            }
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"invalid training settings ({where or 'mode'}): {first['msg']}") from None


def main(argv: list[str] | None = None) -> NoReturn:
    args, command = _parse(sys.argv[1:] if argv is None else argv)
    try:
        training = _settings(args)
    except ValueError as error:
        print(f"psjob launch: {error}", file=sys.stderr)
        sys.exit(ExitCode.CONFIG_ERROR)
    console = Console(sys.stdout)
    plans = plan_job(args.servers, args.workers, training, command, args.name)
    console.note(f"progress: {progress_url(plans)} (and /metrics on every server)")
    job = Job(plans, console, Recovery(args.recovery), args.backoff_limit)

    def interrupted(signum: int, _frame: object) -> None:
        console.note(f"{signal.Signals(signum).name}: stopping every process")
        job.stop()
        job.finish_output()
        sys.exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: terminal closed
        signal.signal(signum, interrupted)
    sys.exit(job.run())


if __name__ == "__main__":
    main()
