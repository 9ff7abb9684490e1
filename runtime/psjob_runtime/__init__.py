"""psjob_runtime: parameter servers and the worker API for PSJob training jobs.

Workers call `init()` and train ordinary PyTorch models; servers run
`python -m psjob_runtime server`. See docs/runtime.md.
"""

from psjob_runtime.errors import ContractError, ExitCode, PeerLostError
from psjob_runtime.worker import ParameterServerOptimizer, WorkerSession, init

__all__ = [
    "ContractError",
    "ExitCode",
    "ParameterServerOptimizer",
    "PeerLostError",
    "WorkerSession",
    "init",
]
