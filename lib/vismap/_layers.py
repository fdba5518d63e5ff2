"""Layers: where an explanation looks, a module of the model or its dotted name.

:func:`resolve_layer` finds a layer (a wrong name lists the valid ones); :func:`capture`
records its output as a leaf that a score can be differentiated to. A layer outputs feature
maps ``(n, K, h, w)`` (a CNN's) or tokens ``(n, T, D)`` (a transformer block's): tokens are laid
out as maps by :func:`token_layout`, so that every layer method works on either.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

Layer = str | nn.Module
Tokens = tuple[int, int] | None


def check_tokens(tokens: object) -> tuple[int, int]:
    """``tokens`` as ``(h, w)``, two ints (their size is checked against a layer's output by
    :func:`token_layout`), or a TypeError."""
    try:
        h, w = (operator.index(v) for v in tokens)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise TypeError(
            f"tokens must be the patch grid (h, w), two positive ints, got {tokens!r}"
        ) from None
    return h, w


def token_layout(model: nn.Module, name: str, count: int, tokens: Tokens = None) -> tuple:
    """``(prefix, h, w)``: how the ``count`` tokens of layer ``name``'s output ``(n, T, D)`` lie
    on the image. The first ``prefix`` tokens (a class token, say) have no place in the image
    and are dropped; the remaining ``h * w`` patch tokens are the grid, row by row.

    ``tokens=(h, w)`` declares the grid (then ``prefix = T - h w``, which must be the model's
    ``num_prefix_tokens`` if it declares one); otherwise the model's own
    ``token_grid = (h, w)`` and ``num_prefix_tokens`` attributes do (as :class:`vismap.vit.
    ShapesViT` and timm's ViTs declare them); otherwise one class token and a square grid of
    the rest, ``T = 1 + s^2``. A grid that does not fit is a ValueError naming the layer, the
    token count and the grids that would fit.
    """
    if tokens is not None:
        h, w = check_tokens(tokens)
        if h < 1 or w < 1 or h * w > count:
            raise ValueError(
                f"tokens=(h, w) = {(h, w)} does not fit layer {name!r}: it outputs {count} "
                f"tokens, and the grid needs h * w (>= 1) of them, at most {count}"
            )
        declared = getattr(model, "num_prefix_tokens", None)
        if declared is not None and count - h * w != declared:
            raise ValueError(
                f"tokens=(h, w) = {(h, w)} does not fit layer {name!r}: it outputs {count} "
                f"tokens, {declared} class token(s) (the model's num_prefix_tokens) and "
                f"{count - declared} patch tokens, so h * w must be {count - declared}"
            )
        return count - h * w, h, w
    prefix = getattr(model, "num_prefix_tokens", 1)
    grid = getattr(model, "token_grid", None)
    if grid is not None and prefix + grid[0] * grid[1] == count:
        return prefix, grid[0], grid[1]
    side = math.isqrt(max(count - prefix, 0))
    if grid is None and side > 0 and side * side == count - prefix:
        return prefix, side, side
    declared = f"the model's token_grid {tuple(grid)} after " if grid is not None else "a square "
    fits = [(h, (count - prefix) // h) for h in range(1, count) if (count - prefix) % h == 0]
    raise ValueError(
        f"layer {name!r} outputs {count} tokens (n, T, D), which do not make "
        f"{declared}grid of patch tokens after {prefix} class token(s); pass tokens=(h, w), "
        f"the patch grid (the last h * w tokens, row by row), e.g. one of {fits[:6]}"
    )


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


def capture(model: nn.Module, layer: Layer, handles: list, tokens: Tokens = None) -> dict:
    """Record the output of ``layer`` at each forward pass, as a leaf we can differentiate to.

    Returns a dict whose ``"activation"`` is the layer's output ``A`` of the last forward,
    detached from everything below the layer and requiring grad, so that
    ``torch.autograd.grad(score, A)`` back-propagates only as far as the layer. The rest of the
    network receives a copy, so that a following in-place ReLU cannot overwrite ``A``.

    A layer that outputs tokens ``Z (n, T, D)`` (a transformer block) gives the patch tokens as
    maps: the prefix tokens dropped and the rest laid on their grid (:func:`token_layout`),
    ``A[:, k, i, j] = Z[:, prefix + i w + j, k]`` - a channel is one of the ``D`` embedding
    dimensions. The network then receives ``[Z_prefix, A as tokens]``: the same values, the
    prefix tokens detached (nothing below the layer is differentiated).
    """
    name, module = resolve_layer(model, layer)
    if tokens is not None:
        check_tokens(tokens)
    record: dict = {}

    def hook(_module, _inputs, output):
        if tokens is not None and not (isinstance(output, torch.Tensor) and output.dim() == 3):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(
                f"tokens=(h, w) lays out a layer's tokens (n, T, D), and layer {name!r} outputs "
                f"{shape}; leave tokens out (None) for feature maps"
            )
        if isinstance(output, torch.Tensor) and output.dim() == 3:
            n, count, dim = output.shape
            prefix, h, w = token_layout(model, name, count, tokens)
            grid = output[:, prefix:].detach().reshape(n, h, w, dim).permute(0, 3, 1, 2)
            record["activation"] = grid.contiguous().requires_grad_(True)
            patches = record["activation"].permute(0, 2, 3, 1).reshape(n, h * w, dim)
            return torch.cat([output[:, :prefix].detach(), patches], 1)
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(
                f"layer {name!r} must output feature maps (n, K, h, w) or tokens (n, T, D); its "
                f"output is {shape}; choose a convolutional layer or a transformer block"
            )
        record["activation"] = output.detach().requires_grad_(True)
        return record["activation"].clone()

    handles.append(module.register_forward_hook(hook))
    return record
