"""The wire protocol between workers and servers.

Every request is a fixed-size header (eight int64 values) followed, for ops that carry data, by
one payload message of the length the header announces (chunked by the transport below 2 GiB).
Replies carry no header: the worker knows what it asked for and so what size comes back. Headers
and payloads use different tags so that a receiver can never mistake one for the other.

The op code leaves room for more ops (sparse rows, checkpoints) without changing the framing.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

PROTOCOL_VERSION = 1
HEADER_LEN = 8

TAG_HEADER = 1
TAG_PAYLOAD = 2
TAG_REPLY = 3


class Op(IntEnum):
    INIT = 1
    """Worker 0 offers its initial parameters; a server without state adopts them."""
    PULL = 2
    """Ask for the current parameters of the server's slice."""
    PUSH_PULL = 3
    """Send a gradient for the slice, get the parameters to use for the next step."""
    DONE = 4
    """The worker has finished; the server replies with its statistics (see ServerStats)."""


class ProtocolError(RuntimeError):
    """A message that cannot come from a well-behaved peer of the same version."""


@dataclass(frozen=True)
class Header:
    op: Op
    worker: int
    step: int
    numel: int

    def encode(self, out: torch.Tensor) -> torch.Tensor:
        # Through numpy: one slice assignment, no temporary tensor on the per-step path.
        out.numpy()[:] = (
            PROTOCOL_VERSION,
            int(self.op),
            self.worker,
            self.step,
            self.numel,
            0,
            0,
            0,
        )
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "Header":
        version, op, worker, step, numel = raw[:5].tolist()
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"peer speaks protocol version {version}, this process {PROTOCOL_VERSION}: "
                "run the same psjob_runtime version in every pod"
            )
        try:
            return Header(Op(op), worker, step, numel)
        except ValueError:
            raise ProtocolError(f"unknown op code {op}") from None


def new_header_buffer() -> torch.Tensor:
    return torch.zeros(HEADER_LEN, dtype=torch.int64)


@dataclass(frozen=True)
class ServerStats:
    """What a server tells a finishing worker: the numbers tests and users check."""

    updates: int
    """Gradients (sync: averaged rounds) applied to the slice so far."""
    max_lead: int
    """The most steps any worker was allowed ahead of the slowest active one (ssp bound)."""

    def encode(self, out: torch.Tensor) -> torch.Tensor:
        out.zero_()
        out[0] = self.updates
        out[1] = self.max_lead
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "ServerStats":
        return ServerStats(updates=int(raw[0]), max_lead=int(raw[1]))
