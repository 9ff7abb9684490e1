"""The memory a server may fill: the bound it checks announced model and table sizes against.

A server learns its slice's size from worker 0's INIT and each table's shape from a declaration.
Allocating whatever a header announces would let one wrong number (a bug, a corrupted message, a
hostile peer) ask for terabytes and end the server in the kernel's OOM killer or an allocator
traceback. So before it allocates, the server compares what the new state needs (values plus
optimizer state) with the most this process could ever get, and refuses a request that cannot
fit with a message naming both sizes (exit 78: the job's model does not fit its servers).
"""

import ctypes
import os
from pathlib import Path

from psjob_runtime.errors import ExitCode, PsjobError
from psjob_runtime.training import OptimizerName, OptimizerSettings

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


class CapacityError(PsjobError):
    """The model or a table needs more memory than this server can have (a config error)."""

    exit_code = ExitCode.CONFIG_ERROR


def memory_limit_bytes() -> int:
    """The smaller of the machine's physical memory and the container's cgroup limit."""
    limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def dense_copies(settings: OptimizerSettings) -> int:
    """Float32 tensors the size of the slice that the server keeps: values and optimizer state."""
    if settings.name is OptimizerName.ADAM:
        return 3
    if settings.name is OptimizerName.ADAGRAD:
        return 2
    return 2 if settings.momentum else 1


def sparse_copies(settings: OptimizerSettings) -> int:
    """Float32 tensors the size of a table shard: rows and row-wise optimizer state."""
    return {OptimizerName.SGD: 1, OptimizerName.ADAGRAD: 2, OptimizerName.ADAM: 3}[settings.name]


def check_fits(what: str, elements: int, copies: int, held: int, limit: int) -> None:
    """Raise CapacityError unless `elements` float32 values (times `copies`) fit beside `held`."""
    needed = 4 * elements * copies
    if held + needed > limit:
        raise CapacityError(
            f"{what} needs {needed / 1e9:.1f} GB of values and optimizer state, beside "
            f"{held / 1e9:.1f} GB already held; this server may use {limit / 1e9:.1f} GB "
            "(physical memory or the container's limit): add servers, give them more memory, or "
            "shrink the model"
        )


_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_frees() -> None:
    """Make glibc serve every allocation of 1 MiB or more by mmap, and give it back on free.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB), after
    which blocks below it come from the heap, whose freed holes stay resident. A dynamic table
    grows its pools by doubling and frees the old ones, so with the moving threshold every old
    copy of a pool below 32 MiB would stay in the resident memory. A fixed threshold keeps the
    server's RSS at what its tables hold. No effect without glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass
