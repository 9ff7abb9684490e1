"""A process outside the job that takes a job's rank, as an attacker on the pod network would.

`plain`: it joins the job's process group with nothing but MASTER_ADDR/PORT, WORLD_SIZE and a
rank, as `torch.distributed` documents, then asks server 0 for parameters and pushes a huge
gradient. `guess`: it runs psjob's own handshake with a secret of its choosing. It prints what it
got, so a test can tell whether the job served it.
"""

import datetime
import os
import sys

import torch
import torch.distributed as dist
from psjob_runtime.auth import join_job
from psjob_runtime.contract import ENV_SECRET, read_context
from psjob_runtime.wire import HEADER_LEN, TAG_HEADER, TAG_PAYLOAD, TAG_REPLY, Header, Op

WAIT = datetime.timedelta(seconds=15)


def plain() -> None:
    dist.init_process_group(
        backend="gloo",
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=WAIT,
    )
    print("stranger: joined the process group", flush=True)
    worker = int(os.environ["RANK"]) - int(os.environ["PSJOB_NUM_SERVERS"])
    group = dist.group.WORLD
    assert group is not None
    header = Header(Op.PULL, worker, 0, 0).encode(torch.empty(HEADER_LEN, dtype=torch.int64))
    group.send([header], 0, TAG_HEADER).wait(WAIT)
    reply = torch.empty(1, dtype=torch.float32)
    group.recv([reply], 0, TAG_REPLY).wait(WAIT)
    print("stranger: GOT PARAMETERS", flush=True)
    group.send([torch.full((1,), 1e30)], 0, TAG_PAYLOAD).wait(WAIT)


def guess() -> None:
    env = {**os.environ, ENV_SECRET: "a-guess-of-the-secret-0123456789abcdef"}
    join_job(read_context(env))
    print("stranger: GOT PAST THE HANDSHAKE", flush=True)


if __name__ == "__main__":
    {"plain": plain, "guess": guess}[sys.argv[1]]()
