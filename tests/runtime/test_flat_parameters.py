"""The model's parameters and gradients live in two flat buffers, whatever the user's code does."""

import pytest
import torch
from psjob_runtime.worker import FlatParameters
from torch import nn


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def backward(net: nn.Module) -> None:
    net(torch.ones(5, 3)).sum().backward()


def test_parameters_keep_their_values_and_become_views() -> None:
    net = model()
    before = [p.detach().clone() for p in net.parameters()]
    flat = FlatParameters(list(net.parameters()))
    assert flat.numel == 3 * 4 + 4 + 4 * 2 + 2
    for original, param in zip(before, net.parameters(), strict=True):
        assert torch.equal(original, param)
    flat.values.zero_()
    assert all(bool((p == 0).all()) for p in net.parameters())


def test_gradients_land_in_the_flat_buffer_even_after_model_zero_grad() -> None:
    net = model()
    flat = FlatParameters(list(net.parameters()))
    backward(net)
    expected = torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])
    assert torch.equal(flat.grads, expected)
    net.zero_grad(set_to_none=True)  # what plain PyTorch code often does
    flat.bind_grads()
    assert bool((flat.grads == 0).all())
    backward(net)
    assert torch.equal(flat.grads, expected)


def test_non_float32_parameters_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="keep the model in float32"):
        FlatParameters(list(model().double().parameters()))
