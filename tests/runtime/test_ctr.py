"""The ctr example learns what its hidden model knows: AUC within 0.02 of the hidden model's,
with its fixed table and with a dynamic table of 64-bit hashed ids."""

import re
import sys

import pytest

from tests.runtime.jobs import launch

CTR = [sys.executable, "-m", "psjob_runtime.examples.ctr"]


def _trained_within_reach(extra: str = "") -> str:
    """Train ctr on 2 servers and 2 workers; assert its AUC; return what the job printed."""
    # A small table and few steps keep CI fast; examples/ctr.yaml trains the 10M-row table.
    config = f'{{"tableRows": 200000, "steps": 120, "batchSize": 1024, "maxAucGap": 0.02{extra}}}'
    done = launch(
        *("--servers", "2", "--workers", "2", "--optimizer", "adagrad", "--lr", "0.05"),
        *("--config", config),
        worker=CTR,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"test AUC ([\d.]+), hidden model's AUC ([\d.]+)", done.stdout)
    assert found, done.stdout
    trained, hidden = float(found.group(1)), float(found.group(2))
    assert hidden - trained <= 0.02
    assert trained > 0.75  # far above chance
    return done.stdout


@pytest.mark.slow
def test_ctr_reaches_the_hidden_models_auc_with_the_table_on_two_servers() -> None:
    _trained_within_reach()


@pytest.mark.slow
def test_ctr_on_a_dynamic_table_reaches_the_hidden_models_auc() -> None:
    printed = _trained_within_reach(', "dynamic": true')
    rows = [int(n) for n in re.findall(r"dynamic table 0 \(dim 16\): (\d+) rows", printed)]
    assert len(rows) == 2 and min(rows) > 0.9 * max(rows)  # the hash spreads ids evenly
