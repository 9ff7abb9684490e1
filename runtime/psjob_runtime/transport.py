"""Messages between workers and servers: one TCP connection per worker and server.

A job is not one fixed-size world: every worker connects to every server's own address
(PSJOB_SERVER_ADDRS), so a process that dies can be replaced under the same rank while the others
keep running. A replacement worker connects as its predecessor did and the servers serve it from
then on; a replacement server is reconnected to by every worker, which replays what the lost one
had not answered (`ServerChannel`). Nothing hosts a rendezvous that the job depends on.

- A message is sent as frames of at most MAX_CHUNK_BYTES, each a 16-byte frame header (magic,
  tag, byte count) and the bytes. The receiver names the tag it expects and posts room for the
  frame: another tag or a longer frame is a ProtocolError (the peer is dropped, nothing is
  written past the buffer), a shorter frame fills only the start of the room (the server's
  marker checks catch that).
- Sends complete before they return (sendall); receives complete when waited for, in the order
  they were posted per connection. A connection is used by one thread at a time (a lock).
- Every blocking call has the job's timeout; a silent peer is a PeerLostError naming it (exit
  code 75), a closed connection a ConnectionLostError, which a worker answers by reconnecting.
- Connecting waits, within the timeout, for the server's DNS name: in a fresh pod it may not
  resolve for the first seconds.
"""

import contextlib
import errno
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from psjob_runtime.contract import Address, JobContext
from psjob_runtime.errors import PeerLostError
from psjob_runtime.log import log
from psjob_runtime.wire import ProtocolError

MAX_CHUNK_BYTES = 1 << 30
"""Largest single frame: a buffer's chunks are received one by one into their own room."""

FRAME = struct.Struct("<IIq")
"""magic, tag, byte count: in front of every frame."""
FRAME_MAGIC = 0x50534A42
"""'PSJB': a stream that does not start its frames with this is not a psjob peer."""

KEEP_COPY_BYTES = 1 << 16
"""Messages up to this size are kept as copies until answered (headers: their buffers are
reused for the next request); larger ones by reference (see `Transport.send`)."""
_RETRY_SECONDS = 0.2
CONNECT_ATTEMPT_SECONDS = 3.0
"""How long one connection attempt may wait for the server's answer. A listening server answers
at once (the kernel sends a lost SYN again after 1 s); an address nothing answers holds a connect
until the kernel gives up, minutes later. A replaced server's name resolves to its predecessor's
address for a few seconds after that pod is gone (cluster DNS caches answers), so every attempt
gives up by this bound and resolves the name again."""
_SOCKET_BUFFER_BYTES = 4 << 20


class ConnectionLostError(PeerLostError):
    """The peer closed the connection or its process died: a worker reconnects (a replacement
    may take its place); with nobody to reconnect, the process exits 75 as for any lost peer."""


def wait_for_dns(host: str, deadline: float, whose: str) -> None:
    """Return once `host` resolves; raise PeerLostError if it still does not by `deadline`."""
    while True:
        try:
            socket.getaddrinfo(host, None)
            return
        except socket.gaierror as error:
            if time.monotonic() >= deadline:
                raise PeerLostError(
                    f"{whose} address {host!r} (PSJOB_SERVER_ADDRS) did not resolve in time: "
                    f"{error}"
                ) from None
            time.sleep(_RETRY_SECONDS)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER_BYTES)


def dial(address: Address, deadline: float, whose: str) -> socket.socket:
    """Connect to `address`, retrying while it does not resolve, refuses (not up yet) or does
    not answer (a stale address), and resolving its name again for each attempt."""
    wait_for_dns(address.host, deadline, whose)
    while True:
        attempt = min(CONNECT_ATTEMPT_SECONDS, deadline - time.monotonic())
        try:
            sock = socket.create_connection((address.host, address.port), timeout=max(0.1, attempt))
        except OSError as error:
            if time.monotonic() >= deadline:
                raise PeerLostError(
                    f"could not connect to {whose} at {address} in time (is it running?): {error}"
                ) from None
            time.sleep(_RETRY_SECONDS)
            continue
        _tune(sock)
        return sock


def listen(address: Address, deadline: float) -> socket.socket:
    """The server's listening socket at its own address, as the workers will dial it: the
    address its name resolves to (a loopback address on a laptop, the pod's IP), or every
    interface where that address is not one of this host's."""
    wait_for_dns(address.host, deadline, "this server's")
    family, _, _, _, where = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(where)
    except OSError as error:
        if error.errno != errno.EADDRNOTAVAIL:
            raise
        sock.bind(("", address.port))
    sock.listen(256)
    return sock


def _chunks(tensor: torch.Tensor, chunk_bytes: int) -> list[torch.Tensor]:
    flat = tensor.view(-1)
    per_chunk = max(1, chunk_bytes // flat.element_size())
    return [flat[start : start + per_chunk] for start in range(0, max(flat.numel(), 1), per_chunk)]


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """The tensor's own memory as bytes (no copy): it must be contiguous and on the CPU."""
    array: Any = tensor.detach().numpy()
    return memoryview(array).cast("B")


@dataclass
class ByteCounts:
    """Bytes put on the wire by kind, each way: what benchmarks and tests measure on the wire.

    The kind is the tag a message travels under, except where the sender says otherwise: a
    request that carries its payload behind its header counts the two apart (see `send`)."""

    sent: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """A server's connection threads add to one count."""

    def add(self, into: dict[int, int], tag: int, nbytes: int) -> None:
        with self.lock:
            into[tag] = into.get(tag, 0) + nbytes


class Connection:
    """One TCP connection to one peer, carrying frames; thread-safe through one lock."""

    def __init__(
        self,
        sock: socket.socket,
        peer_name: str,
        timeout: float,
        counts: ByteCounts | None = None,
    ):
        self.sock = sock
        self.peer_name = peer_name
        self.counts = counts
        """Where a server counts the bytes by tag (a worker's Transport counts its own)."""
        self.lock = threading.RLock()
        self.set_timeout(timeout)

    def set_timeout(self, seconds: float) -> None:
        """Bound every send and receive in the kernel (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking
        socket: a Python-level timeout would make the socket non-blocking, so that each receive
        returns whatever has arrived (and polls first), many calls per message instead of one."""
        self.timeout = seconds
        self.sock.settimeout(None)
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)

    def _lost(self, error: OSError | None, what: str) -> PeerLostError:
        if isinstance(error, TimeoutError | BlockingIOError):  # the kernel's timeout: EAGAIN
            return PeerLostError(
                f"{self.peer_name} did not answer within {self.timeout:.0f} s ({what}); it is "
                "stuck, gone or too slow for timeoutSeconds"
            )
        if error is None or error.errno == errno.EBADF:  # EBADF: a newer connection replaced it
            reason = "connection closed"
        else:
            reason = error.strerror or str(error)
        return ConnectionLostError(f"lost {self.peer_name} ({what}): {reason}")

    def send_frame(self, tensor: torch.Tensor, tag: int, what: str) -> None:
        data = _bytes_of(tensor)
        # One sendmsg for the frame header and the bytes: a small message leaves as one segment
        # and wakes the receiver once.
        parts = [memoryview(FRAME.pack(FRAME_MAGIC, tag, len(data))), data]
        with self.lock:
            try:
                while parts:
                    sent = self.sock.sendmsg(parts)
                    while parts and sent >= len(parts[0]):
                        sent -= len(parts[0])
                        parts.pop(0)
                    if parts and sent:
                        parts[0] = parts[0][sent:]
            except OSError as error:
                raise self._lost(error, what) from None
        if self.counts is not None:
            self.counts.add(self.counts.sent, tag, len(data))

    def _read_into(self, view: memoryview, what: str) -> None:
        while view:
            try:
                # MSG_WAITALL: one call for the whole rest, unless the timeout or a signal ends it
                got = self.sock.recv_into(view, len(view), socket.MSG_WAITALL)
            except InterruptedError:
                continue
            except OSError as error:
                raise self._lost(error, what) from None
            if got == 0:
                raise self._lost(None, what)
            view = view[got:]

    def recv_frame(self, tensor: torch.Tensor, tag: int, what: str) -> int:
        """Receive one frame of `tag` into the start of `tensor`; return its byte count."""
        head = bytearray(FRAME.size)
        room = _bytes_of(tensor)
        with self.lock:
            self._read_into(memoryview(head), what)
            magic, got_tag, nbytes = FRAME.unpack(head)
            if magic != FRAME_MAGIC:
                raise ProtocolError(
                    f"{self.peer_name} sent a frame without psjob's magic ({what}): not a psjob "
                    "peer, or the stream is corrupted"
                )
            if got_tag != tag or not 0 <= nbytes <= len(room):
                raise ProtocolError(
                    f"{self.peer_name} sent a frame of tag {got_tag} with {nbytes} bytes where "
                    f"tag {tag} with at most {len(room)} bytes was due ({what})"
                )
            self._read_into(room[:nbytes], what)
        if self.counts is not None:
            self.counts.add(self.counts.received, tag, nbytes)
        return int(nbytes)

    def close(self) -> None:
        """Close the socket: a thread blocked on it gets ConnectionLostError at once."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def send(self, tensor: torch.Tensor, tag: int, what: str, chunk_bytes: int) -> None:
        """Send `tensor` as its chunks' frames."""
        for chunk in _chunks(tensor, chunk_bytes):
            self.send_frame(chunk, tag, what)

    def recv(self, tensor: torch.Tensor, tag: int, what: str, chunk_bytes: int) -> None:
        """Receive into `tensor` the frames of a message sent as `send` cuts it."""
        for chunk in _chunks(tensor, chunk_bytes):
            self.recv_frame(chunk, tag, what)


class Transfer:
    """A message handed to the transport; `wait()` returns once it is sent or received."""

    def __init__(self, complete: Callable[[], None] | None = None):
        self._complete = complete

    def wait(self) -> None:
        if self._complete is not None:
            complete, self._complete = self._complete, None
            complete()


DONE = Transfer()
"""A send: complete when handed over (sendall returned)."""


def wait_all(transfers: Iterable[Transfer]) -> None:
    for transfer in transfers:
        transfer.wait()


@dataclass
class _Frame:
    """A message a worker sent to a server, kept until that server has answered it."""

    tensor: torch.Tensor
    tag: int
    what: str


Rejoin = Callable[[int], Sequence[tuple[torch.Tensor, int, str]]]
"""What a worker sends a replacement of server `s` before replaying what was unanswered: the
session's state that lives on the server (worker 0's parameters, the table declarations, the
worker's position), as (tensor, tag, what)."""


def open_connection(ctx: JobContext, server: int, deadline: float) -> Connection:
    """A worker's new, proven connection to `server`."""
    # Imported here: auth builds on this module's connections.
    from psjob_runtime.auth import prove_to_server

    sock = dial(ctx.server_addrs[server], deadline, f"server {server}'s")
    conn = Connection(sock, ctx.describe_rank(server), ctx.training.timeout_seconds)
    try:
        prove_to_server(ctx, conn, server)
    except BaseException:
        conn.close()
        raise
    return conn


class ServerChannel:
    """A worker's connection to one server, re-opened when that server is replaced.

    Every message sent since the server's last complete reply is kept: a request the server
    never answered is sent again to its replacement, and a reply being received is received
    again from the start. A reply completes only what was sent before it (requests are answered
    in order), so a complete reply lets go of everything kept."""

    def __init__(self, transport: "Transport", server: int):
        self.transport = transport
        self.server = server
        self.lock = threading.RLock()
        self.conn: Connection | None = None
        self.unanswered: list[_Frame] = []
        self.receipts: deque[_Receipt] = deque()
        self.incarnation = 0
        """Connections opened so far: 1 once joined, more after each replacement."""

    def open(self, deadline: float) -> None:
        self.conn = open_connection(self.transport.ctx, self.server, deadline)
        self.incarnation += 1

    def send(self, frame: _Frame) -> None:
        with self.lock:
            self.unanswered.append(frame)
            try:
                self._connection().send(frame.tensor, frame.tag, frame.what, self._chunk)
            except ConnectionLostError as error:
                self.recover(error)

    @property
    def _chunk(self) -> int:
        return self.transport.chunk_bytes

    def _connection(self) -> Connection:
        assert self.conn is not None, "the worker connects to every server first"
        return self.conn

    def receive(self, receipt: "_Receipt") -> None:
        """Complete `receipt` after every receipt posted before it on this channel."""
        with self.lock:
            while receipt.pending:
                head = self.receipts[0]
                try:
                    self._connection().recv(head.tensor, head.tag, head.what, self._chunk)
                except ConnectionLostError as error:
                    self.recover(error)
                    continue
                self.receipts.popleft()
                head.pending = False
                if not self.receipts:
                    self.unanswered.clear()

    def recover(self, error: ConnectionLostError) -> None:
        """Reconnect to the server's replacement and send it what the lost one had not
        answered; raise PeerLostError if no replacement answers within the timeout."""
        from psjob_runtime.auth import AuthenticationError

        ctx = self.transport.ctx
        timeout = ctx.training.timeout_seconds
        lost_at = time.monotonic()
        deadline = lost_at + timeout
        log(f"worker {ctx.replica_index}: {error}; reconnecting for up to {timeout} s")
        if self.conn is not None:
            self.conn.close()
        while True:
            try:
                self.open(deadline)
                conn = self._connection()
                rejoin = self.transport.rejoin
                for tensor, tag, what in rejoin(self.server) if rejoin else ():
                    conn.send(tensor, tag, what, self._chunk)
                for frame in self.unanswered:
                    conn.send(frame.tensor, frame.tag, frame.what, self._chunk)
            except ConnectionLostError as again:
                if time.monotonic() >= deadline:
                    raise PeerLostError(
                        f"server {self.server} was not back within {timeout} s: {again}"
                    ) from None
                time.sleep(_RETRY_SECONDS)
                continue
            except AuthenticationError:
                raise
            except PeerLostError as again:  # nothing answered at its address until the deadline
                raise PeerLostError(
                    f"server {self.server} was not back within {timeout} s: {again}"
                ) from None
            break
        log(
            f"worker {ctx.replica_index}: rejoined server {self.server} in "
            f"{time.monotonic() - lost_at:.1f} s (connection {self.incarnation}); "
            f"{len(self.unanswered)} unanswered messages sent again"
        )


@dataclass
class _Receipt:
    """A reply a worker waits for from one server's channel."""

    tensor: torch.Tensor
    tag: int
    what: str
    pending: bool = True


@dataclass
class Transport:
    """A worker's messages to the job's servers, by server index (which is their rank)."""

    ctx: JobContext
    chunk_bytes: int = MAX_CHUNK_BYTES
    counts: ByteCounts = field(default_factory=ByteCounts)
    rejoin: Rejoin | None = None
    """Set by the worker session: what a replacement server must be told first."""
    channels: list[ServerChannel] = field(default_factory=list)

    def connect(self) -> None:
        """Open and authenticate a connection to every server, waiting for them to start."""
        deadline = time.monotonic() + self.ctx.training.timeout_seconds
        self.channels = [ServerChannel(self, s) for s in range(self.ctx.num_servers)]
        for channel in self.channels:
            while True:
                try:
                    channel.open(deadline)
                    break
                except ConnectionLostError:  # the server stopped while this worker connected
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(_RETRY_SECONDS)

    def send(
        self,
        tensor: torch.Tensor,
        dst: int,
        tag: int,
        what: str,
        count_as: Sequence[tuple[int, int]] | None = None,
    ) -> Transfer:
        """Send `tensor` to server `dst`; it is sent again to a replacement of that server
        until the server's next complete reply. A message larger than KEEP_COPY_BYTES (a
        gradient) is kept by reference, so it must not change before that reply; smaller ones
        (headers, whose buffers the next request reuses) are copied.

        `count_as`: (kind, bytes) pairs the message's bytes count as in `counts` (default: all
        of them under `tag`)."""
        for kind, nbytes in count_as or [(tag, tensor.numel() * tensor.element_size())]:
            self.counts.add(self.counts.sent, kind, nbytes)
        small = tensor.numel() * tensor.element_size() <= KEEP_COPY_BYTES
        self.channels[dst].send(_Frame(tensor.clone() if small else tensor, tag, what))
        return DONE

    def recv(self, tensor: torch.Tensor, src: int, tag: int, what: str) -> Transfer:
        """Post the receipt of a reply from server `src` into `tensor`; `.wait()` before
        reading it. Receipts from one server complete in the order they were posted."""
        self.counts.add(self.counts.received, tag, tensor.numel() * tensor.element_size())
        channel = self.channels[src]
        receipt = _Receipt(tensor, tag, what)
        with channel.lock:
            channel.receipts.append(receipt)
        return Transfer(lambda: channel.receive(receipt))

    def close(self) -> None:
        for channel in self.channels:
            if channel.conn is not None:
                channel.conn.close()


HANDSHAKE_SECONDS = 10.0
"""The most a connection may take to prove itself: a silent stranger holds no thread longer."""


class Listener:
    """A server's door: accepts connections, has each prove itself in its own thread, and
    hands on each worker's newest connection; a newer one closes the one it replaces."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        deadline = time.monotonic() + ctx.training.timeout_seconds
        self.sock = listen(ctx.server_addrs[ctx.replica_index], deadline)
        self.changed = threading.Condition()
        self.newest: dict[int, Connection] = {}
        """By worker index: its latest authenticated connection."""
        self.joined: dict[int, int] = {}
        """By worker index: connections it has opened so far (2 and up: it came back)."""
        self.counts = ByteCounts()
        """Bytes on every connection by tag, each way (the server's /metrics)."""
        self.on_new_worker: Callable[[int], None] | None = None
        """Called with a worker's index on its first connection (the server serves it)."""

    def start(self) -> None:
        threading.Thread(target=self._accept, name="accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.sock.accept()
            except OSError:
                return  # closed
            _tune(sock)
            where = f"a connection from {peer[0]}:{peer[1]}"
            handshake = min(HANDSHAKE_SECONDS, self.ctx.training.timeout_seconds)
            conn = Connection(sock, where, handshake, self.counts)
            threading.Thread(target=self._admit, args=(conn,), daemon=True).start()

    def _admit(self, conn: Connection) -> None:
        # Imported here: auth builds on this module's connections.
        from psjob_runtime.auth import admit_worker

        try:
            rank = admit_worker(self.ctx, conn)
        except PeerLostError as error:
            log(f"server {self.ctx.replica_index}: refused {conn.peer_name}: {error}")
            conn.close()
            return
        worker = rank - self.ctx.num_servers
        conn.peer_name = self.ctx.describe_rank(rank)
        conn.set_timeout(self.ctx.training.timeout_seconds)
        with self.changed:
            replaced = self.newest.get(worker)
            self.newest[worker] = conn
            self.joined[worker] = self.joined.get(worker, 0) + 1
            self.changed.notify_all()
        if replaced is not None:
            replaced.close()
        if self.on_new_worker is not None:
            self.on_new_worker(worker)

    def next_connection(
        self, worker: int, after: Connection | None, timeout: float | None
    ) -> Connection | None:
        """The worker's newest connection other than `after`, waiting up to `timeout`."""
        with self.changed:
            self.changed.wait_for(lambda: self.newest.get(worker) not in (None, after), timeout)
            found = self.newest.get(worker)
            return None if found is None or found is after else found

    def close(self) -> None:
        # shutdown first: on Linux a close alone neither wakes the accept thread nor frees the
        # port while that thread is blocked in accept().
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self.changed:
            for conn in self.newest.values():
                conn.close()
