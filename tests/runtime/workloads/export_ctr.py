"""A small ctr job for the export tests: it trains, then records its predictions on held-out data.

The model takes its table as an argument, as a user's model for serving would: training passes
the session's table, `dense_model()` (the export's --model factory) passes a placeholder, and a
serving process passes the exported rows. Worker 0 writes <out>/heldout.pt with the held-out
inputs and its scores after the last step, the state the servers' final checkpoint holds. With
`dynamic` the table is a dynamic one on 64-bit hashed ids, with admission and a TTL, so that
rows come, change and go between checkpoints.
"""

from pathlib import Path

import psjob_runtime
import torch
from psjob_runtime import hashing
from psjob_runtime.examples.ctr import CATEGORICAL_FIELDS, DENSE_FIELDS, CtrConfig, Synthetic
from pydantic import BaseModel, ConfigDict
from torch import nn

DIM, HIDDEN, TABLE_ROWS = 8, 32, 5_000
HELD_OUT_WORKER, HASH_SALT = 1_000_000, 2_024


class ExportCtrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str
    steps: int = 30
    batch: int = 256
    held_out: int = 2_000
    dynamic: bool = False
    """A dynamic table on 64-bit hashed ids, admitting an id at its 2nd push, rows kept for
    `ttl_steps` steps after their last update; else a fixed table of TABLE_ROWS rows."""
    ttl_steps: int = 5


class ServedCtr(nn.Module):
    """Embeddings of the 26 fields and the 13 dense features into an MLP; `table` maps ids."""

    def __init__(self, table: nn.Module):
        super().__init__()
        self.table = table
        self.mlp = nn.Sequential(
            nn.Linear(DENSE_FIELDS + CATEGORICAL_FIELDS * DIM, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 1),
        )

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.table(ids).flatten(1)
        logits: torch.Tensor = self.mlp(torch.cat([dense, vectors], 1))
        return logits.squeeze(1)


def dense_model() -> nn.Module:
    """The export's --model factory: the trained model with a placeholder for the table."""
    return ServedCtr(nn.Identity())


def hashed(ids: torch.Tensor) -> torch.Tensor:
    """Ids spread over all of int64, as hashed features are."""
    return hashing.mix64(ids, salt=HASH_SALT)


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(ExportCtrConfig)
    data = Synthetic(CtrConfig(table_rows=TABLE_ROWS, dim=DIM))
    torch.manual_seed(0)
    if config.dynamic:
        table = session.dynamic_embedding(DIM, admit_after=2, ttl_steps=config.ttl_steps)
    else:
        table = session.embedding(TABLE_ROWS, DIM)
    model = ServedCtr(table)
    optimizer = session.optimizer(model)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(session.start_step, config.steps):
        dense, ids, clicks = data.batch(session.worker_index, step, config.batch)
        ids = hashed(ids) if config.dynamic else ids
        optimizer.zero_grad()
        loss_fn(model(dense, ids), clicks).backward()
        optimizer.step()
    session.quiesce()
    if session.worker_index == 0:
        dense, ids, clicks = data.batch(HELD_OUT_WORKER, 0, config.held_out)
        ids = hashed(ids) if config.dynamic else ids
        with torch.no_grad():
            scores = model(dense, ids)
        held_out = {"dense": dense, "ids": ids, "clicks": clicks, "scores": scores}
        torch.save(held_out, Path(config.out) / "heldout.pt")
    session.finish()


if __name__ == "__main__":
    main()
