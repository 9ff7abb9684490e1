"""A job member that sends whatever requests its script says: the tests' misbehaving worker.

It connects and proves itself like a real worker (it holds the job's secret), then sends requests
listed in spec.training.config["script"] to server 0 exactly as written, whatever the protocol
says, and lingers `linger` seconds before leaving so the server has time to act on the last one.
Each request is a dict: op (name), worker, step, numel, extra, payload (announced bytes; default:
what its messages hold), messages (payloads: dtype, count, fill, with "nan" and "inf" as strings),
header_len (fields to send, default the full header), reply (dtype and count to receive, optional),
progress (a progress block, written raw whatever it holds: step, samples, loss, names, values and
count, default len(names); the header's progress field says its bytes unless progress_field does).
An op whose payload travels inline (PUSH_PULL) sends its first message right behind the header's
slots, in one message, as a real worker does; a progress block follows, in the same message.
"""

import os
import time
from typing import Any

import numpy as np
import torch
from psjob_runtime import progress_block
from psjob_runtime.auth import prove_to_server
from psjob_runtime.contract import read_context
from psjob_runtime.errors import PeerLostError
from psjob_runtime.transport import Connection, dial
from psjob_runtime.wire import (
    HEADER_LEN,
    HEADER_ROOM,
    INLINE_OPS,
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    Header,
    Op,
    nbytes,
)

WAIT = 30.0
"""How long a send or receive may wait for the server: long enough for a server that is still
starting on a loaded machine (5 s failed 2 runs in 9 at load 5-8); a server that refused and
left ends the wait at once, since its connection closes."""
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


def _tensor(spec: dict[str, Any]) -> torch.Tensor:
    fill = spec.get("fill", 0)  # "nan", "inf": JSON has no literal for them
    fill = float(fill) if isinstance(fill, str) else fill
    return torch.full((spec["count"],), fill, dtype=DTYPES[spec["dtype"]])


def _raw_block(spec: dict[str, Any]) -> torch.Tensor:
    """A progress block as the spec says, unchecked (int64 slots, see progress_block)."""
    slots = np.zeros(progress_block.SLOTS, dtype=np.int64)
    names = spec.get("names", [])
    slots[0], slots[1] = spec.get("step", 0), spec.get("samples", 0)
    slots[3] = spec.get("count", len(names))
    floats = slots.view(np.float64)
    floats[2] = float(spec.get("loss", 1.0))  # "nan" as a string: JSON has no NaN
    for index, (name, value) in enumerate(zip(names, spec.get("values", []), strict=True)):
        floats[4 + index] = float(value)
        raw = np.frombuffer(name.encode(), dtype=np.uint8)
        start = 8 * (4 + progress_block.MAX_METRICS) + progress_block.NAME_BYTES * index
        slots.view(np.uint8)[start : start + len(raw)] = raw
    return torch.from_numpy(slots)


def send_request(conn: Connection, request: dict[str, Any]) -> None:
    messages = [_tensor(spec) for spec in request.get("messages", [])]
    block = _raw_block(request["progress"]) if "progress" in request else None
    progress = request.get("progress_field", 0 if block is None else progress_block.BYTES)
    announced = [nbytes(m) for m in messages] + [0, 0]
    header = Header(
        Op[request["op"]],
        request.get("worker", 0),
        request.get("step", 0),
        request.get("numel", 0),
        tuple(request.get("extra", (0, 0, 0))),
        tuple(request.get("payload", announced[:2])),
        progress,
    ).encode(torch.zeros(HEADER_ROOM, dtype=torch.int64))
    header[0] = request.get("version", header[0])
    header[1] = request.get("op_code", header[1])
    behind = [block.view(torch.uint8)] if block is not None else []
    if Op[request["op"]] in INLINE_OPS and messages:
        inline = messages.pop(0)
        request_bytes = [header.view(torch.uint8), inline.view(-1).view(torch.uint8), *behind]
        conn.send_frame(torch.cat(request_bytes), TAG_HEADER, "request")
    elif behind:
        conn.send_frame(torch.cat([header.view(torch.uint8), *behind]), TAG_HEADER, "request")
    else:
        conn.send_frame(header[: request.get("header_len", HEADER_LEN)], TAG_HEADER, "request")
    for message in messages:
        conn.send_frame(message, TAG_PAYLOAD, "payload")
    if "reply" in request:
        conn.recv_frame(_tensor({**request["reply"], "fill": 0}), TAG_REPLY, "reply")


def main() -> None:
    ctx = read_context()
    sock = dial(ctx.server_addrs[0], time.monotonic() + WAIT, "server 0's")
    conn = Connection(sock, "server 0", WAIT)
    prove_to_server(ctx, conn, 0)
    for index, request in enumerate(ctx.training.config["script"]):
        try:
            send_request(conn, request)
        except PeerLostError as error:  # the server refused and left: nothing more to send
            print(f"rogue: request {index} ({request['op']}) not completed: {error}", flush=True)
            break
        print(f"rogue: sent request {index} ({request['op']})", flush=True)
    time.sleep(float(ctx.training.config.get("linger", 3)))
    os._exit(0)


if __name__ == "__main__":
    main()
