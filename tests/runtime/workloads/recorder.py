"""A tiny deterministic training run that records what the tests compare.

Worker i trains a small MLP on batch (step, i) of a fixed random data set, so that the union of
all workers' batches at a step is one large batch the tests can replay in a single process.
It writes its per-step losses and final parameters to <out>/worker-<i>.pt.
"""

import time
from pathlib import Path

import psjob_runtime
import torch
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


def build_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES))


def batch(seed: int, step: int, worker: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + worker)
    x = torch.randn(size, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (size,), generator=generator)
    return x, y


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(RecorderConfig)
    model = build_model(config.seed)
    optimizer = session.optimizer(model)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for step in range(config.steps):
        x, y = batch(config.seed, step, session.worker_index, config.batch)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"step {step} done", flush=True)
        if session.worker_index == config.slow_worker:
            time.sleep(config.slow_seconds)
    stats = session.finish()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    record = {"losses": losses, "params": params, "max_lead": [s.max_lead for s in stats]}
    torch.save(record, Path(config.out) / f"worker-{session.worker_index}.pt")


if __name__ == "__main__":
    main()
