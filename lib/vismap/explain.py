"""Explanation methods: maps of what a CNN's decision rests on.

Fine-grained methods, at input resolution (chapters 03 and 04):

* :func:`saliency` - the gradient ``dy/dx`` (Simonyan et al. 2014);
* :func:`deconvnet` - the deconvnet as a ReLU backward rule (Zeiler & Fergus 2014, in the form
  of Springenberg et al. 2015);
* :func:`guided_backprop` - guided backpropagation (Springenberg et al. 2015);
* :func:`zeiler_fergus` - the deconvnet built explicitly: switches, rectification, transposed
  filters (Zeiler & Fergus 2014, Sec. 2.1);
* :func:`occlusion` - the drop of the score when a window of the image is hidden (Zeiler &
  Fergus 2014, Sec. 4.2).

The three gradient methods are one computation - back-propagate the score to the pixels - that
differ only in the mask every ReLU applies to the signal on its way back
(:data:`vismap._core.RULES`). Coarse-grained methods, at a layer's resolution and upsampled
(chapters 05 and 06):

* :func:`cam` - class activation maps from a GAP network's own weights (Zhou et al. 2016);
* :func:`gradcam` - Grad-CAM (Selvaraju et al. 2017), with counterfactual maps;
* :func:`layercam` - the source document's element-wise form ``ReLU(dy/dA) * A`` (LayerCAM,
  Jiang et al. 2021);
* :func:`guided_gradcam` - guided backprop times Grad-CAM (Selvaraju et al. 2017).

Factor activation maps (chapter 07), for models with no classes at all:

* :func:`factor_cam` - Grad-CAM (or the element-wise form) of a score read from a VAE
  encoder's posterior: one latent factor, or several jointly, with no label
  (:func:`factor_score`; Liu et al. 2020 differentiate ``mu``, the source document the factor's
  own KL loss).

Beyond the four papers (chapter 10):

* :func:`gradient_x_input` - the gradient times the input (Shrikumar et al. 2016);
* :func:`smoothgrad` - any method averaged over noisy copies of the input (Smilkov et al. 2017);
* :func:`integrated_gradients` - the gradient integrated along a path from a baseline
  (Sundararajan et al. 2017);
* :func:`gradcam_pp` - Grad-CAM++ (Chattopadhay et al. 2018);
* :func:`scorecam` - Score-CAM, feature maps weighted by the score of the masked input (Wang et
  al. 2020);
* :func:`class_model` - an image the model scores as a class (activation maximisation,
  Simonyan et al. 2014, Sec. 2), and :func:`adversarial` - images within ``eps`` of ``x`` that
  the model no longer scores as the target (Goodfellow et al. 2015; Madry et al. 2018).

Every method takes ``(model, x, target)`` with ``x (n, C, H, W)``
and returns unnormalised maps at input resolution; :func:`normalize` is a separate step. The
caller's model is left as it was (mode, ``requires_grad``, no hooks), see
:func:`vismap._core.explaining`, and so is ``x``: the model is fed a copy, never ``x`` itself.
Every method works inside ``torch.no_grad()`` and ``torch.inference_mode()``. A bad input is
refused before any work, with a ValueError or a TypeError that names the argument; an input
the model cannot take (a size, a dtype) with one that names ``x``'s shape and what the model
takes (:mod:`vismap._core`). :data:`METHODS` is the registry of the map methods: name ->
:class:`Method` (the function, whether it needs a layer, fine or coarse, its paper, its default
options); :func:`get_method` looks a name up. Adding a method means writing its function, its
entry in :data:`METHODS` and its tests: the widgets, the benchmark, notebook 08's leaderboard
and the tests read the registry.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._core import (
    Layer,
    Target,
    capture,
    check_baseline,
    check_call,
    check_count,
    check_flag,
    check_input,
    check_model,
    check_nonnegative,
    check_target,
    explaining,
    fast_empty,
    fast_layout,
    forward,
    inference_safe,
    model_input,
    relu_rule,
    repeat_target,
    resolve_layer,
    slice_target,
    target_classes,
    target_scores,
)

__all__ = [
    "saliency",
    "deconvnet",
    "guided_backprop",
    "zeiler_fergus",
    "occlusion",
    "cam",
    "gradcam",
    "layercam",
    "guided_gradcam",
    "layer_gradient",
    "normalize",
    "upsample",
    "gradient_x_input",
    "smoothgrad",
    "integrated_gradients",
    "path_rule",
    "gradcam_pp",
    "scorecam",
    "class_model",
    "adversarial",
    "Method",
    "METHODS",
    "get_method",
    "factor_score",
    "factor_cam",
    "STATISTICS",
    "MODES",
]


@inference_safe
def _backprop_to_input(
    model: nn.Module, x: torch.Tensor, target: Target, rule: str
) -> torch.Tensor:
    """``d score / d x`` with every ``nn.ReLU`` of ``model`` back-propagating by ``rule``."""
    check_call(model, x, target)
    with explaining(model) as handles:
        if rule != "gradient":  # plain backprop is autograd's own ReLU rule: no hooks needed
            relu_rule(model, rule, handles)
        return _gradients(model, x, target)


def _gradients(
    model: nn.Module, x: torch.Tensor, target: Target, keep_layout: bool = False
) -> torch.Tensor:
    """``d score / d x`` (run inside :func:`explaining`), computed channels-last on a CPU
    (:func:`vismap._core.fast_layout`), where a forward and backward pass of the course's models
    run 1.3-2x faster than in NCHW; returned in NCHW, or as computed with ``keep_layout``.

    Channels-last sums a convolution's terms in another order. Activations that are equal in
    exact arithmetic (an image's perfectly flat regions) can then come out a few ulps apart, and
    a max-pool window holding such a tie sends its gradient to another of the tied inputs than
    NCHW would: a different, equally valid, subgradient. On the course's anti-aliased Shapes
    scenes (one and two objects) no such ties occur: the maps of all three course models equal
    the NCHW ones to 1e-6 relative (the tests compare with captum, which runs NCHW, to 1e-5). An
    image with exactly flat regions (a constant image, a synthetic pattern) may route its ties
    differently from NCHW.

    The gradient is taken with respect to a leaf ``x.detach()``; the model is fed its
    differentiable copy in the fast layout (:func:`vismap._core.model_input`), so that an
    in-place first module can neither write into the caller's ``x`` nor into the leaf.
    """
    leaf = x.detach().requires_grad_(True)
    score = target_scores(forward(model, model_input(leaf)), target)
    (grad,) = torch.autograd.grad(score.sum(), leaf)  # samples are independent in eval mode
    return grad if keep_layout else grad.contiguous()


def _gradients_in_batches(
    model: nn.Module, x: torch.Tensor, target: Target, batch_size: int, keep_layout: bool = False
) -> torch.Tensor:
    """:func:`_gradients` of a stack of images (SmoothGrad's noisy copies), ``batch_size`` of
    them per forward and backward pass (run inside :func:`explaining`)."""
    return torch.cat(
        [
            _gradients(
                model,
                x[i : i + batch_size],
                slice_target(target, i, i + batch_size, len(x)),
                keep_layout=keep_layout,
            )
            for i in range(0, len(x), batch_size)
        ]
    )


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The gradient of the target score with respect to the input pixels.

    ``M = dy^c / dx``, shape ``(n, C, H, W)``, signed (Simonyan, Vedaldi & Zisserman 2014,
    *Deep Inside Convolutional Networks*; their map is ``max_c |M|``). Every ReLU passes the
    signal back where its *input* was positive: ``R_l = R_{l+1} * [y_l > 0]``.
    """
    return _backprop_to_input(model, x, target, "gradient")


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The deconvnet of Zeiler & Fergus 2014 as a backward rule, ``(n, C, H, W)``.

    Back-propagation in which every ReLU rectifies the *signal coming back* instead of masking
    by the forward activation: ``R_l = R_{l+1} * [R_{l+1} > 0]`` (Springenberg et al. 2015,
    Fig. 1). Max-pooling routes the signal through its switches and convolutions apply their
    transposed filters, as autograd does. :func:`zeiler_fergus` builds the same thing by hand.
    """
    return _backprop_to_input(model, x, target, "deconvnet")


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015, *Striving for Simplicity*).

    Both masks at every ReLU: ``R_l = R_{l+1} * [y_l > 0] * [R_{l+1} > 0]``: only the positive
    evidence for the score, only through units that were active. ``(n, C, H, W)``.
    """
    return _backprop_to_input(model, x, target, "guided")


# --------------------------------------------------------------------------------------------
# The explicit deconvnet
# --------------------------------------------------------------------------------------------


def _sequential_prefix(model: nn.Module, layer: Layer | int) -> tuple[nn.Sequential, int]:
    """The ``nn.Sequential`` that holds ``layer`` (``model`` itself or ``model.features``) and
    the layer's index in it."""
    features = model if isinstance(model, nn.Sequential) else getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError(
            "zeiler_fergus needs an nn.Sequential of layers, or a model whose "
            "`features` is one (as vismap's and torchvision's VGG models)"
        )
    if isinstance(layer, bool):
        raise TypeError(f"layer must be an index, a module or a dotted name, got {layer!r}")
    if isinstance(layer, int):
        if not 0 <= layer < len(features):
            raise ValueError(f"layer index {layer} out of range 0 .. {len(features) - 1}")
        return features, layer
    _, module = resolve_layer(model, layer)
    for i, m in enumerate(features):
        if m is module:
            return features, i
    valid = [f"{i}" for i in range(len(features))]
    raise ValueError(
        f"layer {layer!r} is not a direct member of the features sequence; "
        f"give one of its indices: {', '.join(valid)}"
    )


def _unpool(signal: torch.Tensor, switches: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Put every value back at the input position its max came from (its *switch*)."""
    n, c = signal.shape[:2]
    out = signal.new_zeros(n, c, size[-2] * size[-1])
    out.scatter_add_(2, switches.flatten(2), signal.flatten(2))  # add: windows may overlap
    return out.view(n, c, size[-2], size[-1])


@torch.no_grad()
def zeiler_fergus(
    model: nn.Module,
    x: torch.Tensor,
    layer: Layer | int,
    channel: int,
    position: tuple[int, int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Project one feature-map unit back to pixel space, by the paper's construction.

    Zeiler & Fergus 2014, *Visualizing and Understanding Convolutional Networks*, Sec. 2.1: run
    the network up to ``layer`` recording the *switches* (where each max-pool's maximum came
    from); keep only the chosen unit of feature map ``channel`` (its strongest activation in
    each image, or the unit at ``position = (row, col)``), set every other activation to zero,
    and go back down: a max-pool becomes *unpooling* through the switches, a ReLU *rectifies*
    the signal, a convolution applies the *same filters transposed* (no bias).

    Args:
        model: an ``nn.Sequential`` of Conv2d / ReLU / MaxPool2d layers, or a model whose
            ``features`` is one (shapes-cnn, shapes-gap, torchvision VGG).
        x: images ``(n, C, H, W)``.
        layer: the layer whose output is projected: index into the sequence, its module, or
            its dotted name in ``model`` (``"features.9"``).
        channel: the feature map.
        position: the unit ``(row, col)``, or one per image ``(n, 2)``; default the
            strongest in each image.

    Returns:
        ``(n, C, H, W)`` reconstructions. They equal ``a * deconvnet(...)`` of that unit, where
        ``a`` is its activation.
    """
    check_input(x, check_model(model))
    check_count(channel, "channel", minimum=0)
    features, index = _sequential_prefix(model, layer)
    a, sizes, switches = x, [], {}
    for i, m in enumerate(features[: index + 1]):
        sizes.append(a.shape)
        if isinstance(m, nn.MaxPool2d):
            a, switches[i] = F.max_pool2d(
                a, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
            )
        elif isinstance(m, nn.Conv2d) and isinstance(m.padding, str):
            raise ValueError(
                f"zeiler_fergus needs numeric padding to transpose layer {i}; it has "
                f"padding={m.padding!r} (give the padding as an int or a pair)"
            )
        elif isinstance(m, (nn.Conv2d, nn.ReLU)):
            a = forward(m, a.clone() if isinstance(m, nn.ReLU) and m.inplace else a)
        else:
            raise ValueError(
                f"zeiler_fergus handles Conv2d, ReLU and MaxPool2d layers; layer "
                f"{i} is {type(m).__name__}"
            )
    if a.dim() != 4 or not 0 <= channel < a.shape[1]:
        raise ValueError(
            f"channel {channel} out of range: layer {index} has {a.shape[1]} feature maps"
        )
    fmap = a[:, channel].flatten(1)  # (n, h*w)
    if position is None:
        unit = fmap.argmax(1)
    else:
        rc = torch.as_tensor(position, device=a.device).long()
        rc = rc.reshape(-1, 2) if rc.numel() % 2 == 0 else rc.new_empty(0, 2)
        if (
            len(rc) not in (1, a.shape[0])
            or (rc < 0).any()
            or (rc[:, 0] >= a.shape[2]).any()
            or (rc[:, 1] >= a.shape[3]).any()
        ):
            raise ValueError(
                f"position {position} outside the {a.shape[2]}x{a.shape[3]} map, "
                f"or not one (row, col) or one per image"
            )
        unit = (rc[:, 0] * a.shape[3] + rc[:, 1]).expand(a.shape[0])
    signal = torch.zeros_like(a)
    signal[:, channel].view(a.shape[0], -1).scatter_(
        1, unit[:, None], fmap.gather(1, unit[:, None])
    )
    for i in reversed(range(index + 1)):
        m = features[i]
        if isinstance(m, nn.ReLU):
            signal = signal.clamp(min=0)  # rectification
        elif isinstance(m, nn.MaxPool2d):
            signal = _unpool(signal, switches[i], sizes[i])  # unpooling through the switches
        else:  # the same filters, transposed
            assert isinstance(m, nn.Conv2d) and not isinstance(m.padding, str)  # checked above
            signal = F.conv_transpose2d(
                signal,
                m.weight,
                None,
                m.stride,
                m.padding,
                _output_padding(m, signal, sizes[i]),
                m.groups,
                m.dilation,
            )
    return signal


def _output_padding(conv: nn.Conv2d, signal: torch.Tensor, size: torch.Size) -> tuple[int, ...]:
    """The rows and columns a strided convolution dropped, which its transpose must add back to
    reach the input's ``size``: ``size - ((n - 1) s - 2 p + d (k - 1) + 1)`` per dimension."""
    return tuple(
        size[-2 + j]
        - (
            (signal.shape[-2 + j] - 1) * conv.stride[j]
            - 2 * int(conv.padding[j])  # numeric: checked by zeiler_fergus
            + conv.dilation[j] * (conv.kernel_size[j] - 1)
            + 1
        )
        for j in range(2)
    )


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def _pair(v, what: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(pair) != 2 or not all(
        isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in pair
    ):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return pair


def _occlusion_baseline(baseline: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``baseline`` as a tensor of ``x``'s shape: a number, or a tensor broadcastable to ``x``
    (one colour ``(C, 1, 1)``, one image, one per image), of finite values."""
    b = check_baseline(baseline, x)
    try:
        return b.expand_as(x)
    except RuntimeError:
        raise ValueError(
            f"baseline must be a number or a tensor broadcastable to x {tuple(x.shape)} (one "
            f"colour (C, 1, 1), one image (C, H, W), one per image); got shape {tuple(b.shape)}"
        ) from None


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    window=8,
    stride=4,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2): hide a window, watch the score.

    For every window position ``p`` (top-left corners ``0, s, 2s, ...`` until a window reaches
    the far edge, so every pixel is covered; the last window in a row may be cut off by the
    edge, as in captum's ``Occlusion``), the occluded image is ``x_p = x (1 - m_p) + b m_p``
    with ``m_p`` the window's mask and ``b`` the ``baseline``; the map at a pixel is the mean
    drop ``y(x) - y(x_p)`` over the windows that cover it. Many occluded copies go through the
    model in one forward (``batch_size`` images at a time: on a CPU, about 64 is fastest).

    Every pixel is covered because the stride is at most the window: a stride larger than the
    window (or than the image) would leave the pixels between two windows never hidden, with
    no drop to average - a map undefined there. Such a stride is refused (a ValueError), not
    filled in: give a stride <= the window, in each direction.

    Args:
        window, stride: ints or ``(height, width)`` pairs, in pixels; ``stride <= window``.
        baseline: the value hidden pixels get: a number, or a tensor broadcastable to ``x``.
        batch_size: occluded images per forward, >= 1.

    Returns:
        ``(n, 1, H, W)``: positive where hiding the pixels lowers the score.
    """
    check_call(model, x, target)
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    check_count(batch_size, "batch_size")
    n, _, height, width = x.shape
    if wh > height or ww > width:
        raise ValueError(f"window {wh}x{ww} is larger than the {height}x{width} image")
    if sh > wh or sw > ww:
        raise ValueError(
            f"stride {sh}x{sw} is larger than the window {wh}x{ww}: the pixels between two "
            f"windows would never be hidden and their map would be undefined; give a stride "
            f"<= the window in each direction (e.g. stride={max(1, min(wh, ww) // 2)})"
        )
    hidden = _occlusion_baseline(baseline, x)
    if n > batch_size:  # one image-chunk at a time keeps every forward at about batch_size
        return torch.cat(
            [
                occlusion(
                    model,
                    x[i : i + batch_size],
                    slice_target(target, i, i + batch_size, n),
                    window=window,
                    stride=stride,
                    baseline=_slice_baseline(baseline, x, i, batch_size),
                    batch_size=batch_size,
                )
                for i in range(0, n, batch_size)
            ]
        )
    # Corners 0, s, 2s, ... until a window reaches the far edge; the last may be cut off there.
    tops = torch.arange(0, -(-(height - wh) // sh) + 1, device=x.device) * sh
    lefts = torch.arange(0, -(-(width - ww) // sw) + 1, device=x.device) * sw
    rows, cols = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    in_rows = (rows >= tops[:, None]) & (rows < tops[:, None] + wh)  # (T, H)
    in_cols = (cols >= lefts[:, None]) & (cols < lefts[:, None] + ww)  # (L, W)
    masks = (in_rows[:, None, :, None] & in_cols[None, :, None, :]).flatten(0, 1)  # (P, H, W)
    masks = masks.to(x.dtype)

    corners = [(int(t), int(left)) for t in tops for left in lefts]  # the order of masks

    with explaining(model):
        with torch.no_grad():
            image, hidden = fast_layout(x.detach()), fast_layout(hidden.detach())
            base = target_scores(forward(model, model_input(image)), target)  # (n,)
            per_target = _repeat_target(target, n)
            drops = []
            chunk = max(1, batch_size // n)
            batch = fast_empty((min(chunk, len(corners)) * n, *x.shape[1:]), x)
            for start in range(0, len(corners), chunk):
                windows = corners[start : start + chunk]
                # x_p = x (1 - m_p) + b m_p: copies of x, then b inside each window, written
                # straight into the fast layout, (p n, C, H, W)
                occluded = batch[: len(windows) * n]
                copies = occluded.view(len(windows), *x.shape)
                copies.copy_(image.expand_as(copies))
                for j, (t, left) in enumerate(windows):
                    rect = (..., slice(t, t + wh), slice(left, left + ww))
                    copies[j][rect] = hidden[rect]
                out = forward(model, occluded)  # ours: an in-place first module may write it
                scores = target_scores(out, per_target(len(windows))).view(len(windows), n)
                drops.append(base - scores)
    drop = torch.cat(drops)  # (P, n)
    total = torch.einsum("pn,phw->nhw", drop, masks)
    return (total / masks.sum(0))[:, None]  # every pixel is covered by at least one window


def _slice_baseline(baseline, x: torch.Tensor, start: int, size: int):
    """The baseline of samples ``start:start+size`` when it has one row per sample."""
    b = torch.as_tensor(baseline)
    per_sample = b.dim() == x.dim() and b.shape[0] == x.shape[0] > 1
    return b[start : start + size] if per_sample else baseline


def _repeat_target(target: Target, n: int):
    """A function ``p -> target`` for ``p`` stacked copies of the batch."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return lambda p: target
    index = torch.as_tensor(target)
    if index.dim() == 0:
        return lambda p: target
    return lambda p: index.repeat(p)


def normalize(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each map of ``maps (n, ...)`` to [0, 1] by its own min and max.

    A constant map (all zeros, say) becomes all zeros, never NaN: a map whose span is at most
    ``eps`` (>= 0) is divided by infinity instead of by its span. A map with a NaN or an
    infinite value has no span to scale by: a ValueError (found from its min and max, no
    extra pass).
    """
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor (n, ...), got {type(maps).__name__}")
    if maps.dim() < 2:
        raise ValueError(
            f"maps must be a batch of maps (n, ...), each normalised on its own; got shape "
            f"{tuple(maps.shape)} (for one map use maps[None])"
        )
    eps = check_nonnegative(eps, "eps")
    flat = (maps if maps.is_floating_point() else maps.float()).flatten(1)
    low, high = torch.aminmax(flat, dim=1, keepdim=True)
    span = high - low  # NaN or infinite if the map has a NaN (min and max propagate it) or an inf
    if not bool(torch.isfinite(span).all()):
        bad = (~torch.isfinite(span))[:, 0].nonzero()[:, 0].tolist()
        raise ValueError(f"maps {bad[:10]} have NaN or infinite values; they cannot be scaled")
    return (flat - low).div_(torch.where(span > eps, span, torch.inf)).view_as(maps)


# --------------------------------------------------------------------------------------------
# Coarse-grained: maps at a layer, laid back over the image
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _bilinear_weights(
    n_out: int, n_in: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of 1-D linear interpolation with half-pixel centres: output
    ``i`` reads the input at ``s = max((i + 1/2) n_in / n_out - 1/2, 0)``, that is
    ``(1 - l) a[floor(s)] + l a[min(floor(s) + 1, n_in - 1)]`` with ``l = s - floor(s)``
    (``F.interpolate``'s rule for ``align_corners=False``). Cached, so built outside inference
    mode: a matrix first asked for under ``torch.inference_mode()`` must still serve a later,
    differentiable call."""
    with torch.inference_mode(False), torch.no_grad():
        s = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
        s = s.clamp(min=0)
        below = s.floor().long().clamp(max=n_in - 1)
        above = (below + 1).clamp(max=n_in - 1)
        share = s - below  # the weight of the pixel above
        rows = torch.arange(n_out)
        weights = torch.zeros(n_out, n_in, dtype=torch.float64)
        weights.index_put_((rows, below), 1 - share, accumulate=True)
        weights.index_put_((rows, above), share, accumulate=True)
        return weights.to(dtype=dtype, device=device)


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of ``maps (n, K, h, w)`` to ``size = (H, W)`` (half-pixel centres,
    ``align_corners=False``, as captum and OpenCV).

    Bilinear interpolation is separable, linear along the rows and then along the columns, so
    it is two matrix products, ``Up(A) = W_y A W_x^T`` with the interpolation matrices
    ``W_y (H, h)`` and ``W_x (W, w)`` (:func:`_bilinear_weights`). It equals
    ``F.interpolate(maps, size, mode="bilinear", align_corners=False)`` to float rounding and,
    on a CPU, runs 3-9x faster for the course's coarse maps (8x8 -> 64x64, 7x7 -> 224x224).
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor (n, K, h, w), got {shape}")
    h, w = maps.shape[-2:]
    height, width = _size(size)
    if not maps.is_floating_point():
        raise ValueError(f"maps must be floating point, got {maps.dtype}")
    rows = _bilinear_weights(height, h, maps.dtype, maps.device)
    columns = _bilinear_weights(width, w, maps.dtype, maps.device)
    return rows @ maps @ columns.T


def _size(size) -> tuple[int, int]:
    """``size`` as ``(H, W)``, two positive ints (or int-likes: numpy, 0-d tensors)."""
    try:
        height, width = (operator.index(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), two positive ints, got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be (H, W), two positive ints, got {size!r}")
    return height, width


def _at_input(maps: torch.Tensor, x: torch.Tensor, upsampled: bool) -> torch.Tensor:
    """Maps ``(n, 1, h, w)`` upsampled to ``x``'s size (or not), as a contiguous tensor."""
    return (upsample(maps, x.shape[-2:]) if upsampled else maps).contiguous()


@inference_safe
def layer_gradient(
    model: nn.Module, x: torch.Tensor, target: Target, layer: Layer
) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation ``A (n, K, h, w)`` of ``layer`` and the gradient of the target score with
    respect to it, ``dy/dA`` - back-propagated only as far as the layer, with no parameter
    gradients. On a CPU the forward pass runs channels-last (:func:`vismap._core.fast_layout`):
    both tensors then agree with the NCHW ones to float rounding (a layer's maps need no
    max-pool routing below the layer to be the same)."""
    check_call(model, x, target)
    with explaining(model) as handles:
        record = capture(model, layer, handles)
        score = target_scores(forward(model, model_input(x.detach())), target)
        if "activation" not in record:
            raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
        (grad,) = torch.autograd.grad(score.sum(), record["activation"])
    return record["activation"].detach(), grad


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    counterfactual: bool = False,
    upsampled: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, *Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization*).

    ``alpha_k = 1/Z sum_ij dy/dA^k_ij`` (the mean gradient of each feature map), then
    ``M = ReLU(sum_k alpha_k A^k)``: the feature maps weighted by how much the score wants each,
    keeping what speaks *for* the target. With ``counterfactual=True`` the gradient is negated
    (the paper's counterfactual explanations): the map shows the regions whose features argue
    *against* the target.

    Returns:
        ``(n, 1, H, W)`` upsampled bilinearly to the input, or ``(n, 1, h, w)`` at the layer's
        resolution with ``upsampled=False``. Unnormalised (see :func:`normalize`).
    """
    check_flag(counterfactual, "counterfactual")
    check_flag(upsampled, "upsampled")
    a, grad = layer_gradient(model, x, target, layer)
    if counterfactual:
        grad = -grad
    alpha = grad.mean((2, 3), keepdim=True)  # (n, K, 1, 1)
    maps = F.relu((alpha * a).sum(1, keepdim=True))
    return _at_input(maps, x, upsampled)


def layercam(
    model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, upsampled: bool = True
) -> torch.Tensor:
    """The source document's element-wise form: ``M = ReLU(sum_k ReLU(dy/dA^k) * A^k)``.

    Each position keeps its own gradient instead of the feature map's mean, so the map keeps
    finer detail at early layers. This is LayerCAM (Jiang et al. 2021, *LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization*). ``(n, 1, H, W)``, or ``(n, 1, h, w)``
    with ``upsampled=False``.
    """
    check_flag(upsampled, "upsampled")
    a, grad = layer_gradient(model, x, target, layer)
    maps = F.relu((F.relu(grad) * a).sum(1, keepdim=True))
    return _at_input(maps, x, upsampled)


def guided_gradcam(
    model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer
) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop's fine detail masked
    by Grad-CAM's class-discriminative map, ``G * upsample(M)``, shape ``(n, C, H, W)``."""
    return guided_backprop(model, x, target) * gradcam(model, x, target, layer=layer)


def _gap_linear_weights(model: nn.Module, a: torch.Tensor, out: torch.Tensor) -> tuple:
    """The weights ``(classes, K)`` and bias of the last ``nn.Linear`` of ``model``, checked to
    reproduce ``out`` as ``W mean_ij(A) + b``: the network really ends in GAP + one linear."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hint = (
        "CAM needs a network that ends in global average pooling and one linear layer "
        "(like shapes-gap or ResNet); use gradcam for any other network"
    )
    if not linears or linears[-1].in_features != a.shape[1]:
        raise ValueError(f"{hint}; no final nn.Linear takes the layer's {a.shape[1]} channels")
    weight, bias = linears[-1].weight, linears[-1].bias
    predicted = a.mean((2, 3)) @ weight.T + (0 if bias is None else bias)
    if predicted.shape != out.shape or not torch.allclose(predicted, out, rtol=1e-3, atol=1e-4):
        raise ValueError(f"{hint}; the model's output is not W mean(A) + b of this layer")
    return weight, bias


def cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    weights: torch.Tensor | None = None,
    upsampled: bool = True,
) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016, *Learning Deep Features for Discriminative
    Localization*).

    For a network whose class scores are ``y^c = sum_k w^c_k mean_ij A^k_ij + b^c`` (global
    average pooling of the last feature maps ``A``, then one linear layer), the map of class
    ``c`` is ``M_c = sum_k w^c_k A^k``: the score before it was averaged over positions. The
    weights are the model's last linear layer (checked to reproduce the output), or ``weights
    (classes, K)`` if given. No ReLU: the map is signed, as in the paper.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` with ``upsampled=False``.
    """
    if callable(target) and not isinstance(target, torch.Tensor):
        raise ValueError(
            "cam explains a class (an int or one per image); for any other "
            "score use gradcam with a callable target"
        )
    check_call(model, x, target)
    check_flag(upsampled, "upsampled")
    if weights is not None and not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a tensor (classes, K), got {type(weights).__name__}")
    with explaining(model) as handles:
        record = capture(model, layer, handles)
        with torch.no_grad():
            out = forward(model, model_input(x))
    if "activation" not in record:
        raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
    a = record["activation"].detach()
    if weights is None:
        weights, _ = _gap_linear_weights(model, a, out)
    if weights.dim() != 2 or weights.shape[1] != a.shape[1]:
        raise ValueError(
            f"weights must have shape (classes, {a.shape[1]}), got {tuple(weights.shape)}"
        )
    classes = target_classes(target, len(x), weights.shape[0], x.device)
    w = weights.detach().to(a)[classes]  # w^c, in the dtype and on the device of A
    maps = torch.einsum("nk,nkhw->nhw", w, a)[:, None]
    return _at_input(maps, x, upsampled)


# --------------------------------------------------------------------------------------------
# Beyond the four papers: gradient x input, SmoothGrad, Integrated Gradients
# --------------------------------------------------------------------------------------------


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The gradient times the input (Shrikumar et al. 2016, *Not Just a Black Box: Learning
    Important Features Through Propagating Activation Differences*).

    ``M = x * dy^c/dx``, shape ``(n, C, H, W)``, signed: a pixel counts when the score is
    sensitive to it *and* it is far from zero. For a linear model ``y = w . x`` the map sums to
    the score, ``sum M = y`` (Integrated Gradients from a zero baseline gives the same map).
    """
    return saliency(model, x, target) * x.detach()


def _each_copy(target: Target, copies: int) -> Target:
    """The target of ``x.repeat_interleave(copies, 0)``: every sample's class ``copies`` times."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target)
    return target if index.dim() == 0 else index.repeat_interleave(copies)


def _method_function(method: str | Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    if isinstance(method, str):
        return get_method(method).function
    if not callable(method):
        raise TypeError(
            f"method must be a registry name ({', '.join(METHODS)}) or a function "
            f"(model, x, target, **options) -> maps; got {type(method).__name__}"
        )
    return method


@inference_safe
def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    samples: int = 25,
    sigma: float = 0.15,
    generator: torch.Generator | None = None,
    method: str | Callable[..., torch.Tensor] = "saliency",
    batch_size: int = 64,
    **options: Any,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017, *SmoothGrad: removing noise by adding noise*).

    The average of a method's maps over ``samples`` noisy copies of each image,
    ``M(x) = 1/N sum_{i=1}^N M_base(x + g_i)`` with ``g_i ~ N(0, sigma^2)`` per pixel: the
    gradient's sharp, noisy fluctuations average out. The paper uses the gradient as the base
    map (and notes it works for any); ``method`` is any map method, by registry name or as a
    function ``(model, x, target, **options) -> maps``.

    Args:
        samples: the number ``N`` of noisy copies, >= 1.
        sigma: the noise's standard deviation, in the units of ``x`` (the paper's 10-20 % of the
            pixel range is 0.1-0.2 for images in [0, 1]), >= 0.
        generator: the random generator of the noise (default torch's global one). The noise of
            image ``i``, copy ``j`` is draw ``i * samples + j`` of ``torch.randn``, the order of
            captum's ``NoiseTunnel``.
        method: the base method (default the gradient, :func:`saliency`).
        batch_size: noisy images per call of the base method.
        options: keyword arguments of the base method (``layer=`` for a layer method).

    Returns:
        the base method's map shape, e.g. ``(n, C, H, W)`` for the gradient.
    """
    check_call(model, x, target)
    check_count(samples, "samples")
    sigma = check_nonnegative(sigma, "sigma")
    check_count(batch_size, "batch_size")
    base = _method_function(method)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    where = generator.device if generator is not None else x.device
    noise = torch.randn(
        (len(x) * samples, *x.shape[1:]), generator=generator, dtype=x.dtype, device=where
    ).to(x.device)
    # x + g_i, g_i ~ N(0, sigma^2), image-major, in the layout the model runs fastest in (one
    # layout conversion, of the noise; the rest in place)
    noisy = fast_layout(noise.mul_(sigma))
    each = (len(x), samples, *x.shape[1:])
    noisy.view(each).add_(fast_layout(x.detach())[:, None])
    per_copy = _each_copy(target, samples)
    starts = range(0, len(noisy), batch_size)
    if base is saliency and not options:  # the paper's base map, the gradient: one
        # explaining() for every batch, no check of each noisy batch, and the maps kept in the
        # fast layout until their mean
        with explaining(model):
            maps = _gradients_in_batches(model, noisy, per_copy, batch_size, keep_layout=True)
    else:
        maps = torch.cat(
            [
                base(
                    model,
                    noisy[i : i + batch_size],
                    slice_target(per_copy, i, i + batch_size, len(noisy)),
                    **options,
                )
                for i in starts
            ]
        )
    return maps.view(len(x), samples, *maps.shape[1:]).mean(1).contiguous()  # 1/N sum_i


def path_rule(steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alpha_k`` in [0, 1] and weights ``w_k`` of a quadrature rule for
    ``int_0^1 f(alpha) d alpha ~ sum_k w_k f(alpha_k)``, float64.

    ``"gausslegendre"`` (exact for polynomials of degree ``2 steps - 1``: far fewer steps than a
    Riemann sum for the same error, *if* the integrand is smooth), ``"riemann_trapezoid"`` (nodes
    ``k / (m - 1)``, weights ``1 / (m - 1)`` halved at both ends: they sum to 1),
    ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``; the names of captum's
    ``method`` argument. (captum's trapezoid weights are ``1 / m``, halved at the ends, which sum
    to ``(m - 1) / m``: its trapezoid attributions are ``(m - 1) / m`` times these.)
    """
    check_count(steps, "steps")
    k = torch.arange(steps, dtype=torch.float64)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)
    riemann = {
        "riemann_left": lambda: k / steps,
        "riemann_right": lambda: (k + 1) / steps,
        "riemann_middle": lambda: (k + 0.5) / steps,
        "riemann_trapezoid": lambda: k / max(steps - 1, 1),
    }
    if rule not in riemann:
        raise ValueError(
            f"unknown integration rule {rule!r}; valid rules: gausslegendre, {', '.join(riemann)}"
        )
    if rule == "riemann_trapezoid" and steps < 2:
        raise ValueError("the trapezoid rule needs steps >= 2")
    if rule == "riemann_trapezoid":  # h (f_0 / 2 + f_1 + ... + f_{m-2} + f_{m-1} / 2), h = 1/(m-1)
        trapezoid = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        trapezoid[[0, -1]] /= 2
        return riemann[rule](), trapezoid
    return riemann[rule](), torch.full((steps,), 1 / steps, dtype=torch.float64)


def _baseline(baseline: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A baseline given as a number, one image ``(C, H, W)`` or one per image ``(n, C, H, W)``,
    as a tensor of ``x``'s shape."""
    b = check_baseline(baseline, x)
    if b.dim() == 3:
        b = b[None]
    if b.dim() not in (0, 4) or (
        b.dim() == 4 and tuple(b.shape) not in (tuple(x.shape), (1, *x.shape[1:]))
    ):
        raise ValueError(
            f"baseline must be a number, one image {tuple(x.shape[1:])} or one per "
            f"image {tuple(x.shape)}; got shape {tuple(b.shape)}"
        )
    return b.expand_as(x)


@inference_safe
def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    baseline: float | torch.Tensor = 0.0,
    steps: int = 256,
    rule: str = "gausslegendre",
    batch_size: int = 64,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan, Taly & Yan 2017, *Axiomatic Attribution for Deep
    Networks*).

    The gradient averaged along the straight path from a baseline ``x'`` to ``x``, times the
    path's length:

        ``IG(x) = (x - x') * int_0^1 dy^c/dx (x' + alpha (x - x')) d alpha``
        ``      ~ (x - x') * sum_k w_k dy^c/dx (x' + alpha_k (x - x'))``

    with the nodes and weights of :func:`path_rule` (Gauss-Legendre by default, as captum).
    *Completeness*: the map sums to ``y^c(x) - y^c(x')``, up to the rule's error. A ReLU network's
    gradient jumps along the path (the integrand is piecewise constant for a conv/ReLU/max-pool
    net), which no rule integrates exactly, so the default is 256 points, not captum's 50: on 48
    held-out Shapes scenes from a black baseline, shapes-cnn and shapes-gap are then off by a
    median 0.3 % (max 2 %), shapes-allconv by 1 % (max 4 %); at 64 points the medians are
    2-7 %. Check ``map.sum()`` against the score difference on your own model.

    Args:
        baseline: ``x'``: a number, one image ``(C, H, W)`` or one per image; default black.
        steps: the number of points on the path, >= 1.
        rule: the quadrature rule (:func:`path_rule`).
        batch_size: path points per forward/backward pass.

    Returns:
        ``(n, C, H, W)``, signed.
    """
    check_call(model, x, target)
    check_count(batch_size, "batch_size")
    alphas, weights = path_rule(steps, rule)
    b = _baseline(baseline, x)
    alphas, weights = alphas.to(x.dtype).to(x.device), weights.to(x.dtype).to(x.device)
    start, length = fast_layout(b), fast_layout(x.detach() - b)
    # The path's points x' + alpha_k (x - x'), built a batch at a time in the fastest layout:
    # m points of every image per batch (or, for more images than a batch holds, one point of
    # a slice of them). Each batch's gradients are weighted and summed into sum_k w_k dy/dx at
    # once, so no (steps n, C, H, W) tensor is ever held.
    n = len(x)
    m, width = max(1, batch_size // n), min(n, batch_size)
    average = torch.zeros_like(length)
    with explaining(model):
        for k in range(0, steps, m):
            a, w = alphas[k : k + m].view(-1, 1, 1, 1, 1), weights[k : k + m]
            for j in range(0, n, width):
                images = slice(j, j + width)
                points = (start[images][None] + a * length[images][None]).flatten(0, 1)
                part = repeat_target(slice_target(target, j, j + width, n), len(w))
                grad = _gradients(model, points, part, keep_layout=True)
                average[images] += torch.einsum(
                    "k,kn...->n...", w, grad.view(len(w), -1, *x.shape[1:])
                )
    return (x.detach() - b) * average.contiguous()


# --------------------------------------------------------------------------------------------
# Beyond the four papers: Grad-CAM++ and Score-CAM
# --------------------------------------------------------------------------------------------


def gradcam_pp(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    upsampled: bool = True,
    eps: float = 0.0,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay, Sarkar, Howlader & Balasubramanian 2018, *Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional Networks*).

    Grad-CAM weighs each feature map by its mean gradient; Grad-CAM++ by a weighted sum of its
    positive gradients, so that several instances of a class each count in full (their Eq. 19,
    for an exponential of the score and first-order terms, with ``g = dy^c/dA``):

        ``a^k_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)``   (0 where the denominator is 0)
        ``w_k = sum_ij a^k_ij ReLU(g_ij)``,   ``M = ReLU(sum_k w_k A^k)``

    (the weights of ``exp(y^c)`` are ``exp(y^c) w_k``: a positive factor per image, left out,
    as pytorch-grad-cam does). ``eps`` is added to the denominator: 0 is the paper's formula;
    pytorch-grad-cam adds 1e-6, which shrinks the weights of feature maps with small gradients.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` with ``upsampled=False``.
    """
    check_flag(upsampled, "upsampled")
    eps = check_nonnegative(eps, "eps")
    a, g = layer_gradient(model, x, target, layer)
    denominator = 2 * g.pow(2) + a.sum((2, 3), keepdim=True) * g.pow(3) + eps
    alpha = torch.where(denominator != 0, g.pow(2) / denominator, 0.0)
    w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    maps = F.relu((w * a).sum(1, keepdim=True))
    return _at_input(maps, x, upsampled)


def scorecam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    batch_size: int = 64,
    upsampled: bool = True,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, *Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks*): feature maps weighted by what they show, not by gradients.

    Each feature map ``A^k`` of the layer, upsampled and scaled to [0, 1], masks the input,
    ``H_k = s(Up(A^k))``; the model scores the masked image, ``S_k = y^c(x * H_k)``; the scores
    become weights by a softmax over the maps, and

        ``alpha_k = exp(S_k) / sum_l exp(S_l)``,   ``M = ReLU(sum_k alpha_k A^k)``

    (Algorithm 1 of the paper; its increase of confidence ``S_k - y^c(x_b)`` subtracts the same
    baseline score from every ``S_k``, which the softmax cancels). Costs one forward pass per
    feature map and image (``batch_size`` masked images per pass); feature maps that are constant
    give the all-zero mask, scored once per image.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` with ``upsampled=False``.
    """
    check_call(model, x, target)
    check_count(batch_size, "batch_size")
    check_flag(upsampled, "upsampled")
    with explaining(model) as handles:
        record = capture(model, layer, handles)
        with torch.no_grad():
            target_scores(forward(model, model_input(x)), target)  # checks the target once
        handles.pop().remove()  # the masked images need no capture
        if "activation" not in record:
            raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
        a = record["activation"].detach()
        scores = torch.empty(a.shape[:2], dtype=x.dtype, device=x.device)  # S_k, (n, K)
        with torch.no_grad():
            for i in range(len(x)):
                target_i = _target_of(target, i, len(x))
                _score_masks(model, x[i : i + 1], a[i], target_i, batch_size, out=scores[i])
    alpha = scores.softmax(1)
    maps = F.relu(torch.einsum("nk,nkhw->nhw", alpha, a))[:, None]
    return _at_input(maps, x, upsampled)


def _score_masks(
    model: nn.Module,
    image: torch.Tensor,
    a: torch.Tensor,
    target: Target,
    batch_size: int,
    out: torch.Tensor,
) -> None:
    """Score-CAM's scores of one image ``(1, C, H, W)``, ``out[k] = S_k = y^c(x * H_k)`` for its
    feature maps ``a (K, h, w)``, with ``H_k = (Up(A^k) - min) / (max - min)`` (run in
    ``torch.no_grad()``).

    The masks are scaled in place; each batch of ``batch_size`` masked images is written
    straight into the faster memory layout (once, not converted). A constant map's mask is all
    zeros, the same for every such map: it is scored once."""
    up = upsample(a[None], image.shape[-2:])[0]  # Up(A^k), (K, H, W)
    low, high = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    varies = (high > low).flatten()
    masks = up.sub_(low).div_(torch.where(varies[:, None, None], high - low, 1.0))  # H_k
    live = varies.nonzero()[:, 0]
    dead = (~varies).nonzero()[:, 0]  # a constant map's mask: 0 / 1 = 0 everywhere
    if len(dead):  # every distinct mask once: the live ones, then the all-zero one
        masks = masks[torch.cat([live, dead[:1]])]
    image = fast_layout(image)
    batch = fast_empty((min(batch_size, len(masks)), *image.shape[1:]), image)
    scores = []
    for j in range(0, len(masks), batch_size):
        h = masks[j : j + batch_size]
        masked = torch.mul(image, h[:, None], out=batch[: len(h)])  # x * H_k
        scores.append(target_scores(forward(model, masked), target))  # ours: may be written
    s = torch.cat(scores)
    out[live] = s[: len(live)]
    if len(dead):
        out[dead] = s[-1]


def _target_of(target: Target, i: int, n: int) -> Target:
    """The target of sample ``i`` of ``n``, for any number of copies of that sample."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target)
    return index[i] if index.dim() == 1 and len(index) == n else target


# --------------------------------------------------------------------------------------------
# Beyond maps: activation maximisation and adversarial images
# --------------------------------------------------------------------------------------------


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``image (1, C, H, W)`` convolved with a Gaussian of standard deviation ``sigma`` pixels
    (each channel on its own; borders reflected)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


@inference_safe
def class_model(
    model: nn.Module,
    target: Target,
    *,
    shape: tuple[int, ...] = (3, 64, 64),
    steps: int = 200,
    lr: float = 0.05,
    l2: float = 1e-3,
    jitter: int = 4,
    blur_every: int = 4,
    blur_sigma: float = 0.5,
    seed: int = 0,
    objective: str = "score",
) -> torch.Tensor:
    """The class model of Simonyan, Vedaldi & Zisserman 2014 (*Deep Inside Convolutional
    Networks*, Sec. 2): an image the model scores as the class, by gradient ascent on the image.

        ``I* = argmax_I  s^c(I) - l2 ||I - 0.5||^2``,   ``I`` in [0, 1]

    Simonyan et al. ascend the unnormalised score ``s^c = y^c`` (``objective="score"``, the
    default) with an L2 penalty; their zero is the training set's mean image, ours mid-grey.
    Nothing in it stops another class's score from rising faster: a softmax-trained shapes-cnn
    drew a class-0 image that it scored as class 4 (p = 0.86). ``objective="log_probability"``
    ascends ``s^c = log softmax(y)_c = y^c - log sum_k exp y^k`` instead, which also pushes the
    other classes down; it suits a softmax classifier, not a multi-label one, whose classes are
    not exclusive (the multi-label shapes-cnn's class-1 image then ended as class 3). For a
    callable target its own score is ascended. Each step moves by ``lr``
    along the gradient divided by its mean magnitude, then clips to [0, 1]. With the
    regularisers of later work (Yosinski et al. 2015,
    *Understanding Neural Networks Through Deep Visualization*), the image is shifted by a random
    ``jitter`` of up to that many pixels before each step and blurred (``blur_sigma`` pixels)
    every ``blur_every`` steps (0: never): high-frequency patterns that only one alignment
    rewards do not survive. Check the model's score of the result: the tests assert p > 0.5
    for every class of the course's classifiers with the defaults.

    Args:
        target: the class (an int) or a callable score of the model's output.
        shape: ``(C, H, W)`` of the image; every argument but ``target`` has a default.
        steps, lr: the number and size of the ascent steps.
        l2: the weight of the L2 penalty (>= 0).
        jitter: the largest random shift in pixels (>= 0).
        blur_every, blur_sigma: the blur's period in steps (0: no blur) and width in pixels.
        seed: seeds the start (mid-grey plus a little noise) and the jitter: same seed, same image.
        objective: ``"score"`` (default: Simonyan et al.'s ``y^c``) or ``"log_probability"``,
            for a class target.

    Returns:
        ``(1, *shape)`` in [0, 1], on the model's device.
    """
    check_model(model)
    check_target(target, 1)
    if objective not in ("log_probability", "score"):
        raise ValueError(f"objective must be 'log_probability' or 'score', got {objective!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    check_count(steps, "steps")
    check_count(jitter, "jitter", minimum=0)
    check_count(blur_every, "blur_every", minimum=0)
    check_nonnegative(lr, "lr")
    check_nonnegative(l2, "l2")
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise ValueError(f"shape must be (C, H, W), three positive ints; got {shape!r}")
    if blur_every and not (isinstance(blur_sigma, (int, float)) and blur_sigma > 0):
        raise ValueError(f"blur_sigma must be a number > 0, got {blur_sigma!r}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    rng = torch.Generator().manual_seed(seed)
    image = (0.5 + 0.01 * torch.randn((1, *shape), generator=rng)).clamp(0, 1)
    image = image.to(device=device, dtype=dtype or image.dtype)
    what = f"the image of shape={tuple(shape)}"
    check_input(image, model, what)
    with explaining(model):
        for step in range(steps):
            dy, dx = (
                torch.randint(-jitter, jitter + 1, (2,), generator=rng).tolist()
                if jitter
                else (0, 0)
            )
            shifted = torch.roll(image, (dy, dx), (2, 3)).requires_grad_(True)
            out = forward(model, model_input(shifted, fast=False), what)
            if objective == "log_probability" and not callable(target):
                out = out.log_softmax(1)
            ascent = target_scores(out, target) - l2 * (shifted - 0.5).pow(2).sum()
            (grad,) = torch.autograd.grad(ascent.sum(), shifted)
            grad = torch.roll(grad, (-dy, -dx), (2, 3))
            image = (image + lr * grad / grad.abs().mean().clamp(min=1e-12)).clamp(0, 1)
            if blur_every and (step + 1) % blur_every == 0 and step + 1 < steps:
                image = _gaussian_blur(image, blur_sigma).clamp(0, 1)
    return image.detach()


@inference_safe
def adversarial(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    eps: float = 4 / 255,
    steps: int = 10,
    step_size: float | None = None,
) -> torch.Tensor:
    """Adversarial images: ``x`` changed by at most ``eps`` per pixel so that the model no longer
    scores it as ``target``.

    ``steps=1`` is the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, *Explaining
    and Harnessing Adversarial Examples*): ``x_adv = clip(x + eps sign(d L / d x))`` with ``L``
    the cross-entropy of the target class; more steps are projected gradient ascent (Madry et al.
    2018, *Towards Deep Learning Models Resistant to Adversarial Attacks*):
    ``x_{t+1} = P(x_t + a sign(d L / d x_t))``, ``P`` the projection on
    ``{|x' - x|_inf <= eps} cap [0, 1]^d``, step ``a = 2.5 eps / steps`` by default. A callable
    target's score is lowered instead, ``L = -score``. Not every image flips at a small
    ``eps``: check ``model(x_adv).argmax(1) != target``.

    Args:
        x: images in [0, 1].
        eps: the L-infinity radius (>= 0), in pixel units: 4/255 is four grey levels.
        steps: ascent steps (>= 1).
        step_size: ``a``; default ``eps`` for one step, ``2.5 eps / steps`` otherwise.

    Returns:
        ``(n, C, H, W)`` in [0, 1], with ``|x_adv - x| <= eps`` everywhere.
    """
    check_call(model, x, target)
    eps = check_nonnegative(eps, "eps")
    check_count(steps, "steps")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(
            f"adversarial images are made in [0, 1]; x ranges over "
            f"[{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    a = (
        check_nonnegative(step_size, "step_size")
        if step_size is not None
        else (eps if steps == 1 else 2.5 * eps / steps)
    )
    x = x.detach()
    adv = x.clone()
    with explaining(model):
        for _ in range(steps):
            adv.requires_grad_(True)
            out = forward(model, model_input(adv, fast=False))
            score = target_scores(out, target)  # checks the target
            if callable(target) and not isinstance(target, torch.Tensor):
                loss = -score
            else:
                classes = target_classes(target, len(x), out.shape[1], x.device)
                loss = F.cross_entropy(out, classes, reduction="sum")
            (grad,) = torch.autograd.grad(loss.sum(), adv)
            adv = adv.detach() + a * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


# Factor activation maps live in their own module (chapter 07); they are part of this namespace.
from .factors import MODES, STATISTICS, factor_cam, factor_score  # noqa: E402

# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

NEEDS = {
    "layer": "a layer: a convolutional module of the model or its dotted name (layer=...)",
    "nn.ReLU": "ReLUs as nn.ReLU modules (their backward rule is replaced)",
    "GAP": "a network that ends in global average pooling and one linear layer",
    "VAE": "a VAE encoder that returns (mu, logvar); the target is latent dimensions",
}


@dataclass(frozen=True)
class Method:
    """One map method of :data:`METHODS`.

    Attributes:
        name: its key in :data:`METHODS`, the function's name.
        function: ``(model, x, target, **options) -> maps``.
        title: the name the course shows (widgets, tables, figures).
        grain: ``"fine"`` (computed in input space, per pixel) or ``"coarse"`` (at a layer's
            resolution, upsampled).
        paper: who introduced it, where.
        needs: what the model or call must provide, words of :data:`NEEDS`.
        defaults: keyword arguments the widgets, the benchmark and the leaderboard call it with
            (the function's own defaults where empty).
    """

    name: str
    function: Callable[..., torch.Tensor]
    title: str
    grain: str
    paper: str
    needs: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def layered(self) -> bool:
        """Whether the method looks at a layer (and takes ``layer=``)."""
        return "layer" in self.needs

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: Target,
        *,
        layer: Layer | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """``function(model, x, target, layer=layer, **defaults, **options)``; ``layer`` is
        ignored by methods that need none, and required by those that need one (unless the
        function has a default layer, as :func:`factor_cam`)."""
        kwargs = {**self.defaults, **options}
        if self.layered and layer is not None:
            kwargs["layer"] = layer
        elif (
            self.layered
            and "layer" not in kwargs
            and inspect.signature(self.function).parameters["layer"].default
            is inspect.Parameter.empty
        ):
            raise ValueError(
                f"method {self.name!r} needs a layer: pass layer= a convolutional "
                f"module of the model or its dotted name"
            )
        return self.function(model, x, target, **kwargs)


def _entries(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _entries(
    Method(
        "saliency",
        saliency,
        "gradient",
        "fine",
        "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
    ),
    Method(
        "deconvnet",
        deconvnet,
        "deconvnet",
        "fine",
        "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
        needs=("nn.ReLU",),
    ),
    Method(
        "guided_backprop",
        guided_backprop,
        "guided backprop",
        "fine",
        "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net",
        needs=("nn.ReLU",),
    ),
    Method(
        "gradient_x_input",
        gradient_x_input,
        "gradient x input",
        "fine",
        "Shrikumar et al. 2016, Not Just a Black Box",
    ),
    Method(
        "smoothgrad",
        smoothgrad,
        "SmoothGrad",
        "fine",
        "Smilkov et al. 2017, SmoothGrad: removing noise by adding noise",
        defaults={"samples": 25, "sigma": 0.15},
    ),
    Method(
        "integrated_gradients",
        integrated_gradients,
        "Integrated Gradients",
        "fine",
        "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
        defaults={"steps": 64},
    ),
    Method(
        "occlusion",
        occlusion,
        "occlusion",
        "fine",
        "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks, Sec. 4.2",
        defaults={"window": 8, "stride": 4},
    ),
    Method(
        "cam",
        cam,
        "CAM",
        "coarse",
        "Zhou et al. 2016, Learning Deep Features for Discriminative Localization",
        needs=("layer", "GAP"),
    ),
    Method(
        "gradcam",
        gradcam,
        "Grad-CAM",
        "coarse",
        "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks",
        needs=("layer",),
    ),
    Method(
        "gradcam_pp",
        gradcam_pp,
        "Grad-CAM++",
        "coarse",
        "Chattopadhay et al. 2018, Grad-CAM++",
        needs=("layer",),
    ),
    Method(
        "scorecam",
        scorecam,
        "Score-CAM",
        "coarse",
        "Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations for CNNs",
        needs=("layer",),
    ),
    Method(
        "layercam",
        layercam,
        "LayerCAM",
        "coarse",
        "the source document; Jiang et al. 2021, LayerCAM",
        needs=("layer",),
    ),
    Method(
        "guided_gradcam",
        guided_gradcam,
        "guided Grad-CAM",
        "fine",
        "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks",
        needs=("layer", "nn.ReLU"),
    ),
    Method(
        "factor_cam",
        factor_cam,
        "factor activation map",
        "coarse",
        "the source document; cf. Liu et al. 2020, Towards Visually Explaining VAEs",
        needs=("layer", "VAE"),
    ),
)


def get_method(name: str) -> Method:
    """The :class:`Method` of ``name``: a key of :data:`METHODS` (``"gradcam"``) or a title
    (``"Grad-CAM"``)."""
    if isinstance(name, str):
        if name in METHODS:
            return METHODS[name]
        for method in METHODS.values():
            if method.title == name:
                return method
    raise ValueError(
        f"unknown method {name!r}; valid names: {', '.join(METHODS)} (or their "
        f"titles: {', '.join(m.title for m in METHODS.values())})"
    )
