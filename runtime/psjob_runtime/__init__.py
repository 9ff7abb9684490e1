"""psjob_runtime: parameter servers and the worker API for PSJob training jobs.

Workers call `init()` and train ordinary PyTorch models; servers run
`python -m psjob_runtime server`. See docs/runtime.md.

The worker API is imported lazily: the local launcher imports this package too, and it has no
use for torch, whose import costs seconds of CPU in every process.
"""

from typing import TYPE_CHECKING, Any

from psjob_runtime.errors import ContractError, ExitCode, PeerLostError

if TYPE_CHECKING:
    from psjob_runtime.worker import ParameterServerOptimizer, WorkerSession, init

_LAZY = {"ParameterServerOptimizer", "WorkerSession", "init"}

__all__ = [
    "ContractError",
    "ExitCode",
    "ParameterServerOptimizer",
    "PeerLostError",
    "WorkerSession",
    "init",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from psjob_runtime import worker

        return getattr(worker, name)
    raise AttributeError(f"module 'psjob_runtime' has no attribute {name!r}")
