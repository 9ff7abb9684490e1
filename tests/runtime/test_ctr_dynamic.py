"""The ctr example on a dynamic table of 64-bit hashed ids reaches the hidden model's AUC within
0.02, as the fixed table does (test_ctr.py)."""

import re
import sys

import pytest

from tests.runtime.jobs import launch

CTR = [sys.executable, "-m", "psjob_runtime.examples.ctr"]


@pytest.mark.slow
def test_ctr_on_a_dynamic_table_reaches_the_hidden_models_auc() -> None:
    config = (
        '{"tableRows": 200000, "steps": 120, "batchSize": 1024, "maxAucGap": 0.02, "dynamic": true}'
    )
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
    assert trained > 0.75
    rows = [int(n) for n in re.findall(r"dynamic table 0 \(dim 16\): (\d+) rows", done.stdout)]
    assert len(rows) == 2 and min(rows) > 0.9 * max(rows)  # the hash spreads ids evenly
