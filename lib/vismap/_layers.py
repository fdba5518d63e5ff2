"""Layers: where an explanation looks, a module of the model or its dotted name.

:func:`resolve_layer` finds a layer (a wrong name lists the valid ones); :func:`capture`
records its output as a leaf that a score can be differentiated to.
"""

from __future__ import annotations

import torch
from torch import nn

Layer = str | nn.Module


def resolve_layer(model: nn.Module, layer: Layer) -> tuple[str, nn.Module]:
    """``(name, module)`` of ``layer``, given as a module of ``model`` or its dotted name."""
    modules = dict(model.named_modules())
    modules.pop("", None)  # the model itself is no layer
    if isinstance(layer, nn.Module):
        name = next((n for n, m in modules.items() if m is layer), None)
        if name is None:
            raise ValueError(
                f"layer {type(layer).__name__} is not a module of this model; "
                f"pass one of its modules or a name: {_listing(modules)}"
            )
        return name, layer
    if isinstance(layer, str):
        if layer not in modules:
            raise ValueError(f"unknown layer {layer!r}; valid layer names: {_listing(modules)}")
        return layer, modules[layer]
    raise TypeError(f"layer must be a module or a dotted name, got {type(layer).__name__}")


def _listing(names, limit: int = 60) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def capture(model: nn.Module, layer: Layer, handles: list) -> dict:
    """Record the output of ``layer`` at each forward pass, as a leaf we can differentiate to.

    Returns a dict whose ``"activation"`` is the layer's output ``A`` of the last forward,
    detached from everything below the layer and requiring grad, so that
    ``torch.autograd.grad(score, A)`` back-propagates only as far as the layer. The rest of the
    network receives a copy, so that a following in-place ReLU cannot overwrite ``A``.
    """
    name, module = resolve_layer(model, layer)
    record: dict = {}

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(
                f"layer {name!r} must output feature maps (n, K, h, w); its "
                f"output is {shape}; choose a convolutional layer"
            )
        record["activation"] = output.detach().requires_grad_(True)
        return record["activation"].clone()

    handles.append(module.register_forward_hook(hook))
    return record
