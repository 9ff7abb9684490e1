"""Point-to-point messages over torch.distributed gloo, with the rules that keep gloo healthy.

- Messages are chunked below 2 GiB: gloo counts bytes in an int and overflows past that.
- At most one operation is outstanding per peer and direction: several outstanding isend/irecv to
  one peer can hang gloo (pytorch/gloo#308). A `Transfer` posts its chunks one after another.
- Every wait has an explicit timeout, and every gloo failure becomes a PeerLostError that names
  the peer (exit code 75), so a dead or silent peer ends this process instead of hanging it.
- Joining waits, within the timeout, for server 0's DNS name: in a fresh pod it may not resolve
  for the first seconds.
"""

import datetime
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from psjob_runtime.contract import JobContext
from psjob_runtime.errors import PeerLostError

MAX_CHUNK_BYTES = 1 << 30
"""Largest single gloo message; well below the 2 GiB where gloo's byte count overflows."""

_DNS_RETRY_SECONDS = 0.5


def wait_for_dns(host: str, timeout: float) -> None:
    """Return once `host` resolves; raise PeerLostError if it still does not after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.getaddrinfo(host, None)
            return
        except socket.gaierror as error:
            if time.monotonic() >= deadline:
                raise PeerLostError(
                    f"server 0's address {host!r} (MASTER_ADDR) did not resolve within "
                    f"{timeout:.0f} s: {error}"
                ) from None
            time.sleep(_DNS_RETRY_SECONDS)


def join_group(ctx: JobContext) -> None:
    """Join the job's gloo process group: servers take ranks 0..S-1, workers S..S+W-1."""
    timeout = ctx.training.timeout_seconds
    wait_for_dns(ctx.master.host, timeout)
    try:
        dist.init_process_group(
            backend="gloo",
            init_method=f"tcp://{ctx.master.host}:{ctx.master.port}",
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    except (RuntimeError, ValueError) as error:
        raise PeerLostError(
            f"could not join the job's process group at {ctx.master} as rank {ctx.rank} within "
            f"{timeout} s (is every server and worker running?): {error}"
        ) from None


def _chunks(tensor: torch.Tensor, chunk_bytes: int) -> list[torch.Tensor]:
    flat = tensor.view(-1)
    per_chunk = max(1, chunk_bytes // flat.element_size())
    return [flat[start : start + per_chunk] for start in range(0, max(flat.numel(), 1), per_chunk)]


def _gloo_reason(error: RuntimeError) -> str:
    """Gloo's message without its source location and its generic advice."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"^\[[^\]]*\.cc:\d+\]\s*", "", text)
    return text.split(". This is typically")[0]


@dataclass
class Transfer:
    """One message to or from one peer, sent as consecutive chunks, one in flight at a time."""

    post: Callable[[torch.Tensor], dist.Work]
    chunks: list[torch.Tensor]
    peer_name: str
    what: str
    timeout: datetime.timedelta
    _next: int = 0
    _work: dist.Work | None = field(default=None, repr=False)

    def start(self) -> "Transfer":
        self._post_next()
        return self

    def _post_next(self) -> None:
        chunk = self.chunks[self._next]
        self._next += 1
        try:
            self._work = self.post(chunk)
        except RuntimeError as error:
            raise self._lost(error) from None

    def wait(self) -> None:
        while self._work is not None:
            try:
                self._work.wait(self.timeout)
            except RuntimeError as error:
                raise self._lost(error) from None
            self._work = None
            if self._next < len(self.chunks):
                self._post_next()

    def _lost(self, error: RuntimeError) -> PeerLostError:
        reason = _gloo_reason(error)
        if "Timed out" in reason:
            return PeerLostError(
                f"{self.peer_name} did not answer within {self.timeout.total_seconds():.0f} s "
                f"({self.what}); it is stuck, gone or too slow for timeoutSeconds: {reason}"
            )
        return PeerLostError(f"lost {self.peer_name} ({self.what}): {reason}")


@dataclass
class ByteCounts:
    """Bytes handed to gloo by kind, each way: what benchmarks and tests measure on the wire.

    The kind is the tag a message travels under, except where the sender says otherwise: a
    request that carries its payload behind its header counts the two apart (see `send`)."""

    sent: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)

    def add(self, into: dict[int, int], tag: int, nbytes: int) -> None:
        into[tag] = into.get(tag, 0) + nbytes


@dataclass(frozen=True)
class Transport:
    """Sends and receives whole messages to named peers of the job."""

    ctx: JobContext
    chunk_bytes: int = MAX_CHUNK_BYTES
    counts: ByteCounts = field(default_factory=ByteCounts)

    @property
    def timeout(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.ctx.training.timeout_seconds)

    def send(
        self,
        tensor: torch.Tensor,
        dst: int,
        tag: int,
        what: str,
        count_as: Sequence[tuple[int, int]] | None = None,
    ) -> Transfer:
        """Start sending `tensor` to rank `dst`; call `.wait()` before touching it again.

        `count_as`: (kind, bytes) pairs the message's bytes count as in `counts` (default: all
        of them under `tag`)."""
        group = dist.group.WORLD
        assert group is not None, "join_group() must run first"
        for kind, nbytes in count_as or [(tag, tensor.numel() * tensor.element_size())]:
            self.counts.add(self.counts.sent, kind, nbytes)
        return Transfer(
            post=lambda chunk: group.send([chunk], dst, tag),
            chunks=_chunks(tensor, self.chunk_bytes),
            peer_name=self.ctx.describe_rank(dst),
            what=what,
            timeout=self.timeout,
        ).start()

    def recv(self, tensor: torch.Tensor, src: int, tag: int, what: str) -> Transfer:
        """Start receiving into `tensor` from rank `src`; `.wait()` before reading it."""
        group = dist.group.WORLD
        assert group is not None, "join_group() must run first"
        self.counts.add(self.counts.received, tag, tensor.numel() * tensor.element_size())
        return Transfer(
            post=lambda chunk: group.recv([chunk], src, tag),
            chunks=_chunks(tensor, self.chunk_bytes),
            peer_name=self.ctx.describe_rank(src),
            what=what,
            timeout=self.timeout,
        ).start()


def wait_all(transfers: Iterable[Transfer]) -> None:
    for transfer in transfers:
        transfer.wait()
