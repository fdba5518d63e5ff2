"""Running a model for an explanation, and leaving it exactly as it was.

Every method runs under :func:`explaining`, which puts the model in eval mode, freezes its
parameters (only the gradients a method asks for are computed) and enables autograd even
inside ``torch.no_grad()``; on exit, also after an exception, it restores each module's mode,
each parameter's ``requires_grad`` and removes every hook it installed. A method that needs
autograd is decorated with :func:`inference_safe`, so that it also works inside
``torch.inference_mode()``.

The model is always fed a new tensor (:func:`model_input`), never the caller's ``x``, so that
an in-place first module cannot write into it; on a CPU in the channels-last layout its
convolutions run fastest in (:func:`fast_layout`). An input the model cannot take (a size, a
dtype, a device) is reported by :func:`forward` as a ValueError that names ``x``'s shape and
what the model takes.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import nn

F = TypeVar("F", bound=Callable[..., Any])


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


def forward(
    model: nn.Module,
    x: torch.Tensor,
    what: str = "x",
    run: Callable[[torch.Tensor], Any] | None = None,
) -> Any:
    """``model(x)``, with torch's error for an input the model cannot take turned into a
    ValueError that names ``x`` (as ``what``), its shape and what the model takes. A method
    that runs the model's layers itself (:func:`vismap.explain.lrp`) gives ``run(x)``, run
    instead of ``model(x)``.

    Which input size a model takes is known only to its forward: shapes-cnn's fully connected
    head needs 64x64 images, a global-average-pooled network takes any size its pooling
    allows. So the error is caught where it happens, at no cost to a forward that works. A
    model may declare the shape it was built for as ``input_size = (C, H, W)`` (the course's
    models do); otherwise the message names the layer that failed and what it received,
    found by one more forward of the first image (only after the error)."""
    try:
        return model(x) if run is None else run(x)
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
            f"feeds a model on a CPU channels-last (vismap._running.fast_layout), in which "
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
