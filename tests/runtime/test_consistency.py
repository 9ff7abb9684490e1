"""Sync training through the servers equals plain training; every optimizer, 1-3 servers."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.runtime.jobs import run_recorder
from tests.runtime.workloads.recorder import batch, build_model

STEPS, BATCH, SEED = 6, 16, 3

OptimizerFactory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, tuple[list[str], OptimizerFactory]] = {
    "sgd": (
        ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "0.01"],
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    ),
    "adam": (
        ["--optimizer", "adam", "--lr", "0.01", "--weight-decay", "0.01"],
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01, eps=1e-8),
    ),
    "adagrad": (
        ["--optimizer", "adagrad", "--lr", "0.1", "--weight-decay", "0.01"],
        lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=0.01, eps=1e-8),
    ),
}


def plain_training(factory: OptimizerFactory, workers: int) -> tuple[list[float], torch.Tensor]:
    """One process, one optimizer, each step on the union of what the workers saw."""
    model = build_model(SEED)
    optimizer = factory(model.parameters())
    losses = []
    for step in range(STEPS):
        parts = [batch(SEED, step, w, BATCH) for w in range(workers)]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        optimizer.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.slow
@pytest.mark.parametrize("servers", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_worker_matches_plain_training(tmp_path: Path, name: str, servers: int) -> None:
    flags, factory = OPTIMIZERS[name]
    result = run_recorder(
        tmp_path,
        "--servers",
        str(servers),
        "--workers",
        "1",
        *flags,
        steps=STEPS,
        batch=BATCH,
        seed=SEED,
    )
    assert result.returncode == 0, result.output
    expected_losses, expected_params = plain_training(factory, workers=1)
    record = result.records[0]
    torch.testing.assert_close(record["losses"], expected_losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(record["params"], expected_params, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_workers_match_large_batch_training_on_the_union(tmp_path: Path) -> None:
    flags, factory = OPTIMIZERS["sgd"]
    result = run_recorder(
        tmp_path, "--servers", "2", "--workers", "2", *flags, steps=STEPS, batch=BATCH, seed=SEED
    )
    assert result.returncode == 0, result.output
    expected_losses, expected_params = plain_training(factory, workers=2)
    # The union's mean loss is the mean of the two halves' mean losses.
    mean_losses = [
        (a + b) / 2
        for a, b in zip(result.records[0]["losses"], result.records[1]["losses"], strict=True)
    ]
    torch.testing.assert_close(mean_losses, expected_losses, rtol=1e-5, atol=1e-6)
    assert torch.equal(result.records[0]["params"], result.records[1]["params"])
    torch.testing.assert_close(result.records[0]["params"], expected_params, rtol=1e-5, atol=1e-6)
