"""Checks of a call's arguments, made once, before any work, by every public function.

The model (:func:`check_model`), a batch of images (:func:`check_input`), the three together
with the target (:func:`check_call`), counts, flags and non-negative numbers, and the one
baseline parser (:func:`baseline_like`). Each bad input gets a ``ValueError`` or a
``TypeError`` that says what was given and what is expected. What only the model's forward can
tell (an image size it cannot take) is found there: :func:`vismap._running.forward`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ._targets import Target, check_target, short


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
        raise TypeError(f"{what} must be a number or a tensor, got {short(baseline)}")
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


def baseline_like(
    baseline: object, x: torch.Tensor, whole_images: bool = False, what: str = "baseline"
) -> torch.Tensor:
    """The one baseline parser: ``baseline`` as a tensor of ``x``'s shape, dtype and device.

    A number, or a tensor (or array) of finite values (:func:`check_baseline`) that broadcasts
    to ``x (n, C, H, W)``: one colour ``(C, 1, 1)``, one image ``(C, H, W)``, one per image.
    With ``whole_images`` only a number, one image or one per image is taken (a path between
    images needs a whole image at its start)."""
    b = check_baseline(baseline, x, what)
    if whole_images:
        whole = (tuple(x.shape[1:]), (1, *x.shape[1:]), tuple(x.shape))
        if b.dim() == 0 or tuple(b.shape) in whole:
            return b.expand_as(x)
        expected = f"a number, one image {tuple(x.shape[1:])} or one per image {tuple(x.shape)}"
    else:
        with contextlib.suppress(RuntimeError):  # not broadcastable
            return b.expand_as(x)
        expected = (
            f"a number or a tensor broadcastable to x {tuple(x.shape)} (one colour (C, 1, 1), "
            f"one image (C, H, W), one per image)"
        )
    raise ValueError(f"{what} must be {expected}; got shape {tuple(b.shape)}")


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
