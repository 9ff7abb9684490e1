"""The wire protocol between workers and servers.

Every request is a fixed-size header (eight int64 values) followed, for ops that carry data, by
payload messages whose lengths the header announces (chunked by the transport below 2 GiB).
Replies carry no header: the worker knows what it asked for and so what size comes back. Headers
and payloads use different tags so that a receiver can never mistake one for the other.

Version 2 added the sparse-table ops, RESUME and the three `extra` header fields that they and
INIT use; the framing of version 1 is unchanged.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

PROTOCOL_VERSION = 2
HEADER_LEN = 8

TAG_HEADER = 1
TAG_PAYLOAD = 2
TAG_REPLY = 3


class Op(IntEnum):
    INIT = 1
    """Worker 0 offers its initial parameters (extra[0]: the model's total element count); a
    server without state adopts them, a server restored from a checkpoint checks the sizes."""
    PULL = 2
    """Ask for the current parameters of the server's slice."""
    PUSH_PULL = 3
    """Send a gradient for the slice, get the parameters to use for the next step."""
    DONE = 4
    """The worker has finished; the server replies with its statistics (see ServerStats)."""
    RESUME = 5
    """Where this worker resumes: the server replies with a `ResumePoint`."""
    DECLARE_TABLE = 6
    """numel rows, extra (table, dim); payload float32 [init_scale]. Worker 0's declaration
    creates the table's shard; the others' (and a restored shard) must match it."""
    SPARSE_PULL = 7
    """numel ids, extra (table, dim); payload int64 global ids; reply float32 rows x dim."""
    SPARSE_PUSH = 8
    """numel ids, extra (table, dim); payloads int64 ids, float32 rows x dim gradients; no
    reply: the gradients join the worker's next PUSH_PULL, so the mode governs both."""


class ProtocolError(RuntimeError):
    """A message that cannot come from a well-behaved peer of the same version."""


@dataclass(frozen=True)
class Header:
    op: Op
    worker: int
    step: int
    numel: int
    extra: tuple[int, int, int] = (0, 0, 0)

    def encode(self, out: torch.Tensor) -> torch.Tensor:
        # Through numpy: one slice assignment, no temporary tensor on the per-step path.
        out.numpy()[:] = (
            PROTOCOL_VERSION,
            int(self.op),
            self.worker,
            self.step,
            self.numel,
            *self.extra,
        )
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "Header":
        version, op, worker, step, numel, *extra = raw.tolist()
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"peer speaks protocol version {version}, this process {PROTOCOL_VERSION}: "
                "run the same psjob_runtime version in every pod"
            )
        try:
            return Header(Op(op), worker, step, numel, (extra[0], extra[1], extra[2]))
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


@dataclass(frozen=True)
class ResumePoint:
    """A server's answer to RESUME: the step this worker continues from, and from what."""

    step: int
    """0 on a fresh start; else the worker's position saved in the checkpoint."""
    checkpoint_step: int
    """The checkpoint the server restored (-1: none)."""

    def encode(self, out: torch.Tensor) -> torch.Tensor:
        out.zero_()
        out[0] = self.step
        out[1] = self.checkpoint_step
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "ResumePoint":
        return ResumePoint(step=int(raw[0]), checkpoint_step=int(raw[1]))
