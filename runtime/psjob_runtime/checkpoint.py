"""Checkpoint files: each server's share of the job's state, written atomically, read back safely.

Layout under spec.training.checkpoint.dir (a volume every server can read):

    step-000000200/server-0-of-2.pt    server 0's dense slice, table shards, optimizer state,
    step-000000200/server-1-of-2.pt    its step and every worker's position, for 2 servers

A file is written to a temporary name, fsynced and renamed, so a reader never sees half of one
under its final name. A checkpoint is usable when every server of one count wrote its file for
the same step and each file opens and has the expected contents; otherwise the reader says why
in a log line and falls back to the previous step. Each server keeps its newest KEEP files.
"""

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from psjob_runtime.errors import ContractError, PsjobError
from psjob_runtime.log import log

FORMAT = 1
KEEP = 3
"""Files each server keeps: the newest may be incomplete if a peer died while writing."""

_STEP_DIR = re.compile(r"^step-(\d+)$")
_FILE = re.compile(r"^server-(\d+)-of-(\d+)\.pt$")


class CheckpointMismatchError(PsjobError):
    """The checkpoint holds another model than the workers build: a restart cannot fix it."""

    exit_code = ContractError.exit_code


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:09d}"


def file_name(server: int, num_servers: int) -> str:
    return f"server-{server}-of-{num_servers}.pt"


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


def write(root: Path, server: int, num_servers: int, step: int, state: Mapping[str, Any]) -> Path:
    """Write one server's file for `step` atomically (temporary file, fsync, rename)."""
    folder = step_dir(root, step)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / file_name(server, num_servers)
    temporary = folder / f".{final.name}.{os.getpid()}.tmp"
    # Without the zip records' CRC32: computing it triples the write time of a large table, and
    # torch.load never checks it. Truncated and partial files are still refused on load.
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(dict(state), str(temporary))
    finally:
        torch.serialization.set_crc32_options(crc32)
    _fsync(temporary)
    os.replace(temporary, final)
    _fsync(folder)
    _prune(root, server, num_servers)
    return final


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


def _open(path: Path, server: int, num_servers: int, step: int) -> dict[str, Any]:
    loaded = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if not isinstance(loaded, dict) or loaded.get("format") != FORMAT:
        raise ValueError(f"not a psjob checkpoint of format {FORMAT}")
    expected = {"server": server, "servers": num_servers, "step": step}
    for key, value in expected.items():
        if loaded.get(key) != value:
            raise ValueError(f"{key} is {loaded.get(key)!r}, expected {value}")
    return loaded


def _complete_counts(folder: Path) -> list[int]:
    """Server counts with a file for every server in `folder`, newest job (most files) first."""
    found: dict[int, set[int]] = {}
    for entry in folder.iterdir():
        if match := _FILE.match(entry.name):
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    return sorted((k for k, seen in found.items() if seen == set(range(k))), reverse=True)


def latest(root: Path) -> Checkpoint | None:
    """The newest usable checkpoint under `root`, with a log line for each one passed over."""
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
            files = []
            for server in range(count):
                path = folder / file_name(server, count)
                try:
                    files.append(_open(path, server, count, step))
                except Exception as error:  # any unreadable file: corrupt, truncated, foreign
                    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    log(
                        f"checkpoint {path} is unusable ({type(error).__name__}: {reason}); "
                        "falling back to the previous checkpoint"
                    )
                    break
            else:
                return Checkpoint(step, folder, files)
    return None
