"""digits: a small network on scikit-learn's real handwritten digits (8x8), >= 95% test accuracy.

    python -m psjob_runtime.launch --servers 2 --workers 2 --lr 0.05 --momentum 0.9 -- \\
        python -m psjob_runtime.examples.digits

spec.training.config (all optional): epochs, batchSize, hidden, seed, and minAccuracy: below
it the worker fails (exit 1) instead of only printing the accuracy.
"""

import torch
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import psjob_runtime

TEST_FRACTION = 0.2


class DigitsConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    hidden: int = Field(64, ge=1)
    seed: int = 0
    min_accuracy: float = Field(0.0, ge=0, le=1)


class AccuracyTooLowError(Exception):
    """The run finished but missed the accuracy the caller asked for."""


def load_split(seed: int) -> tuple[TensorDataset, TensorDataset]:
    """The 1,797 digits, standardised with the training split's statistics, split 80/20."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    test_count = int(len(x) * TEST_FRACTION)
    test, train = order[:test_count], order[test_count:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def build_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def accuracy(model: nn.Module, data: TensorDataset, device: torch.device) -> float:
    x, y = data.tensors
    with torch.no_grad():
        predicted = model(x.to(device)).argmax(1).cpu()
    return float((predicted == y).float().mean())


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(DigitsConfig)
    torch.manual_seed(config.seed)
    train, test = load_split(config.seed)
    model = build_model(config.hidden).to(session.device)
    optimizer = session.optimizer(model)
    loader = DataLoader(
        session.partition(train),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed + session.worker_index),
    )
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    for _ in range(config.epochs):
        for x, y in loader:
            if step < session.start_step:  # resumed from a checkpoint: these are applied
                step += 1
                continue
            optimizer.zero_grad()
            loss = loss_fn(model(x.to(session.device)), y.to(session.device))
            loss.backward()
            optimizer.step()
            step += 1
            session.report(step=step, loss=loss.item(), samples=len(x))
    session.finish()  # completes an async exchange still in flight, so the model is final
    reached = accuracy(model, test, session.device)
    print(
        f"worker {session.worker_index}: {step} steps; test accuracy {reached:.2%} "
        f"on {len(test)} held-out digits",
        flush=True,
    )
    if reached < config.min_accuracy:
        raise AccuracyTooLowError(
            f"test accuracy {reached:.2%} is below minAccuracy {config.min_accuracy:.2%}"
        )


if __name__ == "__main__":
    main()
