"""A tiny deterministic training run that records what the tests compare.

Worker i trains a small MLP on batch (step, i) of a fixed random data set, so that the union of
all workers' batches at a step is one large batch the tests can replay in a single process.
With `table_rows` > 0 the model also looks up one id per sample in a server-held embedding table
and adds the row to its input; with `dynamic` the table is a dynamic one, and id i becomes the
64-bit id wide_ids(i). After a restart it resumes at `session.start_step`. It writes its
per-step losses (by step), final parameters, table rows and traffic to <out>/worker-<i>.pt.
"""

import time
from pathlib import Path

import psjob_runtime
import torch
from psjob_runtime import hashing
from pydantic import BaseModel, ConfigDict
from torch import nn

FEATURES, HIDDEN, CLASSES = 12, 16, 3


class RecorderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str
    steps: int = 8
    batch: int = 16
    seed: int = 0
    slow_worker: int = -1
    slow_seconds: float = 0.0
    hang_worker: int = -1
    hang_after_step: int = 0
    """Worker `hang_worker` stops after printing this step and sleeps until it is killed: a test
    that kills it mid-training cannot be outrun by it, however loaded the machine is."""
    table_rows: int = 0
    ids_per_batch: int = 0
    """Draw ids from 0..ids_per_batch-1 only (0: the whole table), so batches share rows."""
    clip_norm: float = 0.0
    """Clip the gradient's norm to this between backward() and step() (0: no clipping)."""
    clip_after_seconds: float = 0.0
    """Wait this long before clipping, so that pushes during backward are surely on the wire."""
    overlap_backward: bool = False
    bucket_bytes: int = 0
    """The optimizer's bucket size for pushes during backward (0: its default)."""
    dynamic: bool = False
    """A dynamic table (session.dynamic_embedding) instead of a fixed one, on 64-bit ids."""


def build_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES))


def batch(seed: int, step: int, worker: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + worker)
    x = torch.randn(size, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (size,), generator=generator)
    return x, y


def batch_ids(seed: int, step: int, worker: int, size: int, high: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + worker)
    return torch.randint(0, high, (size,), generator=generator)


def wide_ids(ids: torch.Tensor) -> torch.Tensor:
    """Small ids spread over the whole int64 range, as hashed feature ids are."""
    return hashing.mix64(ids, 4_242)


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(RecorderConfig)
    model = build_model(config.seed)
    table = None
    if config.table_rows:
        table = (
            session.dynamic_embedding(FEATURES)
            if config.dynamic
            else session.embedding(config.table_rows, FEATURES)
        )
    widen = wide_ids if config.dynamic else (lambda ids: ids)
    if config.bucket_bytes:
        optimizer = session.optimizer(model, config.overlap_backward, config.bucket_bytes)
    else:
        optimizer = session.optimizer(model, config.overlap_backward)
    loss_fn = nn.CrossEntropyLoss()
    losses = {}
    for step in range(session.start_step, config.steps):
        x, y = batch(config.seed, step, session.worker_index, config.batch)
        optimizer.zero_grad()
        if table is not None:
            high = config.ids_per_batch or config.table_rows
            ids = batch_ids(config.seed, step, session.worker_index, config.batch, high)
            x = x + table(widen(ids))
        loss = loss_fn(model(x), y)
        loss.backward()
        if config.clip_norm:
            time.sleep(config.clip_after_seconds)
            nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        losses[step] = loss.item()
        print(f"step {step} done", flush=True)
        if session.worker_index == config.slow_worker:
            time.sleep(config.slow_seconds)
        if session.worker_index == config.hang_worker and step == config.hang_after_step:
            time.sleep(3600)
    overlaps_backward = optimizer.overlaps_backward
    counts = session.transport.counts
    wire = {"sent": dict(counts.sent), "received": dict(counts.received)}
    traffic = None if table is None else dict(vars(table.traffic))
    rows = None
    if table is not None:
        with torch.no_grad():
            rows = table(widen(torch.arange(config.table_rows)))
    stats = session.finish()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    record = {
        "start_step": session.start_step,
        "losses": [losses[s] for s in sorted(losses)],
        "params": params,
        "rows": rows,
        "traffic": traffic,
        "wire": wire,
        "max_lead": [s.max_lead for s in stats],
        "overlaps_backward": overlaps_backward,
    }
    torch.save(record, Path(config.out) / f"worker-{session.worker_index}.pt")


if __name__ == "__main__":
    main()
