"""The wire protocol between workers and servers.

A request is one message (tag 1) that starts with a header of HEADER_ROOM int64 slots, the
first eleven of them used. A dense gradient travels in that same message, right behind the header
(`PUSH_PULL`): the server posts one receive sized for its slice's largest request, the transport
accepts a shorter message into it, so a header-only request and a whole push each wake the server
once.
Payloads whose size the server cannot know before the header (INIT before the slice exists, ids
and rows of the embedding tables, the parts of a gradient pushed during backward) follow their
header as separate messages (tag 2) whose byte counts the header announces. Replies (tag 3) carry
no header: the worker knows what it asked for and so what size comes back.

The server trusts nothing in a header: it checks every field against what the op must carry for
its slice and its tables before it allocates or receives anything (server.py), so a peer that
sends other types or sizes than its header says is refused with a message instead of being read
as something else; a message longer than the receive the server posted for it is refused by the
transport before a byte of it is read (transport.py).

Version 2 added the sparse-table ops, RESUME and the three `extra` header fields; version 3 the
two payload byte counts; version 4 the gradient inside the PUSH_PULL request and the gradient
parts pushed during backward (PUSH_PART, PULL_AFTER_PARTS); version 5 the progress field: a
request to server 0 may carry the worker's latest report (progress_block) behind its inline
part, and the field says so (0 or progress_block.BYTES); version 6 DECLARE_DYNAMIC, the
declaration of a dynamic table, whose SPARSE_PULL and SPARSE_PUSH requests carry any int64 id
but dynamic_table.RESERVED_ID (the marker of a short message) to the server it routes to;
version 7 REJOIN, LEAVE, and TCP connections per worker and server instead of one gloo world.
Headers are received into at least HEADER_ROOM slots so that a peer of a later version with a
longer header is told about the version mismatch instead of aborting the server.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

from psjob_runtime.errors import ExitCode, PeerLostError, PsjobError

PROTOCOL_VERSION = 7
HEADER_LEN = 11
HEADER_ROOM = 16
"""Slots of a server's header receive buffer: room for a longer header of a later version; a
request with an inline payload puts it behind these slots (REQUEST_PAYLOAD_OFFSET floats)."""
REQUEST_PAYLOAD_OFFSET = 2 * HEADER_ROOM
"""Where an inline payload starts in a request, counted in float32 elements."""

DYNAMIC_OPTIONS = 3
"""int64 values of a DECLARE_DYNAMIC's second payload."""

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
    """The slice's gradient (inline, behind the header), get the parameters for the next step."""
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
    PUSH_PART = 9
    """numel of the slice, extra (offset, length); payload float32 gradient of slice elements
    offset..offset+length, sent while backward still runs. A step's parts come from the end of
    the slice to its start, each ending where the previous one began; no reply."""
    PULL_AFTER_PARTS = 10
    """numel of the slice, no payload: the parts since the last push, covering the slice, are
    this step's gradient; the reply is as for PUSH_PULL. A PUSH_PULL instead discards them."""
    DECLARE_DYNAMIC = 11
    """numel 0, extra (table, dim); payloads float32 [init_scale] and int64 [admit_after,
    ttl_steps, max_rows_per_server] (0: unset). Declares a dynamic table (dynamic_table.py) as
    DECLARE_TABLE declares a fixed one; its sparse requests are those of a fixed table, with
    numel at most dynamic_shard.MAX_REQUEST_IDS."""
    REJOIN = 12
    """numel 0, step: the step of this worker's next push. Sent to a server that replaced a
    lost one, after worker 0's INIT and the table declarations: the server continues counting
    from the workers' positions (see consistency.Gate.adopt); no reply."""
    LEAVE = 13
    """numel 0. The worker is stopping (SIGTERM: its pod deleted by a scale-down, a drain): no
    round or staleness bound waits for it from now on; it takes part again if a process of its
    index connects later. Sent on a new connection, which replaces the worker's current one; no
    reply."""


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


INLINE_OPS = frozenset({Op.PUSH_PULL})
"""Ops whose payload travels in the request message itself, behind the header."""


PROGRESS_OPS = frozenset({Op.PUSH_PULL, Op.PULL_AFTER_PARTS, Op.DONE})
"""Ops whose request to server 0 may carry the worker's latest report: the requests every step
(and the last one) sends anyway, so a report never costs a message of its own."""


def expected_payload_bytes(op: Op, numel: int, dim: int) -> tuple[int, int]:
    """What a well-formed request of `op` carries: float32 values and gradients, int64 ids.

    `dim` is extra1: a table's row width, or a PUSH_PART's length."""
    if op in (Op.INIT, Op.PUSH_PULL):
        return 4 * numel, 0
    if op is Op.PUSH_PART:
        return 4 * dim, 0
    if op is Op.DECLARE_TABLE:
        return 4, 0
    if op is Op.DECLARE_DYNAMIC:
        return 4, 8 * DYNAMIC_OPTIONS
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
    progress: int = 0
    """Bytes of the progress block behind the request's inline part (0: none)."""

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
            self.progress,
        )
        return out

    @staticmethod
    def decode(raw: torch.Tensor) -> "Header":
        """The header in `raw`; the version first, so that any other version is named as such."""
        version, op, worker, step, numel, e0, e1, e2, b0, b1, progress = raw[:HEADER_LEN].tolist()
        if version != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"peer speaks protocol version {version}, this process {PROTOCOL_VERSION}: "
                "run the same psjob_runtime version in every pod"
            )
        try:
            return Header(Op(op), worker, step, numel, (e0, e1, e2), (b0, b1), progress)
        except ValueError:
            raise ProtocolError(f"unknown op code {op}") from None


def new_header_buffer() -> torch.Tensor:
    return torch.zeros(HEADER_LEN, dtype=torch.int64)


def new_request_buffer(numel: int, pin_memory: bool = False) -> torch.Tensor:
    """A float32 request with room for the header in front of `numel` inline payload values."""
    return torch.zeros(REQUEST_PAYLOAD_OFFSET + numel, pin_memory=pin_memory)


def request_header(request: torch.Tensor) -> torch.Tensor:
    """The header slots of a request buffer, as int64."""
    return request[:REQUEST_PAYLOAD_OFFSET].view(torch.int64)


def request_payload(request: torch.Tensor) -> torch.Tensor:
    """The inline payload of a request buffer."""
    return request[REQUEST_PAYLOAD_OFFSET:]


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
