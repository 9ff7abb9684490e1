"""A process outside the job that takes a job's place, as an attacker on the pod network would.

`plain`: it connects to server 0's port with nothing but its address and sends a request for the
parameters, skipping psjob's handshake. `guess`: as a worker, it runs the handshake with a secret
of its choosing and answers the server's challenge whatever the server proved; as a server, it
listens at server 0's address and answers workers with a guessed secret. It prints what it got,
so a test can tell whether the job served it.
"""

import os
import sys
import time

import torch
from psjob_runtime.auth import admit_worker
from psjob_runtime.contract import ENV_SECRET, Role, read_context
from psjob_runtime.errors import PeerLostError
from psjob_runtime.transport import Connection, dial, listen
from psjob_runtime.wire import HEADER_LEN, PROTOCOL_VERSION, TAG_HEADER, TAG_REPLY, Header, Op

WAIT = 15.0


def _connect() -> Connection:
    ctx = read_context()
    sock = dial(ctx.server_addrs[0], time.monotonic() + WAIT, "server 0's")
    print("stranger: connected to server 0", flush=True)
    return Connection(sock, "server 0", WAIT)


def plain() -> None:
    conn = _connect()
    worker = int(os.environ["PSJOB_REPLICA_INDEX"])
    header = Header(Op.PULL, worker, 0, 0).encode(torch.empty(HEADER_LEN, dtype=torch.int64))
    try:
        conn.send_frame(header, TAG_HEADER, "request")
        conn.recv_frame(torch.empty(1 << 20), TAG_REPLY, "parameters")
    except PeerLostError as error:
        print(f"stranger: refused: {error}", flush=True)
        return
    print("stranger: GOT PARAMETERS", flush=True)


def guess() -> None:
    env = {**os.environ, ENV_SECRET: "a-guess-of-the-secret-0123456789abcdef"}
    ctx = read_context(env)
    if ctx.role is Role.SERVER:
        sock = listen(ctx.server_addrs[0], time.monotonic() + WAIT)
        sock.settimeout(1.0)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                admit_worker(ctx, Connection(client, "a worker", WAIT))
            except PeerLostError as error:
                print(f"stranger: refused: {error}", flush=True)
                continue
            print("stranger: GOT PAST THE HANDSHAKE", flush=True)
        return
    # The worker's side of auth.prove_to_server, without checking the server's proof.
    from psjob_runtime import auth

    conn = _connect()
    conn.send_frame(
        torch.frombuffer(
            bytearray(auth.HELLO.pack(PROTOCOL_VERSION, ctx.rank) + bytes(auth.NONCE_BYTES)),
            dtype=torch.uint8,
        ),
        auth.TAG_AUTH,
        "hello",
    )
    answer = torch.empty(auth.ANSWER.size + auth.NONCE_BYTES + auth.PROOF_BYTES, dtype=torch.uint8)
    conn.recv_frame(answer, auth.TAG_AUTH, "proof")
    challenge = bytes(answer.numpy().tobytes())[auth.ANSWER.size : auth.ANSWER.size + 32]
    proof = auth._proof(ctx, ctx.rank, 0, challenge)
    conn.send_frame(torch.frombuffer(bytearray(proof), dtype=torch.uint8), auth.TAG_AUTH, "proof")
    try:
        header = Header(Op.PULL, ctx.replica_index, 0, 0)
        conn.send_frame(header.encode(torch.empty(HEADER_LEN, dtype=torch.int64)), TAG_HEADER, "r")
        conn.recv_frame(torch.empty(1 << 20), TAG_REPLY, "parameters")
    except PeerLostError as error:
        print(f"stranger: refused: {error}", flush=True)
        return
    print("stranger: GOT PAST THE HANDSHAKE", flush=True)


if __name__ == "__main__":
    {"plain": plain, "guess": guess}[sys.argv[1]]()
