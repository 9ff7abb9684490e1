"""Rank 0 sends a tensor in many small chunks; rank 1 doubles it and sends it back the same way.

Exercises the chunking that keeps real messages below gloo's 2 GiB limit, with a chunk size
small enough to split a 40 kB message into ten pieces. Exits 0 only if every element survived.
"""

import sys

import torch
from psjob_runtime.contract import read_context
from psjob_runtime.transport import Transport, join_group

NUMEL = 10_001
CHUNK_BYTES = 4096
TAG = 7


def main() -> None:
    ctx = read_context()
    join_group(ctx)
    transport = Transport(ctx, chunk_bytes=CHUNK_BYTES)
    if ctx.rank == 0:
        data = torch.arange(NUMEL, dtype=torch.float32)
        sending = transport.send(data, 1, TAG, "data")
        assert len(sending.chunks) == 10, len(sending.chunks)
        sending.wait()
        back = torch.empty(NUMEL)
        transport.recv(back, 1, TAG, "doubled data").wait()
        sys.exit(0 if torch.equal(back, data * 2) else 1)
    buf = torch.empty(NUMEL)
    transport.recv(buf, 0, TAG, "data").wait()
    transport.send(buf * 2, 0, TAG, "doubled data").wait()


if __name__ == "__main__":
    main()
