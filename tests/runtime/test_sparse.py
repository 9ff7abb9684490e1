"""Embedding tables on the servers: only touched rows move, and training matches one process."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from psjob_runtime.table_shard import TableSpec, initial_rows
from psjob_runtime.wire import HEADER_LEN, TAG_PAYLOAD, TAG_REPLY
from torch import nn

from tests.runtime.jobs import run_recorder
from tests.runtime.workloads.recorder import FEATURES, batch, batch_ids, build_model

STEPS, BATCH, SEED = 6, 16, 5
ROWS, IDS = 200, 40
"""A small table whose batches draw from its first 40 rows: workers share rows, ids repeat."""

Factory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]
OPTIMIZERS: dict[str, tuple[list[str], Factory, Factory]] = {
    "sgd": (
        ["--optimizer", "sgd", "--lr", "0.1"],
        lambda p: torch.optim.SGD(p, lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1),
    ),
    "adagrad": (
        ["--optimizer", "adagrad", "--lr", "0.1"],
        lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-8),
        lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-8),
    ),
    "adam": (
        ["--optimizer", "adam", "--lr", "0.01"],
        lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-8),
        lambda p: torch.optim.SparseAdam(p, lr=0.01, eps=1e-8),
    ),
}


def one_process(
    name: str, workers: int, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense model plus nn.Embedding(sparse=True), each step on the union of the workers' data;
    the table starts as `rows` (default: a fixed table's initial rows)."""
    if rows is None:
        rows = initial_rows(TableSpec(0, ROWS, FEATURES), 0, 1, init_scale=0.01)
    _, dense_factory, sparse_factory = OPTIMIZERS[name]
    model = build_model(SEED)
    table = nn.Embedding(len(rows), FEATURES, sparse=True)
    table.weight.data = rows
    dense, sparse = dense_factory(model.parameters()), sparse_factory(table.parameters())
    for step in range(STEPS):
        xs, ys = [], []
        for worker in range(workers):
            x, y = batch(SEED, step, worker, BATCH)
            xs.append(x + table(batch_ids(SEED, step, worker, BATCH, IDS)))
            ys.append(y)
        dense.zero_grad()
        sparse.zero_grad()
        nn.CrossEntropyLoss()(model(torch.cat(xs)), torch.cat(ys)).backward()
        dense.step()
        sparse.step()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return params, table.weight.detach()


@pytest.mark.slow
@pytest.mark.parametrize(
    # Every optimizer, and 1, 2 and 3 servers: all against the same one-process reference.
    ("name", "servers"),
    [("sgd", 2), ("adagrad", 2), ("adam", 1), ("adam", 3)],
)
def test_sparse_training_matches_one_process(tmp_path: Path, name: str, servers: int) -> None:
    flags = OPTIMIZERS[name][0]
    result = run_recorder(
        tmp_path,
        *("--servers", str(servers), "--workers", "2", *flags),
        steps=STEPS,
        batch=BATCH,
        seed=SEED,
        table_rows=ROWS,
        ids_per_batch=IDS,
    )
    assert result.returncode == 0, result.output
    params, rows = one_process(name, workers=2)
    for record in result.records.values():
        torch.testing.assert_close(record["params"], params, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(record["rows"], rows, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_only_the_touched_rows_cross_the_wire(tmp_path: Path) -> None:
    table_rows, steps = 100_000, 5
    result = run_recorder(
        tmp_path,
        "--servers",
        "2",
        "--workers",
        "1",
        steps=steps,
        batch=BATCH,
        table_rows=table_rows,
    )
    assert result.returncode == 0, result.output
    record = result.records[0]
    unique = sum(
        len(torch.unique(batch_ids(0, step, 0, BATCH, table_rows))) for step in range(steps)
    )
    dense = record["params"].numel() * 4
    row, ids = FEATURES * 4, 8
    # Measured at the transport: every payload byte handed to gloo in each direction.
    sent, received = record["wire"]["sent"][TAG_PAYLOAD], record["wire"]["received"][TAG_REPLY]
    init_and_declare = dense + 2 * 4  # worker 0's initial parameters; the init scale per server
    assert sent == init_and_declare + steps * dense + unique * (ids + ids + row)
    resume_points = 2 * HEADER_LEN * 8  # one int64 reply header per server
    assert received == (steps + 1) * dense + resume_points + unique * row
    assert record["traffic"]["rows_pulled"] == record["traffic"]["rows_pushed"] == unique
    assert unique * row < table_rows * row / 1000  # what a dense exchange of the table moves
