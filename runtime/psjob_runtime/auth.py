"""Mutual proof that every peer holds the job's secret, before any request is served.

The rendezvous (torch's TCPStore on server 0) and gloo accept any process that can reach them and
names a free rank: on their own they let a stranger read the model and push gradients into it.
So right after joining, each worker and each server answer a fresh challenge of the other with
HMAC-SHA256 over the job's secret (PSJOB_SECRET), the job's identity and both ranks. A server
reads no header from a worker, and a worker trusts no parameters from a server, until that peer
has proven itself; a stranger at a job's rank ends the job with a message naming the rank, and a
restart (exit 75) lets the real process take its place again.

What this does not hide: the bytes after the handshake (parameters, gradients, ids) travel in
the clear and are not signed, so an attacker who can read or inject on the pod network still can.
docs/security.md says what to combine it with (the per-job NetworkPolicy, an encrypting CNI).
"""

import hashlib
import hmac
import secrets

import torch

from psjob_runtime.contract import JobContext
from psjob_runtime.errors import PeerLostError
from psjob_runtime.transport import Transport, join_group, wait_all

TAG_AUTH = 15
"""Separate from the wire protocol's tags (wire.py) so no request can be read as a proof."""

NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size


class AuthenticationError(PeerLostError):
    """A peer at one of the job's ranks could not prove it holds the job's secret.

    Retryable on purpose: a stranger that took a rank has displaced the job's own process, which
    a restart brings back; a job whose pods disagree on the secret (the Secret was replaced while
    it ran) agrees again once every pod restarts.
    """


def _proof(ctx: JobContext, prover: int, verifier: int, nonce: bytes) -> bytes:
    message = f"psjob-auth-v1|{ctx.namespace}/{ctx.job_name}|{prover}>{verifier}|".encode()
    return hmac.new(ctx.secret, message + nonce, hashlib.sha256).digest()


def _bytes(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.numpy().tobytes())


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _check(ctx: JobContext, peer: int, proof: torch.Tensor, nonce: bytes) -> None:
    if not hmac.compare_digest(_bytes(proof), _proof(ctx, peer, ctx.rank, nonce)):
        raise AuthenticationError(
            f"{ctx.describe_rank(peer)} could not prove it holds this job's secret "
            f"({ctx.job_name}'s PSJOB_SECRET): a process outside the job took its rank, or the "
            "job's pods disagree on the secret; nothing was served to it"
        )


def authenticate(ctx: JobContext, transport: Transport) -> None:
    """Prove this process to every peer it talks to and check their proofs; raise on a stranger.

    Servers talk to every worker and workers to every server. Each side first sends its own
    challenge, then answers the peer's: three small messages per pair and direction, every
    transfer with the job's timeout, one in flight per peer and direction as gloo requires.
    """
    peers = (
        [ctx.worker_rank(index) for index in range(ctx.num_workers)]
        if ctx.rank < ctx.num_servers
        else list(range(ctx.num_servers))
    )
    mine = {peer: secrets.token_bytes(NONCE_BYTES) for peer in peers}
    theirs = {peer: torch.empty(NONCE_BYTES, dtype=torch.uint8) for peer in peers}
    wait_all(
        [transport.send(_tensor(mine[p]), p, TAG_AUTH, "authentication challenge") for p in peers]
        + [transport.recv(theirs[p], p, TAG_AUTH, "authentication challenge") for p in peers]
    )
    proofs = {peer: torch.empty(PROOF_BYTES, dtype=torch.uint8) for peer in peers}
    answers = {p: _tensor(_proof(ctx, ctx.rank, p, _bytes(theirs[p]))) for p in peers}
    wait_all(
        [transport.send(answers[p], p, TAG_AUTH, "authentication proof") for p in peers]
        + [transport.recv(proofs[p], p, TAG_AUTH, "authentication proof") for p in peers]
    )
    for peer in peers:
        _check(ctx, peer, proofs[peer], mine[peer])


def join_job(ctx: JobContext) -> None:
    """Join the job's process group, then prove and check identities before any request."""
    join_group(ctx)
    authenticate(ctx, Transport(ctx))
