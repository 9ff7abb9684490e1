"""Transport: chunked messages arrive whole; what does not fit or was not due is refused, not
read; a closed connection and a name that never resolves end the wait with their own errors; a
name that still resolves to a replaced server's address is resolved again."""

import socket
import threading
import time

import pytest
import torch
from psjob_runtime.contract import Address
from psjob_runtime.errors import PeerLostError
from psjob_runtime.transport import Connection, ConnectionLostError, dial, wait_for_dns
from psjob_runtime.wire import ProtocolError

CHUNK_BYTES = 4096


@pytest.fixture
def pair() -> tuple[Connection, Connection]:
    left, right = socket.socketpair()
    return Connection(left, "left", 5.0), Connection(right, "right", 5.0)


def test_a_message_split_into_chunks_arrives_intact(pair: tuple[Connection, Connection]) -> None:
    sender, receiver = pair
    data = torch.arange(10_001, dtype=torch.float32)  # 40 kB: ten chunks
    received = torch.zeros_like(data)
    thread = threading.Thread(target=sender.send, args=(data, 7, "data", CHUNK_BYTES))
    thread.start()
    receiver.recv(received, 7, "data", CHUNK_BYTES)
    thread.join()
    assert torch.equal(received, data)


def test_a_frame_longer_than_its_room_is_refused_and_nothing_is_written(
    pair: tuple[Connection, Connection],
) -> None:
    sender, receiver = pair
    sender.send_frame(torch.ones(8), 1, "request")
    room = torch.zeros(16)
    with pytest.raises(ProtocolError, match="tag 1 with 32 bytes where tag 1 with at most 16"):
        receiver.recv_frame(room[:4], 1, "request")
    assert not room.any()


def test_a_frame_of_another_tag_is_refused(pair: tuple[Connection, Connection]) -> None:
    sender, receiver = pair
    sender.send_frame(torch.ones(2), 3, "reply")
    with pytest.raises(ProtocolError, match="sent a frame of tag 3 with 8 bytes where tag 1"):
        receiver.recv_frame(torch.zeros(2), 1, "request")


def test_a_closed_connection_is_named_at_once(pair: tuple[Connection, Connection]) -> None:
    sender, receiver = pair
    sender.close()
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match=r"lost right \(request\): connection closed"):
        receiver.recv_frame(torch.zeros(2), 1, "request")
    assert time.monotonic() - started < 4  # not the 5 s timeout


def test_a_silent_peer_times_out_with_its_name() -> None:
    left, right = socket.socketpair()
    receiver = Connection(right, "server 1 (rank 1)", 0.5)
    with pytest.raises(PeerLostError, match=r"server 1 \(rank 1\) did not answer within 0 s"):
        receiver.recv_frame(torch.zeros(2), 3, "parameters")
    left.close()


def test_a_name_that_never_resolves_ends_the_wait_with_a_retryable_error() -> None:
    started = time.monotonic()
    with pytest.raises(PeerLostError, match=r"PSJOB_SERVER_ADDRS\) did not resolve in time"):
        wait_for_dns("psjob-no-such-host.invalid", time.monotonic() + 1.0, "server 0's")
    # Bounded by the timeout plus at most one resolver attempt in flight when it expires.
    assert time.monotonic() - started < 30


def test_a_name_that_resolves_returns_at_once() -> None:
    wait_for_dns("localhost", time.monotonic() + 1.0, "server 0's")


def _unanswering_address() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener whose accept queue is full: a SYN to it goes unanswered, as one to a
    deleted pod's address does (the test's traffic stays on loopback)."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    held = []
    for _ in range(3):
        waiting = socket.socket()
        waiting.setblocking(False)
        waiting.connect_ex(full.getsockname())
        held.append(waiting)
    time.sleep(0.2)
    return full, held


def test_a_name_still_resolving_to_a_replaced_servers_address_is_resolved_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cluster DNS answers a replaced server's name with its old pod's address for a few seconds:
    the worker resolves the name again rather than wait out its whole timeout on that address."""
    stale, held = _unanswering_address()
    replacement = socket.socket()
    replacement.bind(("127.0.0.1", 0))
    replacement.listen(1)
    resolve = socket.getaddrinfo
    fresh_after = time.monotonic() + 1.0

    def cluster_dns(host: str, port: object, *args: object, **kwargs: object) -> object:
        if host != "server-0.job.test":
            return resolve(host, port, *args, **kwargs)  # type: ignore[arg-type]
        where = stale if time.monotonic() < fresh_after else replacement
        return resolve("127.0.0.1", where.getsockname()[1], *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", cluster_dns)
    deadline = time.monotonic() + 30.0
    sock = dial(Address("server-0.job.test", 23456), deadline, "server 0's")
    accepted, _ = replacement.accept()
    assert accepted.getpeername() == sock.getsockname()
    for each in (sock, accepted, replacement, stale, *held):
        each.close()
