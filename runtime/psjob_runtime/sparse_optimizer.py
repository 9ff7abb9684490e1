"""Row-wise optimizers for a shard of an embedding table: SGD, Adagrad and lazy Adam.

A sparse step touches only the rows a batch used, so the state lives per row and only the touched
rows' state changes ("lazy"). The arithmetic follows torch's own sparse paths step for step
(torch.optim.SGD and Adagrad with sparse gradients, torch.optim.SparseAdam), so a table trained
through the servers matches `nn.Embedding(sparse=True)` trained in one process. Like torch's
sparse paths they ignore weight decay and momentum; Adam's bias correction counts every update
of the table (SparseAdam's `step`), touched or not.
"""

import math
from abc import ABC, abstractmethod

import torch

from psjob_runtime.training import OptimizerName, OptimizerSettings


class SparseOptimizer(ABC):
    """Updates rows of one shard; `state` holds per-row tensors shaped like the shard."""

    def __init__(self, settings: OptimizerSettings, shape: torch.Size):
        self.settings = settings
        self.shape = shape
        self.state: dict[str, torch.Tensor] = {}
        self.step = 0

    def update(self, rows: torch.Tensor, index: torch.Tensor, grad: torch.Tensor) -> None:
        """Apply `grad` (one row per unique local `index`) to `rows`; counts one step."""
        self.step += 1
        if index.numel():
            self._apply(rows, index, grad)

    @abstractmethod
    def _apply(self, rows: torch.Tensor, index: torch.Tensor, grad: torch.Tensor) -> None:
        """The update for unique rows `index` (called only when some row was touched)."""


class SparseSgd(SparseOptimizer):
    def _apply(self, rows: torch.Tensor, index: torch.Tensor, grad: torch.Tensor) -> None:
        rows.index_add_(0, index, grad, alpha=-self.settings.lr)


class SparseAdagrad(SparseOptimizer):
    def __init__(self, settings: OptimizerSettings, shape: torch.Size):
        super().__init__(settings, shape)
        self.state["sum"] = torch.zeros(shape)

    def _apply(self, rows: torch.Tensor, index: torch.Tensor, grad: torch.Tensor) -> None:
        total = self.state["sum"]
        squares = total[index].add_(grad.pow(2))
        total[index] = squares
        rows.index_add_(
            0, index, grad / squares.sqrt_().add_(self.settings.eps), alpha=-self.settings.lr
        )


class LazyAdam(SparseOptimizer):
    def __init__(self, settings: OptimizerSettings, shape: torch.Size):
        super().__init__(settings, shape)
        self.state["exp_avg"] = torch.zeros(shape)
        self.state["exp_avg_sq"] = torch.zeros(shape)

    def _apply(self, rows: torch.Tensor, index: torch.Tensor, grad: torch.Tensor) -> None:
        beta1, beta2 = self.settings.beta1, self.settings.beta2
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        old_avg = exp_avg[index]
        avg_update = grad.sub(old_avg).mul_(1 - beta1)
        exp_avg.index_add_(0, index, avg_update)
        old_sq = exp_avg_sq[index]
        sq_update = grad.pow(2).sub_(old_sq).mul_(1 - beta2)
        exp_avg_sq.index_add_(0, index, sq_update)
        numer = avg_update.add_(old_avg)
        denom = sq_update.add_(old_sq).sqrt_().add_(self.settings.eps)
        correction1 = 1 - beta1**self.step
        correction2 = 1 - beta2**self.step
        step_size = self.settings.lr * math.sqrt(correction2) / correction1
        rows.index_add_(0, index, -step_size * numer.div_(denom))


def build_sparse_optimizer(settings: OptimizerSettings, shape: torch.Size) -> SparseOptimizer:
    """The row-wise counterpart of spec.training.optimizer (adam becomes lazy Adam)."""
    if settings.name is OptimizerName.SGD:
        return SparseSgd(settings, shape)
    if settings.name is OptimizerName.ADAM:
        return LazyAdam(settings, shape)
    return SparseAdagrad(settings, shape)
