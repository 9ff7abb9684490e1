"""Checkpoint files as servers write them, built in memory for the checkpoint tests."""

from typing import Any

import torch
from psjob_runtime import checkpoint
from psjob_runtime.sharding import balanced_slices


def saved_servers(total: int, rows: int, dim: int, servers: int, step: int) -> list[dict[str, Any]]:
    """Checkpoint contents of `servers` servers for a dense vector 0..total-1 and a table whose
    row i holds i (and optimizer state = 2x the values), as the servers write them."""
    values = torch.arange(total, dtype=torch.float32)
    table = torch.arange(rows, dtype=torch.float32).unsqueeze(1).repeat(1, dim)
    files = []
    for part in balanced_slices(total, servers):
        mine = table[part.server :: servers]
        files.append(
            {
                "format": checkpoint.FORMAT,
                "server": part.server,
                "servers": servers,
                "step": step,
                "updates": step,
                "worker_steps": [step, step],
                "dense": {
                    "total": total,
                    "start": part.start,
                    "stop": part.stop,
                    "values": values[part.start : part.stop],
                    "state": {
                        "exp_avg": 2 * values[part.start : part.stop],
                        "step": torch.tensor(float(step)),
                    },
                },
                "tables": [
                    {
                        "table": 0,
                        "num_rows": rows,
                        "dim": dim,
                        "rows": mine,
                        "state": {"sum": 2 * mine},
                        "step": step,
                    }
                ],
            }
        )
    return files
