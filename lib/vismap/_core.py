"""The machinery every explanation method shares: targets, layers, inputs, hooks, ReLU rules.

Vocabulary (used everywhere in vismap):

* **target** - what is explained: an int (one class for the whole batch), a LongTensor or list
  with one class per sample, or a callable mapping the model's output to one score per sample.
* **layer** - where we look: a module of the model or its dotted name (``"features.9"``).
* **score** - the scalar per sample that is differentiated, ``y^c``.
* **map** - the result, ``(n, ., H, W)``.

Every method runs under :func:`explaining`, which puts the model in eval mode, freezes its
parameters (only the gradients a method asks for are computed) and enables autograd even
inside ``torch.no_grad()``; on exit, also after an exception, it restores each module's mode,
each parameter's ``requires_grad`` and removes every hook it installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

Target = int | torch.Tensor | list | tuple | Callable[[torch.Tensor], torch.Tensor]
Layer = str | nn.Module


def check_input(x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
    """``x`` must be a non-empty floating-point batch of images ``(n, C, H, W)`` with finite
    values; given ``model``, ``C`` must be the channel count its first convolution takes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (n, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"x must be a batch of images of shape (n, C, H, W), got shape "
            f"{tuple(x.shape)}; for one image use x[None]"
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (n = 0); give at least one image")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    # One pass over x: a NaN or an infinity makes the sum NaN or infinite, finite values keep it
    # finite unless it overflows; only then is each value checked (a few passes, 20x slower).
    if not bool(torch.isfinite(x.sum())):
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = (~finite).flatten(1).any(1).nonzero()[:, 0].tolist()
            raise ValueError(
                f"x has {int(x.isnan().sum())} NaN and {int(x.isinf().sum())} "
                f"infinite values, in image(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}"
                f"; every map of such an input would be NaN: give finite pixel values "
                f"(e.g. torch.nan_to_num(x))"
            )
    if model is not None:
        first = first_conv(model)
        if first is not None and first[1].in_channels not in (0, x.shape[1]):
            name, conv = first
            raise ValueError(
                f"the model expects images with {conv.in_channels} channel(s) (its "
                f"first convolution {name!r} is {conv}), but x has {x.shape[1]}: "
                f"shape {tuple(x.shape)}"
            )
    return x


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """``(name, module)`` of the first ``nn.Conv2d`` of ``model`` (in definition order), the
    layer that fixes how many channels an input must have; None if it has no convolution."""
    return next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def check_count(value: object, what: str, minimum: int = 1) -> int:
    """``value`` must be an int ``>= minimum`` (a number of samples, steps, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def check_nonnegative(value: object, what: str) -> float:
    """``value`` must be a finite real number ``>= 0`` (a noise level, a radius, ...)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value >= 0
        or value == float("inf")
    ):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout in which its convolutions run fastest: channels-last
    (``(n, H, W, C)`` in memory, same shape and values) on a CPU, where oneDNN's convolutions
    run about 1.3-2x faster in it; unchanged on other devices and when ``x`` is not a batch of
    images (not 4-D)."""
    if x.device.type != "cpu" or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


def fast_empty(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised batch ``(n, C, H, W)`` of ``like``'s dtype and device, in the layout of
    :func:`fast_layout`: for a batch that is built once, straight in the layout the model runs
    fastest in, instead of being built in NCHW and converted."""
    layout = torch.channels_last if like.device.type == "cpu" else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)


def repeat_target(target: Target, copies: int) -> Target:
    """The target of ``copies`` stacked copies of a batch, ``torch.cat([x] * copies)``: a
    per-sample class index is repeated, an int or a callable kept as it is."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target)
    return target if index.dim() == 0 else index.repeat(copies)


def slice_target(target: Target, start: int, stop: int, n: int) -> Target:
    """The target of samples ``start:stop`` of a batch of ``n``: a per-sample index is sliced,
    an int or a callable kept as it is."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target)
    return index[start:stop] if index.dim() == 1 and len(index) == n else target


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


def target_scores(output: torch.Tensor, target: Target) -> torch.Tensor:
    """The score ``(n,)`` of ``target`` for each sample of the model ``output (n, classes)``.

    A callable target receives the output as it is - a tensor, or a tuple such as a VAE
    encoder's ``(mu, logvar)`` - and returns one score per sample."""
    if callable(target) and not isinstance(target, torch.Tensor):
        first = output[0] if isinstance(output, (tuple, list)) else output
        n = first.shape[0]
        scores = target(output)
        if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(
                f"a callable target must return one score per sample, shape "
                f"({n},); it returned {shape}"
            )
        return scores
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"a class target needs a model output of shape (n, classes), got "
            f"{shape}; use a callable target for other outputs"
        )
    index = target_classes(target, output.shape[0], output.shape[1], output.device)
    return output.gather(1, index[:, None])[:, 0]


def target_classes(
    target: Target, n: int, classes: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A class target as one class index per sample, ``(n,)`` int64, checked against the
    number of ``classes``."""
    index = torch.as_tensor(target, device=device)
    if index.is_floating_point() or index.dim() > 1:
        raise ValueError(
            f"target must be an int, one int per sample, or a callable; got {target!r}"
        )
    index = index.expand(n) if index.dim() == 0 else index
    if index.shape != (n,):
        raise ValueError(
            f"target has {index.shape[0]} classes for a batch of {n} images; give "
            f"one int, or one per image"
        )
    if ((index < 0) | (index >= classes)).any():
        raise ValueError(
            f"target {index.tolist()} out of range: the model has {classes} "
            f"classes, 0 .. {classes - 1}"
        )
    return index.long()


@contextlib.contextmanager
def explaining(model: nn.Module) -> Iterator[list]:
    """Run ``model`` for an explanation and leave it exactly as it was.

    Yields a list to which the caller appends hook handles; all of them are removed on exit.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    handles: list = []
    try:
        if any(training for _, training in modes):  # a model in eval mode is left alone
            model.eval()
        for p, flag in flags:
            if flag:
                p.requires_grad_(False)
        with torch.enable_grad():
            yield handles
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes:  # only what changed is set back (setting is the slow part)
            if m.training != training:
                m.training = training
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


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


# --------------------------------------------------------------------------------------------
# ReLU backward rules (Springenberg et al. 2015, Fig. 1): one idea, three masks.
#
# Forward, every rule is the ReLU:  y = max(x, 0).
# Backward, the signal R arriving from above is multiplied by a mask:
#   "gradient"  (backprop):      R * [y > 0]            the forward mask
#   "deconvnet" (Zeiler-Fergus): R * [R > 0]            the sign of the signal
#   "guided"    (guided backprop): R * [y > 0] * [R > 0]  both
# --------------------------------------------------------------------------------------------

RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradient": lambda y, r: y > 0,
    "deconvnet": lambda y, r: r > 0,
    "guided": lambda y, r: (y > 0) & (r > 0),
}


# The same products ``R * mask(y, R)``, each in as few passes over memory as stock operations
# allow, keeping the tensors' memory layout (``torch.where(mask, R, 0.0)`` is 5x slower on a
# CPU): ``threshold_backward(R, y, 0)`` is autograd's own ReLU backward, ``R * [y > 0]``, and
# ``relu(R)`` is ``R * [R > 0]`` (for guided, applied in place to the first product).
_MASKED: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradient": lambda y, r: torch.ops.aten.threshold_backward(r, y, 0),
    "deconvnet": lambda y, r: torch.relu(r),
    "guided": lambda y, r: torch.ops.aten.threshold_backward(r, y, 0).relu_(),
}


class _RuleReLU(torch.autograd.Function):
    """``y = max(x, 0)`` forward; backward ``R * mask(y, R)`` with a mask of :data:`RULES`
    (computed as :data:`_MASKED`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str) -> torch.Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        ctx.rule = rule
        return y

    @staticmethod
    def backward(ctx, r: torch.Tensor):
        (y,) = ctx.saved_tensors
        return _MASKED[ctx.rule](y, r), None  # R * mask(y, R)


def relu_rule(model: nn.Module, rule: str, handles: list) -> int:
    """Give every ``nn.ReLU`` of ``model`` the backward rule ``rule`` (hooks in ``handles``).

    A pre-hook takes the ReLU's input and hands the module an empty tensor instead (so the
    module does no work and cannot overwrite the input in place); the forward hook replaces the
    module's (empty) output by the rule's output, computed from the input, so the gradient
    bypasses the module's own backward. Returns the number of ReLU modules found.
    """
    if rule not in RULES:
        raise ValueError(f"unknown ReLU rule {rule!r}; valid rules: {', '.join(RULES)}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(
            f"the {rule!r} rule needs nn.ReLU modules, and this model has none "
            f"(a functional F.relu cannot be hooked); build it with nn.ReLU"
        )
    pending: list = []

    def before(_module, inputs):
        pending.append(inputs[0])
        return (inputs[0].new_empty(0),)  # the module itself runs on nothing

    def after(_module, _inputs, _output):
        return _RuleReLU.apply(pending.pop(), rule)

    for m in relus:
        handles.append(m.register_forward_pre_hook(before))
        handles.append(m.register_forward_hook(after))
    return len(relus)
