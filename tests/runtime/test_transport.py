"""Transport: chunked messages arrive whole; what does not fit or was not due is refused, not
read; a closed connection and a name that never resolves end the wait with their own errors."""

import socket
import threading
import time

import pytest
import torch
from psjob_runtime.errors import PeerLostError
from psjob_runtime.transport import Connection, ConnectionLostError, wait_for_dns
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
