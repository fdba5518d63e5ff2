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
each parameter's ``requires_grad`` and removes every hook it installed. A method that needs
autograd is decorated with :func:`inference_safe`, so that it also works inside
``torch.inference_mode()``.

Bad input gets the library's own error, raised before any work is done where it can be
(:func:`check_call`: the model, ``x``, the target; :func:`check_count`, ... for options) and
translated from torch's where only the model's forward can tell (:func:`forward`: an input
the model cannot take). The model is always fed a new tensor (:func:`model_input`), never the
caller's ``x``, so that an in-place first module cannot write into it.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import nn

Target = int | torch.Tensor | list | tuple | Callable[[torch.Tensor], torch.Tensor]
Layer = str | nn.Module
F = TypeVar("F", bound=Callable[..., Any])


def check_model(model: object, what: str = "model") -> nn.Module:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{what} must be a torch.nn.Module (a model, e.g. vm.models.load_pretrained(name)), "
            f"got {type(model).__name__}"
        )
    return model


def check_call(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The checks every map method makes before any work: ``model`` is a module
    (:func:`check_model`), ``x`` a batch of images it can take (:func:`check_input`) and
    ``target`` a class target or a callable for ``len(x)`` images (:func:`check_target`)."""
    check_model(model)
    check_input(x, model)
    check_target(target, x.shape[0])
    return x


def check_input(x: torch.Tensor, model: nn.Module | None = None, what: str = "x") -> torch.Tensor:
    """``x`` must be a non-empty floating-point batch of images ``(n, C, H, W)`` with finite
    values; given ``model`` (a module), ``C`` must be the channel count its first convolution
    takes (``what`` names ``x`` in that message). What else the model cannot take (another
    dtype, device or image size) is found by its forward, :func:`forward`, at no cost here."""
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
        first = first_conv(check_model(model))
        if first is not None and first[1].in_channels not in (0, x.shape[1]):
            name, conv = first
            raise ValueError(
                f"the model expects images with {conv.in_channels} channel(s) (its "
                f"first convolution {name!r} is {conv}), but {what} has {x.shape[1]}: "
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


def check_baseline(baseline: object, x: torch.Tensor, what: str = "baseline") -> torch.Tensor:
    """``baseline`` - a real number, or a tensor (or array) of finite values - as a tensor of
    ``x``'s dtype and device; which shapes it may have is the caller's to check."""
    if baseline is None or isinstance(baseline, (bool, str, bytes)):
        raise TypeError(f"{what} must be a number or a tensor, got {_short(baseline)}")
    try:
        b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{what} must be a number or a tensor, got {type(baseline).__name__}"
        ) from err
    if not bool(torch.isfinite(b).all()):
        raise ValueError(
            f"{what} has NaN or infinite values; every pixel it replaces would make the "
            f"result NaN: give finite values"
        )
    return b


def check_flag(value: object, what: str) -> bool:
    """``value`` must be a bool (a string such as ``"no"`` would count as true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}")
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


def model_input(x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """What the model is fed for ``x``: ``x`` in the layout of :func:`fast_layout` (or in its own
    layout with ``fast=False``), always as a new tensor, never ``x``'s memory.

    A model whose first module works in place (``nn.ReLU(inplace=True)``) writes into what it
    is fed: fed ``x`` itself, it would change the caller's tensor, or fail on a leaf that
    requires grad. :func:`fast_layout` alone returns ``x`` itself when it is already
    channels-last; then, and on other devices, ``x`` is cloned (the only extra copy; an NCHW
    batch on a CPU is converted, one copy, as before). The copy is differentiable: gradients
    flow back to ``x``."""
    y = fast_layout(x) if fast else x
    return y.clone() if y is x else y


def forward(model: nn.Module, x: torch.Tensor, what: str = "x") -> Any:
    """``model(x)``, with torch's error for an input the model cannot take turned into a
    ValueError that names ``x`` (as ``what``), its shape and what the model takes.

    Which input size a model takes is known only to its forward: shapes-cnn's fully connected
    head needs 64x64 images, a global-average-pooled network takes any size its pooling
    allows. So the error is caught where it happens, at no cost to a forward that works. A
    model may declare the shape it was built for as ``input_size = (C, H, W)`` (the course's
    models do); otherwise the message names the layer that failed and what it received,
    found by one more forward of the first image (only after the error)."""
    try:
        return model(x)
    except RuntimeError as err:
        problem = _misfit(model, x, err, what)
        if problem is None:
            raise
        raise ValueError(problem) from err


_SHAPE_WORDS = re.compile(r"shape|size|dimension|channel", re.IGNORECASE)


def _misfit(model: nn.Module, x: torch.Tensor, err: RuntimeError, what: str) -> str | None:
    """The message for ``err``, raised by ``model(x)``, if ``x`` is what the model cannot take
    (its dtype, device or size); None for any other error, which is re-raised as it is."""
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != x.device:
        return (
            f"{what} is on {x.device} but the model's parameters are on {parameter.device}: "
            f"move one of them, e.g. x.to({str(parameter.device)!r}) (torch: {err})"
        )
    if parameter is not None and parameter.is_floating_point() and parameter.dtype != x.dtype:
        return (
            f"{what} is {x.dtype} but the model's parameters are {parameter.dtype}: give "
            f"x.to({parameter.dtype}) or convert the model (torch: {err})"
        )
    last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if last and "view size is not compatible" in str(err):
        return (
            f"the model's forward calls .view() on a tensor that is not contiguous: vismap "
            f"feeds a model on a CPU channels-last (vismap._core.fast_layout), in which "
            f".view(n, -1) of a feature map fails; use .reshape() or torch.flatten() in the "
            f"model (torch: {err})"
        )
    if not _SHAPE_WORDS.search(str(err)):
        return None
    declared = getattr(model, "input_size", None)
    if declared is not None:
        expected = f"it was built for images of shape {tuple(declared)} (its input_size)"
    else:
        expected = _failing_layer(model, x) or "give images of the size it was built for"
    return (
        f"the model cannot take {what}: images of shape (C, H, W) = {tuple(x.shape[1:])}; "
        f"{expected} (torch: {err})"
    )


def _failing_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """Which module a forward of ``x``'s first image fails in, and the shape it received: the
    innermost module entered and not left when the error is raised."""
    running: list = []

    def enter(module, inputs):
        first = inputs[0] if inputs else None
        running.append((module, tuple(first.shape) if isinstance(first, torch.Tensor) else None))

    def leave(module, inputs, output):
        running.pop()

    names = {m: name for name, m in model.named_modules() if name}
    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        with torch.no_grad():
            model(x[:1].clone())
    except Exception:
        pass
    else:
        return None
    finally:
        for handle in handles:
            handle.remove()
    if not running:
        return None
    module, shape = running[-1]
    return (
        f"for one image its layer {names[module]!r} ({module}) receives an input of shape "
        f"{shape}, which it cannot take; give images of the size the model was built for"
    )


def _normal(value: object) -> object:
    """``value``, or a normal copy of it if it is an inference tensor (made in inference mode:
    autograd can neither save it for backward nor make it require grad)."""
    return value.clone() if isinstance(value, torch.Tensor) and value.is_inference() else value


def inference_safe(function: F) -> F:
    """Let a method that needs autograd run inside ``torch.inference_mode()``, as it runs inside
    ``torch.no_grad()``.

    Inside inference mode (or given tensors made there, *inference tensors*), the method runs
    with inference mode switched off and its inference-tensor arguments cloned into normal
    tensors (a copy only then); elsewhere it costs a check per argument. A model whose
    parameters are themselves inference tensors (built or loaded inside inference mode)
    cannot be differentiated: that is a ValueError that says so."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        model = args[0] if args else None
        parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        if parameter is not None and parameter.is_inference():
            raise ValueError(
                "this method needs gradients through the model, and the model's parameters "
                "are inference tensors (it was built or loaded inside torch.inference_mode()); "
                "build or load the model outside inference mode"
            )
        values = (*args, *kwargs.values())
        if not torch.is_inference_mode_enabled() and not any(map(_is_inference, values)):
            return function(*args, **kwargs)
        with torch.inference_mode(False):
            return function(*map(_normal, args), **{k: _normal(v) for k, v in kwargs.items()})

    return cast(F, wrapper)


def _is_inference(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.is_inference()


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
    index = _class_index(target, n).to(device)
    index = index.expand(n) if index.dim() == 0 else index
    outside = (index < 0) | (index >= classes)
    if outside.any():
        raise ValueError(
            f"target class(es) {index[outside].unique().tolist()} out of range: the model has "
            f"{classes} classes, 0 .. {classes - 1}"
        )
    return index.long()


def check_target(target: object, n: int) -> Target:
    """``target`` must be a callable or a class target for ``n`` images: an int, or one int per
    image (a list, tuple, integer tensor or array of ``n``). Its range is checked against the
    model's classes once its output is known (:func:`target_classes`)."""
    if not callable(target) or isinstance(target, torch.Tensor):
        _class_index(target, n)
    return cast(Target, target)


def _class_index(target: object, n: int) -> torch.Tensor:
    """A class target as an integer tensor, ``()`` or ``(n,)``; its type and shape checked."""
    if isinstance(target, bool):
        raise ValueError(
            f"target {target!r} is a bool, not a class index: give an int, one per image, "
            f"or a callable"
        )
    try:
        index = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as err:  # None, a string, a dict, ...
        raise TypeError(
            f"target must be a class index (an int), one per image (a list or an integer "
            f"tensor of {n}), or a callable returning one score per image; got "
            f"{type(target).__name__} {_short(target)}"
        ) from err
    if index.dim() > 1:
        raise ValueError(
            f"target has shape {tuple(index.shape)}; give one class per image, shape ({n},) "
            f"(target.flatten() for a column, target.argmax(1) for one-hot rows)"
        )
    if index.dim() == 1 and index.shape[0] != n:
        raise ValueError(
            f"target has {index.shape[0]} classes for a batch of {n} images; give "
            f"one int, or one per image"
        )
    if index.dtype == torch.bool:
        raise ValueError(
            f"target is a tensor of bools, {_short(target)}; give class indices, an integer "
            f"tensor (target.long() if the bools are classes 0 and 1)"
        )
    if index.is_floating_point() or index.is_complex():
        raise ValueError(
            f"target must be an int, one int per sample, or a callable; got "
            f"{_short(target)} (class indices as floats: target.long())"
        )
    return index


def _short(value: object, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
                _requires_grad(p, False)
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
                _requires_grad(p, flag)


def _requires_grad(p: torch.Tensor, flag: bool) -> None:
    """``p.requires_grad_(flag)``, also for a parameter made inside inference mode (an
    inference tensor, whose flag can be set only there)."""
    if p.is_inference():
        with torch.inference_mode():
            p.requires_grad_(flag)
    else:
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
