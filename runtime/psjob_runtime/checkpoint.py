"""Checkpoint files: each server's share of the job's state, written atomically, read back safely.

Layout under spec.training.checkpoint.dir (a volume every server can read):

    step-000000200/server-0-of-2.pt    server 0's dense slice, table shards, optimizer state,
    step-000000200/server-1-of-2.pt    its step and every worker's position, for 2 servers

A file is written to a temporary file of its own (unique even for two jobs whose servers share
a pid, each pid 1 in its container), fsynced and renamed, so a reader never sees half of one under
its final name. A failed write (a full disk) removes its temporary file and stops the server with
the retryable exit code, naming the folder and the errno. Each file names the job that wrote it
(`owner`, namespace/name). A checkpoint is usable when every server of one count wrote its file
for the same step and each file opens, belongs to this job and holds what it says it holds
(checkpoint_contents); otherwise the reader says why in a log line and falls back to the previous
step. Each server keeps its newest KEEP files.
"""

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from psjob_runtime.checkpoint_contents import (
    FORMAT as FORMAT,  # re-exported: the server writes it into each file
)
from psjob_runtime.checkpoint_contents import (
    UnusableCheckpointError,
    check_file,
    check_together,
)
from psjob_runtime.contract import JobContext
from psjob_runtime.errors import ContractError, ExitCode, PsjobError
from psjob_runtime.log import log

KEEP = 3
"""Files each server keeps: the newest may be incomplete if a peer died while writing."""

_STEP_DIR = re.compile(r"^step-(\d+)$")
_FILE = re.compile(r"^server-(\d+)-of-(\d+)\.pt$")
_TEMPORARY_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
"""What open() would give a new file: mkstemp's 0600 would keep other readers (a backup, a
server of another uid sharing the volume) out of files that used to be readable."""


class CheckpointMismatchError(PsjobError):
    """The checkpoint holds another model than the workers build: a restart cannot fix it."""

    exit_code = ContractError.exit_code


class CheckpointWriteError(PsjobError):
    """A checkpoint could not be written (a full disk, a lost volume): the job restarts from its
    last complete checkpoint, where the write may succeed (older files pruned, space freed)."""

    exit_code = ExitCode.RETRYABLE


def owner_of(ctx: JobContext) -> str:
    """The job a process's files belong to: namespace/name, which no two live jobs share."""
    return f"{ctx.namespace}/{ctx.job_name}"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:09d}"


def file_name(server: int, num_servers: int) -> str:
    return f"server-{server}-of-{num_servers}.pt"


def _temporary_prefix(owner: str, server: int) -> str:
    """Names of this job's server's temporary files; hashed, since a name may hold any text."""
    tag = hashlib.sha256(owner.encode()).hexdigest()[:12]
    return f".psjob-{tag}-server-{server}-of-"


def check_writable(root: Path) -> None:
    """Create the directory; stop with exit code 78 naming the setting when it cannot be used."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ContractError(f"spec.training.checkpoint.dir {str(root)!r}: {error}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ContractError(
            f"spec.training.checkpoint.dir {str(root)!r} is not writable by this process "
            "(mount a writable volume there)"
        )


def remove_leftovers(root: Path, owner: str, server: int) -> None:
    """Delete the temporary files this server of this job left when it died while writing.

    Only its own (by name): another job sharing the directory, or another server of this one,
    may be writing theirs right now.
    """
    prefix = _temporary_prefix(owner, server)
    for folder in root.iterdir():
        if not _STEP_DIR.match(folder.name) or not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(prefix) and entry.name.endswith(_TEMPORARY_SUFFIX):
                entry.unlink(missing_ok=True)
                log(f"removed {entry}, left by an interrupted checkpoint write")


class _Sink:
    """torch.save's output file, keeping the first OSError a write raised.

    torch.save reports a failed write as an enforce message that names neither the file nor the
    errno (a full disk reads `unexpected pos 576 vs 534`); the kept error says what happened.
    """

    def __init__(self, file: IO[bytes]):
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.file.flush()


def write(
    root: Path,
    server: int,
    num_servers: int,
    step: int,
    state: Mapping[str, Any],
    *,
    owner: str,
) -> Path:
    """Write one server's file for `step` atomically (own temporary file, fsync, rename).

    Raises CheckpointWriteError (retryable) naming the folder and the errno when the file system
    refuses, with the temporary file removed.
    """
    folder = step_dir(root, step)
    final = folder / file_name(server, num_servers)
    temporary: Path | None = None
    sink: _Sink | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(
            prefix=f"{_temporary_prefix(owner, server)}{num_servers}-",
            suffix=_TEMPORARY_SUFFIX,
            dir=folder,
        )
        temporary = Path(name)
        os.fchmod(descriptor, _FILE_MODE)
        with os.fdopen(descriptor, "wb") as out:
            sink = _Sink(out)
            _save({**state, "owner": owner}, sink)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
        _fsync(folder)
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a folder made for this file alone
            folder.rmdir()
        cause = error if isinstance(error, OSError) else (sink.error if sink else None)
        if cause is None:
            raise
        raise CheckpointWriteError(_describe_write_error(step, folder, cause)) from error
    _prune(root, server, num_servers)
    return final


def _save(state: Mapping[str, Any], sink: _Sink) -> None:
    # Without the zip records' CRC32: computing it triples the write time of a large table, and
    # torch.load never checks it. Truncated and partial files are still refused on load.
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(dict(state), sink)  # type: ignore[arg-type]
    finally:
        torch.serialization.set_crc32_options(crc32)


def _describe_write_error(step: int, folder: Path, error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0, f"errno {error.errno}")
    return (
        f"checkpoint step {step} could not be written in {folder} "
        f"(spec.training.checkpoint.dir): {error.strerror or error} ({code}); "
        "its temporary file is removed, and the restarted job resumes from the last complete "
        "checkpoint (free space on that volume, or give it more)"
    )


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _prune(root: Path, server: int, num_servers: int) -> None:
    """Delete this server's files beyond its newest KEEP, and folders left empty."""
    mine = sorted(
        (int(match.group(1)), entry)
        for entry in root.iterdir()
        if (match := _STEP_DIR.match(entry.name))
        and (entry / file_name(server, num_servers)).exists()
    )
    for _, folder in mine[:-KEEP]:
        (folder / file_name(server, num_servers)).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another server's file is still there
            folder.rmdir()


@dataclass(frozen=True)
class Checkpoint:
    """A usable checkpoint: its step and every server's file, opened memory-mapped."""

    step: int
    folder: Path
    files: list[dict[str, Any]]

    @property
    def num_servers(self) -> int:
        return len(self.files)


def _complete_counts(folder: Path) -> list[int]:
    """Server counts with a file for every server in `folder`, newest job (most files) first."""
    found: dict[int, set[int]] = {}
    for entry in folder.iterdir():
        if match := _FILE.match(entry.name):
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    return sorted((k for k, seen in found.items() if seen == set(range(k))), reverse=True)


def _open_all(folder: Path, count: int, step: int, owner: str) -> list[dict[str, Any]] | None:
    """Every server's file of `count` servers, checked; None (and a log line) if one is unusable."""
    files = []
    for server in range(count):
        path = folder / file_name(server, count)
        try:
            loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            files.append(check_file(loaded, owner, server, count, step))
        except UnusableCheckpointError as error:
            log(f"checkpoint {path} is unusable ({error}); falling back to the previous checkpoint")
            return None
        except Exception as error:  # unreadable: truncated, partial, not a torch file
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            log(
                f"checkpoint {path} is unusable ({type(error).__name__}: {reason}); "
                "falling back to the previous checkpoint"
            )
            return None
    try:
        check_together(files)
    except UnusableCheckpointError as error:
        log(f"checkpoint {folder} is unusable ({error}); falling back to the previous checkpoint")
        return None
    return files


def latest(root: Path, *, owner: str) -> Checkpoint | None:
    """The newest usable checkpoint of job `owner` under `root`, with a log line for each one
    passed over (incomplete, unreadable, another job's, or holding other than it says)."""
    if not root.is_dir():
        return None
    steps = sorted(
        (
            (int(m.group(1)), entry)
            for entry in root.iterdir()
            if (m := _STEP_DIR.match(entry.name))
        ),
        reverse=True,
    )
    for step, folder in steps:
        counts = _complete_counts(folder)
        if not counts:
            log(
                f"checkpoint {folder} is incomplete (not every server wrote its file); "
                "falling back to the previous one"
            )
            continue
        for count in counts:
            files = _open_all(folder, count, step, owner)
            if files is not None:
                return Checkpoint(step, folder, files)
    return None
