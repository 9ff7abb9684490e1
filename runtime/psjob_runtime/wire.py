"""The wire protocol between workers and servers.

Every request is a fixed-size header (ten int64 values) followed, for ops that carry data, by
payload messages whose byte counts the header announces (chunked by the transport below 2 GiB).
Replies carry no header: the worker knows what it asked for and so what size comes back. Headers
and payloads use different tags so that a receiver can never mistake one for the other.

The server trusts nothing in a header: it checks every field against what the op must carry for
its slice and its tables before it allocates or receives anything (server.py), so a peer that
sends other types or sizes than its header says is refused with a message instead of being read
as something else. What no check can prevent: a message longer than the receive the server posted
for it aborts the process inside gloo (docs/security.md).

Version 2 added the sparse-table ops, RESUME and the three `extra` header fields; version 3 the
two payload byte counts. Headers are received into HEADER_ROOM slots so that a peer of a later
version with a longer header is told about the version mismatch instead of aborting the server.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

from psjob_runtime.errors import ExitCode, PeerLostError, PsjobError

PROTOCOL_VERSION = 3
HEADER_LEN = 10
HEADER_ROOM = 16
"""Slots of a server's header receive buffer: room for a longer header of a later version."""

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


class ProtocolError(PeerLostError):
    """A request that no well-behaved peer of the same version sends (exit code 75).

    The server stops serving that peer as if it were lost: in sync and ssp mode it writes its
    checkpoint and exits for a restart, in async mode it drops the peer and the others go on.
    """


class ProtocolVersionError(PsjobError):
    """A peer speaks another protocol version: the job's pods run different psjob_runtime
    versions, which a restart would not change (exit code 78)."""

    exit_code = ExitCode.CONFIG_ERROR


def nbytes(tensor: torch.Tensor) -> int:
    """The bytes a tensor puts on the wire: what a header announces for it."""
    return tensor.numel() * tensor.element_size()


def expected_payload_bytes(op: Op, numel: int, dim: int) -> tuple[int, int]:
    """What a well-formed request of `op` carries: float32 values and gradients, int64 ids."""
    if op in (Op.INIT, Op.PUSH_PULL):
        return 4 * numel, 0
    if op is Op.DECLARE_TABLE:
        return 4, 0
    if op is Op.SPARSE_PULL:
        return 8 * numel, 0
    if op is Op.SPARSE_PUSH:
        return 8 * numel, 4 * numel * dim
    return 0, 0


@dataclass(frozen=True)
class Header:
    op: Op
    worker: int
    step: int
    numel: int
    extra: tuple[int, int, int] = (0, 0, 0)
    payload: tuple[int, int] = (0, 0)
    """Bytes of the payload messages that follow, as the sender counted them."""

    def encode(self, out: torch.Tensor) -> torch.Tensor:
        # Through numpy: one slice assignment, no temporary tensor on the per-step path.
        out.numpy()[:HEADER_LEN] = (
            PROTOCOL_VERSION,
            int(self.op),
            self.worker,
            self.step,
            self.numel,
            *self.extra,
            *self.payload,
        )
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "Header":
        """The header in `raw`; the version first, so that any other version is named as such."""
        version, op, worker, step, numel, e0, e1, e2, b0, b1 = raw[:HEADER_LEN].tolist()
        if version != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"peer speaks protocol version {version}, this process {PROTOCOL_VERSION}: "
                "run the same psjob_runtime version in every pod"
            )
        try:
            return Header(Op(op), worker, step, numel, (e0, e1, e2), (b0, b1))
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
    refused_non_finite: int = 0
    """Pushes refused because they held NaN or Inf (spec.training.refuseNonFinite)."""

    def encode(self, out: torch.Tensor) -> torch.Tensor:
        out.zero_()
        out[0] = self.updates
        out[1] = self.max_lead
        out[2] = self.refused_non_finite
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "ServerStats":
        return ServerStats(
            updates=int(raw[0]), max_lead=int(raw[1]), refused_non_finite=int(raw[2])
        )


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
