"""Export for serving from checkpoint files built in memory: which step it reads, what it writes,
what an incremental export holds, and the clear refusals of bad folders and options."""

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from psjob_runtime import checkpoint, serving
from psjob_runtime.dynamic_table import route
from psjob_runtime.export import ExportRequest, export
from psjob_runtime.export_source import ExportError
from psjob_runtime.serving import apply_incremental, load_export

from tests.runtime.checkpoints import saved_servers

OWNER = "team-a/ctr"
TOTAL, ROWS, DIM = 20, 10, 2
DOCS = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def write_step(
    root: Path, step: int, servers: int = 2, owner: str = OWNER, bump: tuple[int, ...] = ()
) -> None:
    """A checkpoint whose dense value i is i and whose row i holds i (+ 100 for ids in bump)."""
    for saved in saved_servers(TOTAL, ROWS, DIM, servers, step):
        table = saved["tables"][0]
        rows = table["rows"].clone()
        for row in bump:
            if row % servers == saved["server"]:
                rows[row // servers] += 100
        table["rows"] = rows
        checkpoint.write(root, saved["server"], servers, step, saved, owner=owner)


def run(root: Path, out: Path, **options: Any) -> None:
    export(ExportRequest(checkpoint_dir=root, out=out, **options))


def test_the_newest_usable_step_is_exported_stitched_across_servers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5, servers=3)
    write_step(root, 10, servers=2)
    (checkpoint.step_dir(root, 10) / checkpoint.file_name(1, 2)).unlink()  # server 1 died
    run(root, tmp_path / "out")
    exported = load_export(tmp_path / "out")
    assert exported["step"] == 5
    assert torch.equal(exported["dense"]["values"], torch.arange(TOTAL, dtype=torch.float32))
    table = exported["tables"][0]
    assert torch.equal(table["ids"], torch.arange(ROWS))
    assert torch.equal(table["rows"][:, 0], torch.arange(ROWS, dtype=torch.float32))
    assert "step-000000010: incomplete (not every server wrote its file)" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_an_incremental_export_holds_the_changed_rows_and_applies_to_its_base(
    tmp_path: Path,
) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5)
    run(root, tmp_path / "base")
    write_step(root, 10, bump=(3, 8))
    run(root, tmp_path / "incremental", since=tmp_path / "base")
    write_step(root, 15, bump=(3, 4, 8))
    run(root, tmp_path / "next", since=tmp_path / "incremental")  # a chain of incrementals
    run(root, tmp_path / "full")

    delta = torch.load(tmp_path / "incremental" / "tables" / "0.pt", weights_only=True)
    assert delta["ids"].tolist() == [3, 8]
    assert delta["rows"][:, 0].tolist() == [103.0, 108.0]
    assert delta["evicted"].tolist() == []
    following = torch.load(tmp_path / "next" / "tables" / "0.pt", weights_only=True)
    assert following["ids"].tolist() == [4]

    applied = apply_incremental(
        apply_incremental(load_export(tmp_path / "base"), tmp_path / "incremental"),
        tmp_path / "next",
    )
    full = load_export(tmp_path / "full")
    assert applied["step"] == full["step"] == 15
    assert torch.equal(applied["dense"]["values"], full["dense"]["values"])
    assert torch.equal(applied["tables"][0]["ids"], full["tables"][0]["ids"])
    assert torch.equal(applied["tables"][0]["rows"], full["tables"][0]["rows"])
    with pytest.raises(ValueError, match="does not apply to an export of step 5"):
        apply_incremental(load_export(tmp_path / "base"), tmp_path / "next")


def write_dynamic_step(
    root: Path, step: int, rows: dict[int, float], pending: list[int], everywhere: int = 0
) -> None:
    """The fixed checkpoint of write_step plus dynamic table 1: id -> a row of that value, each
    id on the server it routes to (`everywhere` on both: a damaged checkpoint), and ids waiting
    for admission (no row) on server 0."""
    for saved in saved_servers(TOTAL, ROWS, DIM, 2, step):
        saved["tables"][0]["kind"] = "fixed"
        ids = torch.tensor(list(rows), dtype=torch.int64)
        mine = ids[(route(ids, 2) == saved["server"]) | (ids == everywhere)]
        values = torch.tensor([rows[int(i)] for i in mine]).unsqueeze(1).repeat(1, DIM)
        waiting = torch.tensor(pending if saved["server"] == 0 else [], dtype=torch.int64)
        saved["tables"].append(
            {
                **{"kind": "dynamic", "table": 1, "dim": DIM, "step": step, "init_scale": 0.01},
                "options": {"admit_after": 2, "ttl_steps": None, "max_rows_per_server": None},
                **{"ids": mine, "rows": values, "state": {"sum": values.abs()}},
                **{"counts": torch.full_like(mine, 2), "last_update": torch.full_like(mine, step)},
                **{"pending_ids": waiting, "pending_counts": torch.ones_like(waiting)},
                "pending_last_seen": torch.full_like(waiting, step),
            }
        )
        checkpoint.write(root, saved["server"], 2, step, saved, owner=OWNER)


def test_a_dynamic_table_exports_its_rows_by_id_and_its_evictions(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    huge = 1 << 62
    write_dynamic_step(root, 5, {900: 1.0, -5: 2.0, huge: 3.0, 7: 4.0}, pending=[55])
    run(root, tmp_path / "base")
    write_dynamic_step(root, 10, {-5: 2.0, huge: 3.0, 7: 6.0, 31: 5.0}, pending=[])
    run(root, tmp_path / "incremental", since=tmp_path / "base")
    run(root, tmp_path / "full")

    base = load_export(tmp_path / "base")["tables"][1]
    assert base["ids"].tolist() == [-5, 7, 900, huge]  # ascending; 55 has no row yet
    assert base["rows"][:, 0].tolist() == [2.0, 4.0, 1.0, 3.0]
    entry = json.loads((tmp_path / "base" / "manifest.json").read_text())["tables"][1]
    assert (entry["kind"], entry["num_rows"], entry["rows"]) == ("dynamic", None, 4)

    delta = torch.load(tmp_path / "incremental" / "tables" / "1.pt", weights_only=True)
    assert delta["ids"].tolist() == [7, 31]  # changed, new
    assert delta["evicted"].tolist() == [900]
    applied = apply_incremental(load_export(tmp_path / "base"), tmp_path / "incremental")
    full = load_export(tmp_path / "full")
    for table in (0, 1):
        assert torch.equal(applied["tables"][table]["ids"], full["tables"][table]["ids"])
        assert torch.equal(applied["tables"][table]["rows"], full["tables"][table]["rows"])
    served = serving.lookup(full["tables"][1], torch.tensor([31, 55, huge]), torch.zeros(DIM))
    assert served[:, 0].tolist() == [5.0, 0.0, 3.0]


def test_a_step_holding_an_id_on_two_servers_is_passed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "checkpoints"
    write_dynamic_step(root, 5, {1: 1.0, 2: 2.0}, pending=[])
    write_dynamic_step(root, 10, {1: 1.0, 2: 2.0}, pending=[], everywhere=2)
    run(root, tmp_path / "out")
    assert load_export(tmp_path / "out")["step"] == 5
    assert "step-000000010 (2 servers): table 1 holds ids [2] more than once" in (
        capsys.readouterr().err
    )


def test_the_docs_carry_the_serving_functions_as_the_package_has_them() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    documented = next(block for block in blocks if "def load_export" in block)
    for function in (serving.load_export, serving.apply_incremental, serving.lookup):
        assert inspect.getsource(function) in documented, function.__name__


def test_lookup_gives_the_default_for_ids_a_table_does_not_hold() -> None:
    table = {"ids": torch.tensor([2, 7, 40]), "rows": torch.tensor([[1.0], [2.0], [3.0]])}
    found = serving.lookup(table, torch.tensor([[40, 3], [2, 99]]), torch.tensor([-1.0]))
    assert found.tolist() == [[[3.0], [-1.0]], [[1.0], [-1.0]]]
    empty = {"ids": torch.tensor([], dtype=torch.int64), "rows": torch.empty(0, 1)}
    assert serving.lookup(empty, torch.tensor([5]), torch.tensor([0.5])).tolist() == [[0.5]]


def test_foreign_and_incomplete_checkpoint_folders_are_refused_with_every_reason(
    tmp_path: Path,
) -> None:
    with pytest.raises(ExportError, match="does not exist or is not a folder"):
        run(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="holds no step-NNNNNNNNN folder"):
        run(tmp_path / "empty", tmp_path / "out")

    root = tmp_path / "checkpoints"
    write_step(root, 5)
    (checkpoint.step_dir(root, 5) / checkpoint.file_name(0, 2)).unlink()
    foreign = checkpoint.step_dir(root, 7)
    foreign.mkdir()
    torch.save({"weights": torch.zeros(3)}, foreign / "server-0-of-1.pt")
    garbage = checkpoint.step_dir(root, 9)
    garbage.mkdir()
    (garbage / "server-0-of-1.pt").write_bytes(b"not a torch file")
    with pytest.raises(ExportError) as refused:
        run(root, tmp_path / "out")
    message = str(refused.value)
    assert f"no usable checkpoint under {str(root)!r}" in message
    assert "step-000000009 (1 servers): server-0-of-1.pt does not open" in message
    assert "step-000000007 (1 servers): server-0-of-1.pt: not a psjob checkpoint" in message
    assert "step-000000005: incomplete" in message
    assert not (tmp_path / "out").exists()


def test_since_must_name_an_export_whose_manifest_names_its_own_files(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5)
    with pytest.raises(ExportError, match=r"is not a psjob export: manifest\.json cannot be read"):
        run(root, tmp_path / "out", since=root)
    run(root, tmp_path / "base")
    manifest = tmp_path / "base" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"digests/0.pt"', '"../../secret.pt"'))
    with pytest.raises(ExportError, match=r"tables.0: .* expected 'tables/0.pt' and 'digests/0"):
        run(root, tmp_path / "out", since=tmp_path / "base")
    assert not (tmp_path / "out").exists()


def test_owner_picks_one_job_of_a_shared_folder(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5)
    write_step(root, 10, owner="team-b/other", bump=(1,))
    run(root, tmp_path / "newest")
    run(root, tmp_path / "mine", owner=OWNER)
    assert load_export(tmp_path / "newest")["step"] == 10
    assert load_export(tmp_path / "mine")["step"] == 5
    with pytest.raises(ExportError, match="exported from job 'team-a/ctr', the checkpoint belongs"):
        run(root, tmp_path / "incremental", since=tmp_path / "mine")
    with pytest.raises(ExportError, match="no usable checkpoint of job 'team-c/none'"):
        run(root, tmp_path / "none", owner="team-c/none")


def test_out_is_never_overwritten_unless_it_is_an_export_and_replace_is_given(
    tmp_path: Path,
) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5)
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("someone's data")
    with pytest.raises(ExportError, match="is not empty and holds no export"):
        run(root, data)
    assert (data / "keep.txt").read_text() == "someone's data"

    out = tmp_path / "out"
    out.mkdir()  # empty: fine
    run(root, out)
    write_step(root, 10)
    with pytest.raises(ExportError, match="holds an export already: pass --replace"):
        run(root, out)
    with pytest.raises(ExportError, match="is the --since export"):
        run(root, out, since=out, replace=True)
    run(root, out, replace=True)
    assert load_export(out)["step"] == 10
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoints", "data", "out"}  # none left


def test_model_names_the_dense_parameters_or_is_refused_when_it_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5)
    (tmp_path / "models.py").write_text(
        "from torch import nn\n"
        "def fits():\n"  # 12 + 4 + 2 + 2 = 20 elements; the frozen table is not among them
        "    frozen = nn.Embedding(9, 2).requires_grad_(False)\n"
        "    return nn.Sequential(nn.Linear(3, 4), frozen, nn.Linear(1, 2))\n"
        "def too_big():\n"
        "    return nn.Linear(5, 5)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run(root, tmp_path / "named", model="models:fits")
    state = load_export(tmp_path / "named")["dense"]
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert torch.equal(state["0.weight"], torch.arange(12, dtype=torch.float32).reshape(4, 3))
    assert state["2.weight"].tolist() == [[16.0], [17.0]]
    with pytest.raises(ExportError, match=r"30 trainable elements .* hold 20: give the factory"):
        run(root, tmp_path / "wrong", model="models:too_big")
    with pytest.raises(ExportError, match="is not module:factory"):
        run(root, tmp_path / "wrong", model="models")
    with pytest.raises(ExportError, match="has no callable 'absent'"):
        run(root, tmp_path / "wrong", model="models:absent")


def test_the_command_prints_what_it_wrote_and_fails_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write_step(root, 5)
    command = [sys.executable, "-m", "psjob_runtime", "export", str(root)]
    done = subprocess.run([*command, str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"exported step 5 of job {OWNER} to {tmp_path / 'out'} (full;")
    again = subprocess.run([*command, str(tmp_path / "out")], capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr.startswith(f"psjob export: OUT {str(tmp_path / 'out')!r} holds an export")
    assert "Traceback" not in again.stderr
