"""Exit codes and the exceptions that carry them.

The operator's ExitCode restart policy decides from a process's exit code alone whether a failure
is worth a restart, so every way this runtime can stop maps to exactly one code. An uncaught
exception of one of these types ends the process with its code (see `install_exit_hook`).
"""

import os
import sys
import traceback
from enum import IntEnum
from types import TracebackType


class ExitCode(IntEnum):
    """What the operator and the launcher read from a process's exit status."""

    SUCCESS = 0
    USER_ERROR = 1
    """An exception in user code: permanent, a restart would fail the same way."""
    RETRYABLE = 75
    """A peer was lost or did not answer in time (EX_TEMPFAIL): restart the job."""
    CONFIG_ERROR = 78
    """Malformed contract environment or configuration (EX_CONFIG): permanent."""
    TERMINATED = 143
    """A server stopped by SIGTERM after writing its final checkpoint (128 + 15, as a shell
    reports a death by SIGTERM): retryable, the restarted job resumes from that checkpoint."""


class PsjobError(Exception):
    """Base of the runtime's own failures; `exit_code` says how the process should end."""

    exit_code = ExitCode.USER_ERROR


class ContractError(PsjobError):
    """The environment contract or PSJOB_TRAINING is missing or malformed."""

    exit_code = ExitCode.CONFIG_ERROR


class PeerLostError(PsjobError):
    """A peer died, closed its connection or stayed silent past the timeout."""

    exit_code = ExitCode.RETRYABLE


def exit_code_for(error: BaseException) -> int:
    """The exit code for an uncaught exception: its own for ours, 1 for everything else."""
    if isinstance(error, PsjobError):
        return int(error.exit_code)
    return int(ExitCode.USER_ERROR)


def _exit_hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    # The real stderr, not sys.stderr: torch.distributed wraps the hook and points sys.stderr at
    # a buffer it would print only after this hook returns, which os._exit below never does.
    stderr = sys.__stderr__ or sys.stderr
    if isinstance(error, PsjobError):
        # Our errors already say what happened and what to do; a traceback only hides that.
        print(f"psjob: {error}", file=stderr)
    else:
        traceback.print_exception(kind, error, tb, file=stderr)
    sys.stdout.flush()
    stderr.flush()
    # os._exit: gloo's background threads can keep a normal interpreter shutdown waiting on a
    # peer that is already gone, and that would turn a clear failure into a hang.
    os._exit(exit_code_for(error))


def install_exit_hook() -> None:
    """Make uncaught exceptions end the process with the exit code the operator expects."""
    sys.excepthook = _exit_hook
