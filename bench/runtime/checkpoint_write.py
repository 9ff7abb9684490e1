"""Checkpoint write speed against a raw file write of the same bytes, in the same process.

The state is one server's share of the ctr job (10M x 16 table on 2 servers): 5M x 16 rows and
their Adagrad sums (640 MB) plus a small dense slice. Each pair writes it once as a psjob
checkpoint (torch.save to a temporary file, fsync, rename, directory fsync) and once as raw
bytes (the same tensors' buffers written to one file, fsync), alternating which goes first, in
the same folder. The page cache is shared with everything else on the machine, so single writes
vary by 2x or more; the report shows each side's median and the median pair's ratio; 1.0 means
the checkpoint format costs nothing on top of writing the bytes. Reading back (the restore a
restarted server does, memory-mapped and cut to its share) is timed too.

    python -m bench.runtime.checkpoint_write     # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from psjob_runtime import checkpoint
from psjob_runtime.reslice import table_share

from bench.runtime.jobs import log

ROWS, DIM, DENSE = 5_000_000, 16, 13_793
OWNER = "bench/checkpoint-write"


def server_state() -> dict[str, Any]:
    rows = torch.rand(ROWS, DIM)
    return {
        "format": checkpoint.FORMAT,
        "server": 0,
        "servers": 2,
        "step": 0,
        "updates": 0,
        "worker_steps": [0, 0],
        "dense": {
            "total": DENSE * 2,
            "start": 0,
            "stop": DENSE,
            "values": torch.rand(DENSE),
            "state": {"sum": torch.rand(DENSE), "step": torch.tensor(0.0)},
        },
        "tables": [
            {
                "table": 0,
                "num_rows": ROWS * 2,
                "dim": DIM,
                "rows": rows,
                "state": {"sum": rows * rows},
                "step": 0,
            }
        ],
    }


def raw_write(path: Path, tensors: list[torch.Tensor]) -> None:
    with path.open("wb") as out:
        for tensor in tensors:
            out.write(tensor.numpy().data)
        out.flush()
        os.fsync(out.fileno())


def measure(quick: bool) -> dict[str, Any]:
    """Seconds of each pair (raw, psjob), their medians, the median ratio, and one restore."""
    pairs_wanted = 2 if quick else 5
    log(f"checkpoint_write: {pairs_wanted} pairs")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(pairs_wanted)
    finally:
        torch.set_num_threads(before)


def _measure(pairs_wanted: int) -> dict[str, Any]:
    state = server_state()
    table = state["tables"][0]
    tensors = [
        state["dense"]["values"],
        state["dense"]["state"]["sum"],
        table["rows"],
        table["state"]["sum"],
    ]
    size = sum(t.numel() * t.element_size() for t in tensors)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="psjob-ckpt-bench-") as folder:
        root = Path(folder)
        for step in range(pairs_wanted):
            state["step"] = step
            timings = {}
            # Alternate which side goes first; delete both files after each pair, so that
            # both always write a new file into the same amount of free page cache.
            for side in ("raw", "psjob") if step % 2 == 0 else ("psjob", "raw"):
                started = time.perf_counter()
                if side == "raw":
                    raw_write(root / "raw.bin", tensors)
                else:
                    checkpoint.write(root, 0, 2, step, state, owner=OWNER)
                timings[side] = time.perf_counter() - started
            (root / "raw.bin").unlink()
            if step < pairs_wanted - 1:
                shutil.rmtree(checkpoint.step_dir(root, step))
            pairs.append({"raw": timings["raw"], "psjob": timings["psjob"]})
        # A second server's file, so that the folder holds a complete checkpoint to restore.
        second = {**state, "dense": {**state["dense"], "start": DENSE, "stop": 2 * DENSE}}
        checkpoint.write(root, 1, 2, pairs_wanted - 1, {**second, "server": 1}, owner=OWNER)
        started = time.perf_counter()
        found = checkpoint.latest(root, owner=OWNER)
        assert found is not None
        table_share([f["tables"][0] for f in found.files], 0, 2)
        restore = time.perf_counter() - started
    return {
        "bytes": size,
        "pairs": pairs,
        "raw_seconds": statistics.median(p["raw"] for p in pairs),
        "psjob_seconds": statistics.median(p["psjob"] for p in pairs),
        "ratio": statistics.median(p["raw"] / p["psjob"] for p in pairs),
        "restore_seconds": restore,
    }


if __name__ == "__main__":
    print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
