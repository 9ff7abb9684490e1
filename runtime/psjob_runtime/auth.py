"""Mutual proof that both ends of a connection hold the job's secret, before any request.

A server's port accepts any process that can reach it. So every connection starts with a
handshake: the worker says who it is and sends a fresh challenge; the server answers with its
own challenge and HMAC-SHA256 over the job's secret (PSJOB_SECRET), the job's identity, both
ranks and the worker's challenge; the worker checks that and answers the server's challenge the
same way. A server reads no request from a connection, and a worker trusts no parameters from
one, until the other end has proven itself. A stranger is refused and its connection closed;
the job goes on (the real process at that rank keeps its own connection).

What this does not hide: the bytes after the handshake (parameters, gradients, ids) travel in
the clear and are not signed, so an attacker who can read or inject on the pod network still can.
docs/security.md says what to combine it with (the per-job NetworkPolicy, an encrypting CNI).
"""

import hashlib
import hmac
import secrets
import struct

import torch

from psjob_runtime.contract import MAX_WORKERS, JobContext
from psjob_runtime.errors import PeerLostError
from psjob_runtime.transport import Connection
from psjob_runtime.wire import PROTOCOL_VERSION, ProtocolVersionError

TAG_AUTH = 15
"""Separate from the wire protocol's tags (wire.py) so no request can be read as a proof."""

NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
HELLO = struct.Struct("<qq")
"""The worker's protocol version and rank, in front of its challenge."""
ANSWER = struct.Struct("<qq")
"""The server's verdict on the hello (ACCEPTED or why not) and its protocol version."""
ACCEPTED, OTHER_VERSION, NOT_A_WORKER = 0, 1, 2


class AuthenticationError(PeerLostError):
    """A peer could not prove it holds the job's secret.

    Retryable on purpose: a job whose pods disagree on the secret (the Secret was replaced while
    it ran) agrees again once every pod restarts.
    """


def _proof(ctx: JobContext, prover: int, verifier: int, nonce: bytes) -> bytes:
    message = f"psjob-auth-v2|{ctx.namespace}/{ctx.job_name}|{prover}>{verifier}|".encode()
    return hmac.new(ctx.secret, message + nonce, hashlib.sha256).digest()


def _send(conn: Connection, data: bytes, what: str) -> None:
    conn.send_frame(torch.frombuffer(bytearray(data), dtype=torch.uint8), TAG_AUTH, what)


def _recv(conn: Connection, size: int, what: str) -> bytes:
    room = torch.zeros(size, dtype=torch.uint8)
    if conn.recv_frame(room, TAG_AUTH, what) != size:
        raise AuthenticationError(f"{conn.peer_name} sent a short {what}")
    return bytes(room.numpy().tobytes())


def _refused(who: str, ctx: JobContext) -> AuthenticationError:
    return AuthenticationError(
        f"{who} could not prove it holds this job's secret ({ctx.job_name}'s PSJOB_SECRET): a "
        "process outside the job, or the job's pods disagree on the secret; nothing was served "
        "to it"
    )


def prove_to_server(ctx: JobContext, conn: Connection, server: int) -> None:
    """The worker's side: say who it is, check the server's proof, prove itself."""
    mine = secrets.token_bytes(NONCE_BYTES)
    _send(conn, HELLO.pack(PROTOCOL_VERSION, ctx.rank) + mine, "hello")
    answer = _recv(conn, ANSWER.size + NONCE_BYTES + PROOF_BYTES, "authentication proof")
    verdict, version = ANSWER.unpack(answer[: ANSWER.size])
    if verdict == OTHER_VERSION:
        raise ProtocolVersionError(
            f"server {server} speaks protocol version {version}, this worker {PROTOCOL_VERSION}: "
            "run the same psjob_runtime version in every pod"
        )
    if verdict != ACCEPTED:
        raise AuthenticationError(
            f"server {server} refused rank {ctx.rank}: it is not a worker rank of this job "
            "(PSJOB_NUM_SERVERS or PSJOB_NUM_WORKERS differ between the pods)"
        )
    theirs = answer[ANSWER.size : ANSWER.size + NONCE_BYTES]
    proof = answer[ANSWER.size + NONCE_BYTES :]
    if not hmac.compare_digest(proof, _proof(ctx, server, ctx.rank, mine)):
        raise _refused(ctx.describe_rank(server), ctx)
    _send(conn, _proof(ctx, ctx.rank, server, theirs), "authentication proof")


def admit_worker(ctx: JobContext, conn: Connection) -> int:
    """The server's side: the worker's rank once it has proven it holds the job's secret."""
    hello = _recv(conn, HELLO.size + NONCE_BYTES, "hello")
    version, rank = HELLO.unpack(hello[: HELLO.size])
    theirs = hello[HELLO.size :]
    last = ctx.num_servers + MAX_WORKERS - 1
    if version != PROTOCOL_VERSION or not ctx.num_servers <= rank <= last:
        verdict = OTHER_VERSION if version != PROTOCOL_VERSION else NOT_A_WORKER
        _send(conn, ANSWER.pack(verdict, PROTOCOL_VERSION).ljust(ANSWER.size + 64, b"\0"), "no")
        raise AuthenticationError(
            f"{conn.peer_name} says protocol version {version} and rank {rank}: this server "
            f"speaks {PROTOCOL_VERSION} and serves worker ranks {ctx.num_servers}..{last}"
        )
    mine = secrets.token_bytes(NONCE_BYTES)
    proof = _proof(ctx, ctx.rank, rank, theirs)
    _send(conn, ANSWER.pack(ACCEPTED, PROTOCOL_VERSION) + mine + proof, "authentication proof")
    answer = _recv(conn, PROOF_BYTES, "authentication proof")
    if not hmac.compare_digest(answer, _proof(ctx, rank, ctx.rank, mine)):
        raise _refused(f"{conn.peer_name} at {ctx.describe_rank(rank)}", ctx)
    return int(rank)
