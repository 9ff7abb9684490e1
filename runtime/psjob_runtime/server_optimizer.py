"""The optimizer a server applies to its slice, built from spec.training.optimizer.

A server's slice is one flat tensor, and SGD (momentum, weight decay), Adam and Adagrad are all
element-wise, so torch's own optimizers on that one tensor give exactly the update they would
give on the model's tensors in a single process. Reusing them keeps the arithmetic identical
to what users already trust.

torch.optim imports torch._dynamo the first time an optimizer is built or stepped: 1.5-3 s of
CPU on the machines measured (bench/README.md), the largest part of a server's start after
torch itself. `warm_up` pays it in a background thread while the server waits for the workers
to join, instead of after worker 0's initial parameters have arrived, with every worker waiting.
"""

import threading

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


def warm_up(settings: OptimizerSettings) -> threading.Thread:
    """Build and step a one-element optimizer of the job's kind in a background thread.

    A later build_optimizer() that comes while the import still runs waits for it (Python's
    import lock), so nothing is imported twice or half."""

    def build_and_step() -> None:
        param = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        optimizer = build_optimizer(settings, param)
        param.grad = torch.zeros(1)
        optimizer.step()

    thread = threading.Thread(target=build_and_step, name="optimizer-warm-up", daemon=True)
    thread.start()
    return thread
