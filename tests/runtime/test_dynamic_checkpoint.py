"""A dynamic table's checkpoint: written by 2 servers, it restores on 3 and on 1 with the same
rows, optimizer state, counts, steps and waiting ids; the files pass the format's checks."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from psjob_runtime import checkpoint_contents
from psjob_runtime.dynamic_shard import DynamicShard
from psjob_runtime.dynamic_table import DynamicOptions, DynamicTableSpec, route
from psjob_runtime.reslice import dynamic_share
from psjob_runtime.training import OptimizerSettings

from tests.runtime.checkpoints import saved_servers
from tests.runtime.jobs import RECORDER, run_recorder

SPEC = DynamicTableSpec(0, 3, 0.1, DynamicOptions(admit_after=2))
ADAM = OptimizerSettings(name="adam", lr=0.01)


def trained_shards(servers: int) -> list[DynamicShard]:
    """Shards of `servers` servers after a stream where some ids are admitted, some wait."""
    shards = [DynamicShard(SPEC, s, servers, ADAM, DynamicOptions()) for s in range(servers)]
    generator = torch.Generator().manual_seed(3)
    for _ in range(12):
        ids = torch.unique(torch.randint(-(1 << 40), 1 << 40, (40,), generator=generator) % 400)
        grads = torch.randn(len(ids), SPEC.dim, generator=generator)
        owner = route(ids, servers)
        for server, table in enumerate(shards):
            table.apply(ids[owner == server], grads[owner == server])
    return shards


def contents(shards: list[DynamicShard]) -> dict[str, dict[int, Any]]:
    """Every id's row, state and counters, and every waiting id's, whichever server holds it."""
    found: dict[str, dict[int, Any]] = {"rows": {}, "waiting": {}}
    for table in shards:
        saved = table.snapshot()
        for i, id_ in enumerate(saved["ids"].tolist()):
            state = [saved["state"][name][i] for name in sorted(saved["state"])]
            row = (saved["rows"][i], *state, saved["counts"][i], saved["last_update"][i])
            found["rows"][id_] = [value.tolist() for value in row]
        for i, id_ in enumerate(saved["pending_ids"].tolist()):
            waiting = (saved["pending_counts"][i], saved["pending_last_seen"][i])
            found["waiting"][id_] = [value.tolist() for value in waiting]
    return found


@pytest.mark.parametrize("new", [3, 1])
def test_a_checkpoint_of_two_servers_restores_on_another_count_with_the_same_contents(
    new: int,
) -> None:
    old = trained_shards(2)
    entries = [table.snapshot() for table in old]
    restored = []
    for server in range(new):
        table = DynamicShard(SPEC, server, new, ADAM, DynamicOptions())
        table.adopt(dynamic_share(entries, server, new), entries[0]["step"])
        assert bool((route(table.snapshot()["ids"], new) == server).all())
        restored.append(table)
    before, after = contents(old), contents(restored)
    assert len(before["rows"]) > 10 and len(before["waiting"]) > 3
    assert after == before
    assert [t.optimizer.step for t in restored] == [12] * new


def test_the_written_entry_passes_the_format_checks_and_a_wrong_one_is_named() -> None:
    files = saved_servers(20, 10, 2, servers=2, step=12)
    for saved, table in zip(files, trained_shards(2), strict=True):
        saved["owner"] = "team/ctr"
        saved["tables"].append({**table.snapshot(), "table": 1})
    for saved in files:
        checkpoint_contents.check_file(saved, "team/ctr", saved["server"], 2, 12)
    checkpoint_contents.check_together(files)
    files[1]["tables"][1]["counts"] = files[1]["tables"][1]["counts"][:-1]
    with pytest.raises(checkpoint_contents.UnusableCheckpointError, match=r"tables\[1\].counts"):
        checkpoint_contents.check_file(files[1], "team/ctr", 1, 2, 12)


@pytest.mark.slow
def test_a_job_checkpointed_on_two_servers_resumes_on_three_and_on_one(tmp_path: Path) -> None:
    store = tmp_path / "checkpoints"
    config = {"steps": 6, "batch": 16, "seed": 4, "table_rows": 80, "dynamic": True}
    flags = ["--optimizer", "adagrad", "--lr", "0.1", "--checkpoint-dir", str(store)]
    (tmp_path / "two").mkdir()
    first = run_recorder(tmp_path / "two", "--servers", "2", *flags, **config)
    assert first.returncode == 0, first.output
    for servers in (3, 1):
        out = tmp_path / str(servers)
        out.mkdir()
        # Only the 2-server files of step 6 are there: the resumed job trains no further step
        # and reads every row back from its re-sliced shards.
        resumed = subprocess.run(
            [
                *(sys.executable, "-m", "psjob_runtime.launch", "--servers", str(servers)),
                *("--timeout", "60", *flags, "--config", json.dumps({**config, "out": str(out)})),
                *("--", sys.executable, str(RECORDER)),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"(2 -> {servers} servers)" in resumed.stdout
        record = torch.load(out / "worker-0.pt")
        assert record["start_step"] == 6
        torch.testing.assert_close(record["rows"], first.records[0]["rows"], rtol=0, atol=0)
        torch.testing.assert_close(record["params"], first.records[0]["params"], rtol=0, atol=0)


def test_a_restarted_job_may_tighten_its_tables_options_and_the_restored_rows_are_trimmed() -> None:
    entries = [table.snapshot() for table in trained_shards(2)]
    table = DynamicShard(SPEC, 0, 1, ADAM, DynamicOptions())
    table.adopt(dynamic_share(entries, 0, 1), entries[0]["step"])
    before = table.snapshot()
    tighter = DynamicTableSpec(0, SPEC.dim, SPEC.init_scale, DynamicOptions(2, 4, 10))
    table.reconfigure(tighter, DynamicOptions(max_rows_per_server=8))
    after = table.snapshot()
    assert table.options == DynamicOptions(2, 4, 8)
    # Step 12, TTL 4: rows last updated at step 8 or before go; then the 8 most recent stay.
    recent = before["last_update"] > 8
    assert len(after["ids"]) == min(8, int(recent.sum()))
    assert int(after["last_update"].min()) >= int(before["last_update"][recent].min())
    assert bool((after["pending_last_seen"] > 8).all())
