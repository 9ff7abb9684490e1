"""The ctr example learns what its hidden model knows: AUC within 0.02 of the hidden model's."""

import re
import sys

import pytest

from tests.runtime.jobs import launch

CTR = [sys.executable, "-m", "psjob_runtime.examples.ctr"]


@pytest.mark.slow
def test_ctr_reaches_the_hidden_models_auc_with_the_table_on_two_servers() -> None:
    # A small table and few steps keep CI fast; examples/ctr.yaml trains the 10M-row table.
    config = '{"tableRows": 200000, "steps": 120, "batchSize": 1024, "maxAucGap": 0.02}'
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
