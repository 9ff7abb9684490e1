"""Export for serving: a trained job's export predicts what the trained model predicted, in a
process that has only torch, and an incremental export applied to its base equals a full one."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from psjob_runtime.serving import apply_incremental, load_export

from tests.runtime.jobs import WORKLOADS, launch

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serving.md"

_NO_PSJOB = """
import sys

class _NoPsjob:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "psjob_runtime":
            raise ImportError(f"{name}: a serving process must not need psjob")

sys.meta_path.insert(0, _NoPsjob())
"""

_PREDICT = """
import torch
from torch import nn

torch.set_num_threads(1)
DENSE_FIELDS, CATEGORICAL_FIELDS, DIM, HIDDEN = 13, 26, 8, 32


class Rows(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.served = table  # a dict of tensors: no parameters, nothing in the state_dict

    def forward(self, ids):
        return lookup(self.served, ids, default=torch.zeros(DIM))


class Ctr(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = table
        inputs = DENSE_FIELDS + CATEGORICAL_FIELDS * DIM
        self.mlp = nn.Sequential(nn.Linear(inputs, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))

    def forward(self, dense, ids):
        return self.mlp(torch.cat([dense, self.table(ids).flatten(1)], 1)).squeeze(1)


def predict(export, held_out):
    model = Ctr(Rows(export["tables"][0]))
    model.load_state_dict(export["dense"])  # strict: every name the export holds, no other
    with torch.no_grad():
        return model(held_out["dense"], held_out["ids"])


full, base, incremental, held_out_file = sys.argv[1:]
held_out = torch.load(held_out_file, weights_only=True)
scores = predict(load_export(full), held_out)
difference = (scores - held_out["scores"]).abs().max().item()
assert difference <= 1e-6, difference
updated = apply_incremental(load_export(base), incremental)
assert torch.equal(predict(updated, held_out), scores)
assert not [name for name in sys.modules if name.startswith("psjob")], sys.modules.keys()
print(f"served {len(scores)} predictions, largest difference {difference}")
"""


def docs_loading_code() -> str:
    """The code block of docs/serving.md that defines load_export, apply_incremental, lookup."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return next(block for block in blocks if "def load_export" in block)


def export(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "psjob_runtime", "export", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=WORKLOADS,  # where --model export_ctr:dense_model is imported from
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def train_and_export(tmp_path: Path, **config: object) -> tuple[Path, Path, Path]:
    """Train export_ctr.py (checkpoints at steps 10, 20, 30), then export step 30 in full, step
    20 in full (the base), and step 30 since that base; return (full, base, incremental)."""
    store = tmp_path / "checkpoints"
    done = launch(
        *("--servers", "2", "--workers", "2", "--optimizer", "adagrad", "--lr", "0.05"),
        *("--checkpoint-dir", str(store), "--checkpoint-every", "10"),
        *("--config", json.dumps({"out": str(tmp_path), "steps": 30, **config})),
        worker=[sys.executable, str(WORKLOADS / "export_ctr.py")],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = sorted(store.glob("step-*"))
    assert [p.name for p in steps] == [f"step-0000000{s}" for s in (10, 20, 30)]
    older = tmp_path / "older-checkpoints"  # the job's checkpoint folder as it was at step 20
    shutil.copytree(store, older, ignore=lambda folder, _: ["step-000000030"])

    full, base, incremental = (tmp_path / name for name in ("full", "base", "incremental"))
    model = ("--model", "export_ctr:dense_model")
    printed = export(str(store), str(full), *model).stdout
    assert f"exported step 30 of job local/local to {full} (full;" in printed
    export(str(older), str(base), *model)
    printed = export(str(store), str(incremental), "--since", str(base), *model).stdout
    assert "exported step 30 since step 20 of job local/local" in printed
    return full, base, incremental


def assert_serves_the_trained_predictions(
    tmp_path: Path, full: Path, base: Path, incremental: Path
) -> None:
    """The docs' loading code, in a process where importing psjob fails, predicts what worker 0
    predicted on held-out data, from the full export and from base + incremental."""
    script = _NO_PSJOB + docs_loading_code() + _PREDICT
    files = [str(path) for path in (full, base, incremental, tmp_path / "heldout.pt")]
    served = subprocess.run(
        [sys.executable, "-c", script, *files],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert served.returncode == 0, served.stdout + served.stderr
    assert "served 2000 predictions" in served.stdout


def assert_applies_to_the_full_export(full: Path, base: Path, incremental: Path) -> None:
    whole, applied = load_export(full), apply_incremental(load_export(base), incremental)
    assert applied["step"] == whole["step"] == 30
    assert applied["dense"].keys() == whole["dense"].keys()
    assert all(torch.equal(applied["dense"][k], whole["dense"][k]) for k in whole["dense"])
    assert torch.equal(applied["tables"][0]["ids"], whole["tables"][0]["ids"])
    assert torch.equal(applied["tables"][0]["rows"], whole["tables"][0]["rows"])


def table_entry(export: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads((export / "manifest.json").read_text())["tables"][0]
    return entry


@pytest.mark.slow
def test_an_export_of_a_fixed_table_predicts_like_the_trained_model_with_torch_alone(
    tmp_path: Path,
) -> None:
    full, base, incremental = train_and_export(tmp_path)
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["kind"] == "full" and manifest["dense"]["layout"] == "state_dict"
    assert [p["name"] for p in manifest["dense"]["parameters"]] == [
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
    ]
    assert manifest["tables"] == [
        {
            **{"table": 0, "kind": "fixed", "dim": 8, "num_rows": 5000, "rows": 5000},
            **{"evicted": 0, "file": "tables/0.pt", "digests": "digests/0.pt"},
        }
    ]
    # Ten steps of 2 x 256 samples touch a fraction of the 5,000 rows: only those travel.
    assert 0 < table_entry(incremental)["rows"] < 5000
    assert torch.equal(load_export(full)["tables"][0]["ids"], torch.arange(5000))
    assert_applies_to_the_full_export(full, base, incremental)
    assert_serves_the_trained_predictions(tmp_path, full, base, incremental)


@pytest.mark.slow
def test_an_export_of_a_dynamic_table_predicts_like_the_trained_model_with_torch_alone(
    tmp_path: Path,
) -> None:
    full, base, incremental = train_and_export(tmp_path, dynamic=True, ttl_steps=5)
    entry, delta = table_entry(full), table_entry(incremental)
    assert (entry["kind"], entry["num_rows"]) == ("dynamic", None)
    ids = load_export(full)["tables"][0]["ids"]
    assert len(ids) == entry["rows"] > 0
    assert bool((ids[1:] > ids[:-1]).all()) and int(ids.abs().max()) > 1 << 40  # hashed ids
    # Rows not updated during the last 5 steps expire: step 20 held ids that step 30 does not.
    assert 0 < delta["rows"] < entry["rows"] and delta["evicted"] > 0
    assert_applies_to_the_full_export(full, base, incremental)
    assert_serves_the_trained_predictions(tmp_path, full, base, incremental)
