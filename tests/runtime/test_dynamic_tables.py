"""Dynamic tables: any int64 id, a row per id; trained through the servers they match
nn.Embedding(sparse=True) in one process when no admission or eviction applies."""

import sys
from pathlib import Path

import pytest
import torch
from psjob_runtime.dynamic_table import DynamicOptions, DynamicTableSpec, initial_rows, route
from psjob_runtime.launch import plan_job
from psjob_runtime.training import TrainingSettings
from psjob_runtime.wire import TAG_PAYLOAD, TAG_REPLY

from tests.runtime.jobs import RECORDER, run_recorder, start_plans
from tests.runtime.test_sparse import BATCH, IDS, OPTIMIZERS, SEED, STEPS, one_process
from tests.runtime.workloads.recorder import FEATURES, batch_ids, wide_ids

SPEC = DynamicTableSpec(0, FEATURES, 0.01, DynamicOptions())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "servers", "mode"),
    [("sgd", 1, "sync"), ("adagrad", 2, "sync"), ("adam", 3, "sync"), ("adagrad", 2, "async")],
)
def test_a_dynamic_table_trains_as_nn_embedding_in_one_process(
    tmp_path: Path, name: str, servers: int, mode: str
) -> None:
    # async with one worker applies each push on arrival: the same sequence as one process.
    workers = 2 if mode == "sync" else 1
    result = run_recorder(
        tmp_path,
        *("--servers", str(servers), "--workers", str(workers), "--mode", mode),
        *OPTIMIZERS[name][0],
        steps=STEPS,
        batch=BATCH,
        seed=SEED,
        table_rows=IDS,
        ids_per_batch=IDS,
        dynamic=True,
    )
    assert result.returncode == 0, result.output
    params, rows = one_process(name, workers, initial_rows(wide_ids(torch.arange(IDS)), SPEC))
    for record in result.records.values():
        torch.testing.assert_close(record["params"], params, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(record["rows"], rows, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_dynamic_table_moves_the_unique_ids_of_a_batch_only(tmp_path: Path) -> None:
    steps = 4
    result = run_recorder(
        tmp_path,
        *("--servers", "2", "--workers", "1"),
        steps=steps,
        batch=BATCH,
        table_rows=1_000_000,
        dynamic=True,
    )
    assert result.returncode == 0, result.output
    record = result.records[0]
    unique = sum(
        len(torch.unique(batch_ids(0, step, 0, BATCH, 1_000_000))) for step in range(steps)
    )
    dense = record["params"].numel() * 4
    row, ids = FEATURES * 4, 8
    sent, received = record["wire"]["sent"][TAG_PAYLOAD], record["wire"]["received"][TAG_REPLY]
    declare = 2 * (4 + 3 * 8)  # init scale and three options, to each server
    assert sent == dense + declare + steps * dense + unique * (ids + ids + row)
    assert record["traffic"]["rows_pulled"] == record["traffic"]["rows_pushed"] == unique
    assert received - (steps + 1) * dense - 2 * 11 * 8 == unique * row


def test_routing_spreads_consecutive_and_skewed_ids_evenly() -> None:
    consecutive = torch.arange(300_000)
    strided = torch.arange(300_000) * 1024  # ids that share their low bits
    for ids in (consecutive, strided):
        for servers in (2, 3, 7):
            share = torch.bincount(route(ids, servers), minlength=servers).float() / len(ids)
            assert float((share - 1 / servers).abs().max()) < 0.01


@pytest.mark.slow
def test_the_jobs_admission_bound_applies_to_a_table_that_declares_none(tmp_path: Path) -> None:
    # spec.training.embeddings.admitAfter beyond the run's pushes: no id ever gets a row.
    training = TrainingSettings.model_validate(
        {
            "timeoutSeconds": 60,
            "embeddings": {"admitAfter": 1000},
            "config": {"out": str(tmp_path), "steps": 3, "table_rows": 50, "dynamic": True},
        }
    )
    procs, logs = start_plans(plan_job(2, 1, training, [sys.executable, str(RECORDER)]), tmp_path)
    codes = {name: proc.wait(120) for name, proc in procs.items()}
    assert set(codes.values()) == {0}, {name: logs[name].read_text() for name in logs}
    record = torch.load(tmp_path / "worker-0.pt")
    assert torch.equal(record["rows"], torch.zeros(50, FEATURES))
