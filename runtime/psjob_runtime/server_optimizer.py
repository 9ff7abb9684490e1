"""The optimizer a server applies to its slice, built from spec.training.optimizer.

A server's slice is one flat tensor, and SGD (momentum, weight decay), Adam and Adagrad are all
element-wise, so torch's own optimizers on that one tensor give exactly the update they would
give on the model's tensors in a single process. Reusing them keeps the arithmetic identical
to what users already trust.
"""

import torch

from psjob_runtime.training import OptimizerName, OptimizerSettings


def build_optimizer(
    settings: OptimizerSettings, param: torch.nn.Parameter
) -> torch.optim.Optimizer:
    if settings.name is OptimizerName.SGD:
        return torch.optim.SGD(
            [param],
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
    if settings.name is OptimizerName.ADAM:
        return torch.optim.Adam(
            [param],
            lr=settings.lr,
            betas=(settings.beta1, settings.beta2),
            eps=settings.eps,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.Adagrad(
        [param], lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay
    )
