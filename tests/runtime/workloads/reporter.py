"""A worker that reports its progress every step: the progress endpoint's tests.

It trains a small MLP on fixed random batches and calls `session.report(step, loss,
samples, accuracy=...)` before each `optimizer.step()`, so that step's request carries it. With
`hostile` it first makes, every step, the reports `session.report()` must leave out without
harming training: a NaN loss, 17 metrics, a bad name, a negative step. After the last step it
writes <out>/holding-<i> and waits (at most `hold_seconds`) for <out>/release, so that a test can
read the servers' endpoints while the job is alive; then it finishes and writes its final
parameters to <out>/worker-<i>.pt.
"""

import time
from pathlib import Path

import psjob_runtime
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

FEATURES, CLASSES = 12, 3


def build_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES))


def batch(seed: int, step: int, worker: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + worker)
    return torch.randn(size, FEATURES, generator=generator), torch.randint(
        0, CLASSES, (size,), generator=generator
    )


class ReporterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str
    steps: int = 30
    batch: int = 16
    seed: int = 0
    step_seconds: float = 0.0
    hold_seconds: float = 0.0
    hostile: bool = False


def hostile_reports(session: psjob_runtime.WorkerSession, step: int) -> None:
    session.report(step=step, loss=float("nan"), samples=0)
    session.report(step=step, loss=1.0, samples=0, **{f"m{i}": float(i) for i in range(17)})
    session.report(step=step, loss=1.0, samples=0, **{"bad-name": 1.0, "inf": float("inf")})
    session.report(step=-1, loss=1.0, samples=0)


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(ReporterConfig)
    out = Path(config.out)
    model = build_model(config.seed)
    optimizer = session.optimizer(model)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(session.start_step, config.steps):
        x, y = batch(config.seed, step, session.worker_index, config.batch)
        optimizer.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if config.hostile:
            hostile_reports(session, step)
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
        session.report(step=step, loss=loss.item(), samples=len(x), accuracy=accuracy)
        optimizer.step()
        time.sleep(config.step_seconds)
    (out / f"holding-{session.worker_index}").touch()
    deadline = time.monotonic() + config.hold_seconds
    while not (out / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    session.finish()
    torch.save(
        {"params": torch.nn.utils.parameters_to_vector(model.parameters()).detach()},
        out / f"worker-{session.worker_index}.pt",
    )


if __name__ == "__main__":
    main()
