"""ctr: click-through prediction with a 10-million-row embedding table held by the servers.

    python -m psjob_runtime.launch --servers 2 --workers 2 --optimizer adagrad --lr 0.05 -- \\
        python -m psjob_runtime.examples.ctr

Synthetic data shaped like Criteo's: 13 dense features and 26 categorical fields whose ids are
drawn from a Zipf distribution over vocabularies of very different sizes, all 26 sharing one
table of `tableRows` rows (each field owns a range). Labels come from a hidden logistic model
(a weight per dense feature, an effect per id), so the hidden model's own AUC on held-out data
is the best any model can reach; worker 0 prints both AUCs at the end. Every worker generates
its batch from (seed, worker, step), so a restarted job resumes with exactly the data it lost.

spec.training.config (all optional): tableRows, dim, steps, batchSize, evalSamples, zipf, seed,
and maxAucGap: when set, worker 0 fails (exit 1) if its AUC trails the hidden model's by more.

With `dynamic: true` the model uses a dynamic table (session.dynamic_embedding) and each id
becomes a 64-bit hash of it, as feature hashing gives in production: no row count to choose,
one row per distinct id. admitAfter, ttlSteps and maxRowsPerServer set the table's options
(docs/runtime.md, Dynamic tables); tableRows then only sizes the synthetic vocabularies.
"""

import resource
import time

import torch
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from torch import nn

import psjob_runtime
from psjob_runtime import hashing
from psjob_runtime.embedding import ShardedEmbedding

DENSE_FIELDS, CATEGORICAL_FIELDS = 13, 26
_FIELD_SHARES = (
    *(0.3, 0.2, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03, 0.025, 0.02, 0.015, 0.012, 0.01),
    *(0.008, 0.006, 0.005, 0.004, 0.003, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5),
)
"""Relative vocabulary sizes, from millions of ids down to a handful, as in Criteo."""
_HIDDEN_SALT, _EVAL_WORKER, _ID_HASH_SALT = 7_777, 1_000_000, 31_337
_CLICK_BIAS, _DENSE_WEIGHT, _ID_EFFECT = -1.2, 0.4, 0.35


class CtrConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    table_rows: int = Field(10_000_000, ge=CATEGORICAL_FIELDS * 4)
    dim: int = Field(16, ge=1)
    steps: int = Field(400, ge=1)
    batch_size: int = Field(2048, ge=1)
    eval_samples: int = Field(50_000, ge=100)
    zipf: float = Field(1.3, gt=1)
    seed: int = 0
    max_auc_gap: float | None = Field(None, gt=0)
    dynamic: bool = False
    admit_after: int = Field(0, ge=0)
    ttl_steps: int | None = Field(None, ge=1)
    max_rows_per_server: int | None = Field(None, ge=1)


class AucTooLowError(Exception):
    """The run finished but trails the hidden model by more than maxAucGap."""


def field_sizes(table_rows: int) -> list[int]:
    """Vocabulary size of each categorical field; together exactly `table_rows`."""
    total = sum(_FIELD_SHARES)
    sizes = [max(4, int(share / total * table_rows)) for share in _FIELD_SHARES]
    sizes[0] += table_rows - sum(sizes)
    return sizes


class Synthetic:
    """Batches of (dense, ids, label) keyed by (worker, step); the hidden model's logits."""

    def __init__(self, config: CtrConfig):
        self.config = config
        sizes = torch.tensor(field_sizes(config.table_rows), dtype=torch.float64)
        self.sizes = sizes
        self.offsets = torch.cumsum(sizes, 0).to(torch.int64) - sizes.to(torch.int64)
        self.dense_weight = hashing.normal(torch.arange(DENSE_FIELDS), _HIDDEN_SALT) * _DENSE_WEIGHT

    def _ids(self, generator: torch.Generator, count: int) -> torch.Tensor:
        """Zipf(s) ranks per field by the inverse of the continuous CDF, offset into the table."""
        u = torch.rand(count, CATEGORICAL_FIELDS, generator=generator, dtype=torch.float64)
        s = self.config.zipf
        top = self.sizes.pow(1 - s)
        ranks = (1 + u * (top - 1)).pow(1 / (1 - s)).floor().to(torch.int64)
        ranks = torch.minimum(ranks, self.sizes.to(torch.int64)) - 1
        return ranks + self.offsets

    def logits(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        effects = hashing.normal(ids, _HIDDEN_SALT + 1).sum(1) * _ID_EFFECT
        return _CLICK_BIAS + dense @ self.dense_weight + effects

    def batch(self, worker: int, step: int, count: int) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(
            self.config.seed * 1_000_003 + worker * 100_003 + step
        )
        dense = torch.randn(count, DENSE_FIELDS, generator=generator)
        ids = self._ids(generator, count)
        clicks = torch.rand(count, generator=generator) < torch.sigmoid(self.logits(dense, ids))
        return dense, ids, clicks.float()


def hashed_ids(ids: torch.Tensor) -> torch.Tensor:
    """A field's ids as 64-bit hashes spread over all of int64 (never -2**63 in practice)."""
    return hashing.mix64(ids, _ID_HASH_SALT)


class CtrModel(nn.Module):
    """Embeddings of the 26 fields (from the servers' table) and the dense features into an MLP.

    With `hashed` the ids are looked up as their 64-bit hashes (a dynamic table)."""

    def __init__(self, table: ShardedEmbedding, dim: int, hidden: int = 64, hashed: bool = False):
        super().__init__()
        self.table = table
        self.hashed = hashed
        self.mlp = nn.Sequential(
            nn.Linear(DENSE_FIELDS + CATEGORICAL_FIELDS * dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.table(hashed_ids(ids) if self.hashed else ids).flatten(1)
        logits: torch.Tensor = self.mlp(torch.cat([dense, vectors], 1))
        return logits.squeeze(1)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula."""
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[torch.argsort(scores)] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    positives = labels.bool()
    count = int(positives.sum())
    negatives = len(labels) - count
    return float((ranks[positives].sum() - count * (count + 1) / 2) / (count * negatives))


def evaluate(model: CtrModel, data: Synthetic, samples: int) -> tuple[float, float]:
    """(trained model's AUC, hidden model's AUC) on held-out data no worker trained on."""
    dense, ids, clicks = data.batch(_EVAL_WORKER, 0, samples)
    with torch.no_grad():
        scores = torch.cat(
            [model(dense[i : i + 8192], ids[i : i + 8192]) for i in range(0, samples, 8192)]
        )
    return auc(scores, clicks), auc(data.logits(dense, ids), clicks)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    baseline_mb = _peak_mb()  # the interpreter, torch and gloo: the same for any model
    config = session.config_as(CtrConfig)
    torch.manual_seed(config.seed)
    data = Synthetic(config)
    if config.dynamic:
        table = session.dynamic_embedding(
            config.dim,
            admit_after=config.admit_after,
            ttl_steps=config.ttl_steps,
            max_rows_per_server=config.max_rows_per_server,
        )
    else:
        table = session.embedding(config.table_rows, config.dim)
    model = CtrModel(table, config.dim, hashed=config.dynamic)
    optimizer = session.optimizer(model)
    loss_fn = nn.BCEWithLogitsLoss()
    started, timed_from = time.monotonic(), session.start_step + 5
    for step in range(session.start_step, config.steps):
        if step == timed_from:
            started = time.monotonic()
        dense, ids, clicks = data.batch(session.worker_index, step, config.batch_size)
        optimizer.zero_grad()
        loss = loss_fn(model(dense, ids), clicks)
        loss.backward()
        optimizer.step()
        session.report(step=step, loss=loss.item(), samples=config.batch_size)
    session.quiesce()
    timed = config.steps - timed_from
    if timed > 0:
        rate = timed * config.batch_size / (time.monotonic() - started)
        print(f"worker {session.worker_index}: throughput {rate:.0f} samples/s", flush=True)
    peak_mb = _peak_mb()
    table_mb = config.table_rows * config.dim * 4 / 1e6
    size = "dynamic" if config.dynamic else f"{table_mb:.0f} MB"
    print(
        f"worker {session.worker_index}: peak memory {peak_mb:.0f} MB, {peak_mb - baseline_mb:.0f} "
        f"MB above start-up (the table is {size}, on the servers); pulled "
        f"{table.traffic.rows_pulled} rows in {config.steps - session.start_step} steps",
        flush=True,
    )
    if session.worker_index == 0:
        trained, hidden = evaluate(model, data, config.eval_samples)
        print(
            f"worker 0: test AUC {trained:.4f}, hidden model's AUC {hidden:.4f} "
            f"(gap {hidden - trained:.4f}) on {config.eval_samples} held-out samples",
            flush=True,
        )
        if config.max_auc_gap is not None and hidden - trained > config.max_auc_gap:
            raise AucTooLowError(
                f"AUC {trained:.4f} trails the hidden model's {hidden:.4f} by more than "
                f"maxAucGap {config.max_auc_gap}"
            )
    session.finish()


if __name__ == "__main__":
    main()
