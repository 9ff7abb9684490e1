"""Names for the dense vector: the user's model factory turns it back into a state_dict.

Servers hold the dense parameters as one flat float32 vector and never learn their names: the
worker concatenates `[p for p in model.parameters() if p.requires_grad]` in that order
(worker.FlatParameters) and sends only values. `--model module:factory` names it: the factory
builds the model (no psjob session needed; any table may be a placeholder, since
session.embedding() modules hold no parameters) and the vector is cut in the same order into
{name: tensor} keyed as model.state_dict() keys them. Without it the export keeps the flat
vector, which torch.nn.utils.vector_to_parameters loads in one line.
"""

import importlib
from collections.abc import Callable

import torch
from torch import nn

from psjob_runtime.export_format import Parameter
from psjob_runtime.export_source import ExportError


def load_factory(spec: str) -> Callable[[], object]:
    """`module:attribute` -> the callable it names, importable from the current directory."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ExportError(f"--model {spec!r} is not module:factory (e.g. my_model:build)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ExportError(f"--model {spec!r}: cannot import {module_name!r} ({error})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ExportError(f"--model {spec!r}: {module_name} has no callable {attribute!r}")
    return factory  # type: ignore[no-any-return]


def name_parameters(
    flat: torch.Tensor, factory: Callable[[], object], spec: str
) -> tuple[dict[str, torch.Tensor], list[Parameter]]:
    """Cut `flat` into the factory model's trainable parameters, in model.parameters() order."""
    model = factory()
    if not isinstance(model, nn.Module):
        raise ExportError(f"--model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in named)
    if total != flat.numel():
        listed = ", ".join(f"{name} {list(p.shape)}" for name, p in named) or "none"
        raise ExportError(
            f"--model {spec!r} builds a model with {total} trainable elements ({listed}), but the "
            f"checkpoint's dense parameters hold {flat.numel()}: give the factory of the model "
            "the workers trained (the same layers and sizes)"
        )
    state: dict[str, torch.Tensor] = {}
    offset = 0
    for name, param in named:
        state[name] = flat[offset : offset + param.numel()].reshape(param.shape).clone()
        offset += param.numel()
    return state, [Parameter(name=name, shape=list(p.shape)) for name, p in named]
