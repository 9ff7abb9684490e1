"""Admission, TTL and capacity of a dynamic table, row by row on a small stream of pushes.

The shard is driven directly, as a server's gate drives it: each `push` is one step of the table
with SGD at lr 1, so a row's value tells which gradients reached it."""

import pytest
import torch
from psjob_runtime.dynamic_shard import DynamicShard
from psjob_runtime.dynamic_table import DynamicOptions, DynamicTableSpec, initial_rows
from psjob_runtime.training import OptimizerSettings, TrainingSettings
from pydantic import ValidationError

DIM = 2
SGD = OptimizerSettings(name="sgd", lr=1.0)


def shard(bounds: DynamicOptions | None = None, **options: int) -> DynamicShard:
    spec = DynamicTableSpec(0, DIM, 0.5, DynamicOptions(**options))
    return DynamicShard(spec, 0, 1, SGD, bounds or DynamicOptions())


def push(table: DynamicShard, *ids: int, grad: float = 1.0) -> None:
    table.apply(torch.tensor(ids, dtype=torch.int64), torch.full((len(ids), DIM), grad))


def lookup(table: DynamicShard, *ids: int) -> torch.Tensor:
    return table.gather(torch.tensor(ids, dtype=torch.int64), torch.empty(len(ids), DIM))


def initial(table: DynamicShard, *ids: int) -> torch.Tensor:
    return initial_rows(torch.tensor(ids, dtype=torch.int64), table.spec)


def stored(table: DynamicShard) -> dict[int, tuple[int, int]]:
    """id -> (count, last update step) of every row the shard holds."""
    saved = table.snapshot()
    return {
        int(i): (int(c), int(s))
        for i, c, s in zip(saved["ids"], saved["counts"], saved["last_update"], strict=True)
    }


def waiting(table: DynamicShard) -> dict[int, tuple[int, int]]:
    saved = table.snapshot()
    return {
        int(i): (int(c), int(s))
        for i, c, s in zip(
            saved["pending_ids"], saved["pending_counts"], saved["pending_last_seen"], strict=True
        )
    }


def test_without_admission_a_row_starts_at_its_initial_values_and_takes_the_first_gradient() -> (
    None
):
    table = shard()
    big = (1 << 62) + 12345
    torch.testing.assert_close(lookup(table, big, -7), initial(table, big, -7))
    assert stored(table) == {}  # a lookup creates nothing
    push(table, big, big, -7)  # as two workers' pushes in a sync round: summed, counted twice
    torch.testing.assert_close(lookup(table, big), initial(table, big) - 2.0)
    torch.testing.assert_close(lookup(table, -7), initial(table, -7) - 1.0)
    assert stored(table) == {big: (2, 1), -7: (1, 1)}


def test_an_id_gets_its_row_at_its_admit_after_th_push_and_its_gradients_before_are_dropped() -> (
    None
):
    table = shard(admit_after=3)
    for step in (1, 2):
        push(table, 5, grad=float(step))
        torch.testing.assert_close(lookup(table, 5), torch.zeros(1, DIM))  # the default vector
        assert waiting(table) == {5: (step, step)}
        assert stored(table) == {}
    push(table, 5, 9, grad=3.0)  # the third push creates 5's row, computed against zeros
    torch.testing.assert_close(lookup(table, 5), initial(table, 5))
    assert stored(table) == {5: (3, 3)}
    assert waiting(table) == {9: (1, 3)}
    push(table, 5, grad=0.25)
    torch.testing.assert_close(lookup(table, 5), initial(table, 5) - 0.25)
    assert stored(table) == {5: (4, 4)}
    torch.testing.assert_close(lookup(table, 9), torch.zeros(1, DIM))


def test_rows_not_updated_for_ttl_steps_are_removed_and_start_over() -> None:
    table = shard(ttl_steps=2)
    push(table, 1, 2)  # step 1
    push(table, 1)  # step 2
    assert set(stored(table)) == {1, 2}
    push(table, 1)  # step 3: 2 was last updated at step 1 = 3 - 2
    assert stored(table) == {1: (3, 3)}
    torch.testing.assert_close(lookup(table, 2), initial(table, 2))  # as a new id
    push(table)  # step 4, nothing pushed
    push(table)  # step 5: 1 was last updated at step 3
    assert stored(table) == {}


def test_waiting_ids_expire_with_the_ttl_too() -> None:
    table = shard(admit_after=2, ttl_steps=1)
    push(table, 4)
    assert waiting(table) == {4: (1, 1)}
    push(table)  # step 2: 4 was last pushed at step 1
    assert waiting(table) == {}
    push(table, 4)  # counted from 0 again
    assert waiting(table) == {4: (1, 3)} and stored(table) == {}


def test_the_capacity_evicts_the_least_recently_updated_rows_smallest_ids_first() -> None:
    table = shard(max_rows_per_server=2)
    push(table, 1, 2)  # step 1
    push(table, 3)  # step 2: 1 and 2 tie at step 1; 1 goes
    assert set(stored(table)) == {2, 3}
    push(table, 2, 4)  # step 3: 2 is updated now, 3 (step 2) is the oldest
    assert stored(table) == {2: (2, 3), 4: (1, 3)}
    push(table, 5, 6, 7)  # step 4: three new ids, room for two: the smallest
    assert stored(table) == {5: (1, 4), 6: (1, 4)}
    torch.testing.assert_close(lookup(table, 7), initial(table, 7))
    torch.testing.assert_close(lookup(table, 5), initial(table, 5) - 1.0)


def test_memory_stays_bounded_under_a_stream_of_new_ids() -> None:
    table = shard(max_rows_per_server=1000, admit_after=2)
    for step in range(50):
        ids = torch.arange(step * 400, (step + 1) * 400)
        table.apply(torch.cat([ids, ids[:200]]), torch.ones(600, DIM))  # half seen twice
        assert table.held_rows <= 1000 and table.pending.live <= 1000
        if step == 5:
            early = table.held_bytes
    assert table.held_bytes <= early  # pools reuse their slots: no growth past the capacity
    assert table.held_rows == 1000


def test_the_stricter_of_a_tables_options_and_the_jobs_bounds_wins() -> None:
    table = shard(DynamicOptions(admit_after=3, ttl_steps=10), admit_after=2, ttl_steps=50)
    assert table.options == DynamicOptions(admit_after=3, ttl_steps=10)
    own = DynamicOptions(admit_after=5, ttl_steps=4, max_rows_per_server=100)
    assert own.stricter(DynamicOptions(max_rows_per_server=1000)) == own
    assert own.stricter(DynamicOptions(admit_after=1, max_rows_per_server=10)) == DynamicOptions(
        5, 4, 10
    )
    assert DynamicOptions().stricter(own) == own


def test_the_jobs_bounds_reach_every_dynamic_table_from_psjob_training() -> None:
    training = TrainingSettings.model_validate_json(
        '{"embeddings": {"admitAfter": 4, "maxRowsPerServer": 10}}'
    )
    assert training.embeddings is not None
    assert training.embeddings.admit_after == 4 and training.embeddings.ttl_steps is None
    with pytest.raises(ValidationError, match="ttlSteps"):
        TrainingSettings.model_validate_json('{"embeddings": {"ttlSteps": 0}}')
    with pytest.raises(ValueError, match=r"max_rows_per_server must be in 1\.\.2147483647"):
        DynamicOptions(max_rows_per_server=1 << 31)
