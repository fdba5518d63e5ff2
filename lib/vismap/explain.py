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
(:data:`vismap._core.RULES`). Coarse-grained methods, at a layer's resolution and upsampled (chapters 05 and 06):

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

Every method takes ``(model, x, target)`` with ``x (n, C, H, W)``
and returns unnormalised maps at input resolution; :func:`normalize` is a separate step. The
caller's model is left as it was (mode, ``requires_grad``, no hooks), see
:func:`vismap._core.explaining`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._core import (Layer, Target, capture, check_input, explaining, relu_rule, resolve_layer,
                    target_classes, target_scores)

__all__ = ["saliency", "deconvnet", "guided_backprop", "zeiler_fergus", "occlusion",
           "cam", "gradcam", "layercam", "guided_gradcam", "layer_gradient", "normalize",
           "upsample", "factor_score", "factor_cam", "STATISTICS", "MODES"]


def _backprop_to_input(model: nn.Module, x: torch.Tensor, target: Target,
                       rule: str) -> torch.Tensor:
    """``d score / d x`` with every ``nn.ReLU`` of ``model`` back-propagating by ``rule``."""
    check_input(x)
    with explaining(model) as handles:
        if rule != "gradient":  # plain backprop is autograd's own ReLU rule: no hooks needed
            relu_rule(model, rule, handles)
        x = x.detach().requires_grad_(True)
        score = target_scores(model(x), target)
        (grad,) = torch.autograd.grad(score.sum(), x)  # samples are independent in eval mode
    return grad


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
        raise ValueError("zeiler_fergus needs an nn.Sequential of layers, or a model whose "
                         "`features` is one (as vismap's and torchvision's VGG models)")
    if isinstance(layer, int):
        if not 0 <= layer < len(features):
            raise ValueError(f"layer index {layer} out of range 0 .. {len(features) - 1}")
        return features, layer
    _, module = resolve_layer(model, layer)
    for i, m in enumerate(features):
        if m is module:
            return features, i
    valid = [f"{i}" for i in range(len(features))]
    raise ValueError(f"layer {layer!r} is not a direct member of the features sequence; "
                     f"give one of its indices: {', '.join(valid)}")


def _unpool(signal: torch.Tensor, switches: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Put every value back at the input position its max came from (its *switch*)."""
    n, c = signal.shape[:2]
    out = signal.new_zeros(n, c, size[-2] * size[-1])
    out.scatter_add_(2, switches.flatten(2), signal.flatten(2))  # add: windows may overlap
    return out.view(n, c, size[-2], size[-1])


@torch.no_grad()
def zeiler_fergus(model: nn.Module, x: torch.Tensor, layer: Layer | int, channel: int,
                  position: tuple[int, int] | torch.Tensor | None = None) -> torch.Tensor:
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
    check_input(x)
    features, index = _sequential_prefix(model, layer)
    a, sizes, switches = x, [], {}
    for i, m in enumerate(features[:index + 1]):
        sizes.append(a.shape)
        if isinstance(m, nn.MaxPool2d):
            a, switches[i] = F.max_pool2d(a, m.kernel_size, m.stride, m.padding, m.dilation,
                                          m.ceil_mode, return_indices=True)
        elif isinstance(m, (nn.Conv2d, nn.ReLU)):
            a = m(a.clone() if isinstance(m, nn.ReLU) and m.inplace else a)
        else:
            raise ValueError(f"zeiler_fergus handles Conv2d, ReLU and MaxPool2d layers; layer "
                             f"{i} is {type(m).__name__}")
    if a.dim() != 4 or not 0 <= channel < a.shape[1]:
        raise ValueError(f"channel {channel} out of range: layer {index} has "
                         f"{a.shape[1]} feature maps")
    fmap = a[:, channel].flatten(1)  # (n, h*w)
    if position is None:
        unit = fmap.argmax(1)
    else:
        rc = torch.as_tensor(position, device=a.device).long().reshape(-1, 2)
        if len(rc) not in (1, a.shape[0]) or (rc < 0).any() or (rc[:, 0] >= a.shape[2]).any() \
                or (rc[:, 1] >= a.shape[3]).any():
            raise ValueError(f"position {position} outside the {a.shape[2]}x{a.shape[3]} map, "
                             f"or not one (row, col) or one per image")
        unit = (rc[:, 0] * a.shape[3] + rc[:, 1]).expand(a.shape[0])
    signal = torch.zeros_like(a)
    signal[:, channel].view(a.shape[0], -1).scatter_(1, unit[:, None],
                                                      fmap.gather(1, unit[:, None]))
    for i in reversed(range(index + 1)):
        m = features[i]
        if isinstance(m, nn.ReLU):
            signal = signal.clamp(min=0)  # rectification
        elif isinstance(m, nn.MaxPool2d):
            signal = _unpool(signal, switches[i], sizes[i])  # unpooling through the switches
        else:  # the same filters, transposed
            signal = F.conv_transpose2d(signal, m.weight, None, m.stride, m.padding,
                                        _output_padding(m, signal, sizes[i]), m.groups,
                                        m.dilation)
    return signal


def _output_padding(conv: nn.Conv2d, signal: torch.Tensor, size: torch.Size) -> tuple:
    """The rows and columns a strided convolution dropped, which its transpose must add back to
    reach the input's ``size``: ``size - ((n - 1) s - 2 p + d (k - 1) + 1)`` per dimension."""
    return tuple(size[-2 + j] - ((signal.shape[-2 + j] - 1) * conv.stride[j]
                                 - 2 * conv.padding[j] + conv.dilation[j]
                                 * (conv.kernel_size[j] - 1) + 1) for j in range(2))


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def _pair(v, what: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) and p > 0 for p in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return pair  # type: ignore[return-value]


def occlusion(model: nn.Module, x: torch.Tensor, target: Target, *, window=8, stride=4,
              baseline: float | torch.Tensor = 0.0, batch_size: int = 64) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2): hide a window, watch the score.

    For every window position ``p`` (top-left corners ``0, s, 2s, ...`` until a window reaches
    the far edge, so every pixel is covered; the last window in a row may be cut off by the
    edge, as in captum's ``Occlusion``), the occluded image is ``x_p = x (1 - m_p) + b m_p``
    with ``m_p`` the window's mask and ``b`` the ``baseline``; the map at a pixel is the mean
    drop ``y(x) - y(x_p)`` over the windows that cover it. Many occluded copies go through the
    model in one forward (``batch_size`` images at a time: on a CPU, about 64 is fastest).

    Args:
        window, stride: ints or ``(height, width)`` pairs, in pixels.
        baseline: the value hidden pixels get: a number, or a tensor broadcastable to ``x``.

    Returns:
        ``(n, 1, H, W)``: positive where hiding the pixels lowers the score.
    """
    check_input(x)
    n, _, height, width = x.shape
    if n > batch_size:  # one image-chunk at a time keeps every forward at about batch_size
        return torch.cat([
            occlusion(model, x[i:i + batch_size], _slice_target(target, i, i + batch_size, n),
                      window=window, stride=stride, baseline=_slice_baseline(baseline, x, i,
                                                                            batch_size),
                      batch_size=batch_size)
            for i in range(0, n, batch_size)])
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if wh > height or ww > width:
        raise ValueError(f"window {wh}x{ww} is larger than the {height}x{width} image")
    # Corners 0, s, 2s, ... until a window reaches the far edge; the last may be cut off there.
    tops = torch.arange(0, -(-(height - wh) // sh) + 1, device=x.device) * sh
    lefts = torch.arange(0, -(-(width - ww) // sw) + 1, device=x.device) * sw
    rows, cols = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    in_rows = (rows >= tops[:, None]) & (rows < tops[:, None] + wh)  # (T, H)
    in_cols = (cols >= lefts[:, None]) & (cols < lefts[:, None] + ww)  # (L, W)
    masks = (in_rows[:, None, :, None] & in_cols[None, :, None, :]).flatten(0, 1)  # (P, H, W)
    masks = masks.to(x.dtype)
    baseline = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)

    with explaining(model):
        with torch.no_grad():
            base = target_scores(model(x), target)  # (n,)
            per_target = _repeat_target(target, n)
            drops = []
            chunk = max(1, batch_size // n)
            for start in range(0, len(masks), chunk):
                m = masks[start:start + chunk, None, None]  # (p, 1, 1, H, W)
                occluded = x * (1 - m) + baseline * m  # (p, n, C, H, W)
                # channels-last copies: oneDNN's convolutions run about 1.8x faster on a CPU
                batch = occluded.flatten(0, 1).contiguous(memory_format=torch.channels_last)
                out = model(batch)
                scores = target_scores(out, per_target(len(m))).view(len(m), n)
                drops.append(base - scores)
    drops = torch.cat(drops)  # (P, n)
    total = torch.einsum("pn,phw->nhw", drops, masks)
    return (total / masks.sum(0))[:, None]  # every pixel is covered by at least one window


def _slice_target(target: Target, start: int, stop: int, n: int) -> Target:
    """The targets of samples ``start:stop``: a per-sample target is sliced, the rest kept."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    index = torch.as_tensor(target)
    return index[start:stop] if index.dim() == 1 and len(index) == n else target


def _slice_baseline(baseline, x: torch.Tensor, start: int, size: int):
    """The baseline of samples ``start:start+size`` when it has one row per sample."""
    b = torch.as_tensor(baseline)
    return b[start:start + size] if b.dim() == x.dim() and b.shape[0] == x.shape[0] > 1 else baseline


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

    A constant map (all zeros, say) becomes all zeros, never NaN.
    """
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > eps, (flat - low) / span.clamp(min=eps), torch.zeros_like(flat))
    return scaled.view_as(maps)


# --------------------------------------------------------------------------------------------
# Coarse-grained: maps at a layer, laid back over the image
# --------------------------------------------------------------------------------------------


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of ``maps (n, 1, h, w)`` to ``size = (H, W)`` (half-pixel centres,
    ``align_corners=False``, as captum and OpenCV)."""
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def layer_gradient(model: nn.Module, x: torch.Tensor, target: Target,
                   layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation ``A (n, K, h, w)`` of ``layer`` and the gradient of the target score with
    respect to it, ``dy/dA`` - back-propagated only as far as the layer, with no parameter
    gradients."""
    check_input(x)
    with explaining(model) as handles:
        record = capture(model, layer, handles)
        score = target_scores(model(x.detach()), target)
        if "activation" not in record:
            raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
        (grad,) = torch.autograd.grad(score.sum(), record["activation"])
    return record["activation"].detach(), grad


def gradcam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer,
            counterfactual: bool = False, upsampled: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, *Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization*).

    ``alpha_k = 1/Z sum_ij dy/dA^k_ij`` (the mean gradient of each feature map), then
    ``M = ReLU(sum_k alpha_k A^k)``: the feature maps weighted by how much the score wants each,
    keeping what speaks *for* the target. With ``counterfactual=True`` the gradient is negated
    (the paper's counterfactual explanations): the map shows the regions whose features argue *against* the target.

    Returns:
        ``(n, 1, H, W)`` upsampled bilinearly to the input, or ``(n, 1, h, w)`` at the layer's
        resolution with ``upsampled=False``. Unnormalised (see :func:`normalize`).
    """
    a, grad = layer_gradient(model, x, target, layer)
    if counterfactual:
        grad = -grad
    alpha = grad.mean((2, 3), keepdim=True)  # (n, K, 1, 1)
    maps = F.relu((alpha * a).sum(1, keepdim=True))
    return upsample(maps, x.shape[-2:]) if upsampled else maps


def layercam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer,
             upsampled: bool = True) -> torch.Tensor:
    """The source document's element-wise form: ``M = ReLU(sum_k ReLU(dy/dA^k) * A^k)``.

    Each position keeps its own gradient instead of the feature map's mean, so the map keeps
    finer detail at early layers. This is LayerCAM (Jiang et al. 2021, *LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization*). ``(n, 1, H, W)``, or ``(n, 1, h, w)``
    with ``upsampled=False``.
    """
    a, grad = layer_gradient(model, x, target, layer)
    maps = F.relu((F.relu(grad) * a).sum(1, keepdim=True))
    return upsample(maps, x.shape[-2:]) if upsampled else maps


def guided_gradcam(model: nn.Module, x: torch.Tensor, target: Target, *,
                   layer: Layer) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop's fine detail masked
    by Grad-CAM's class-discriminative map, ``G * upsample(M)``, shape ``(n, C, H, W)``."""
    return guided_backprop(model, x, target) * gradcam(model, x, target, layer=layer)


def _gap_linear_weights(model: nn.Module, a: torch.Tensor, out: torch.Tensor) -> tuple:
    """The weights ``(classes, K)`` and bias of the last ``nn.Linear`` of ``model``, checked to
    reproduce ``out`` as ``W mean_ij(A) + b``: the network really ends in GAP + one linear."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hint = ("CAM needs a network that ends in global average pooling and one linear layer "
            "(like shapes-gap or ResNet); use gradcam for any other network")
    if not linears or linears[-1].in_features != a.shape[1]:
        raise ValueError(f"{hint}; no final nn.Linear takes the layer's {a.shape[1]} channels")
    weight, bias = linears[-1].weight, linears[-1].bias
    predicted = a.mean((2, 3)) @ weight.T + (0 if bias is None else bias)
    if predicted.shape != out.shape or not torch.allclose(predicted, out, rtol=1e-3, atol=1e-4):
        raise ValueError(f"{hint}; the model's output is not W mean(A) + b of this layer")
    return weight, bias


def cam(model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer,
        weights: torch.Tensor | None = None, upsampled: bool = True) -> torch.Tensor:
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
        raise ValueError("cam explains a class (an int or one per image); for any other "
                         "score use gradcam with a callable target")
    check_input(x)
    with explaining(model) as handles:
        record = capture(model, layer, handles)
        with torch.no_grad():
            out = model(x)
    a = record["activation"].detach()
    if weights is None:
        weights, _ = _gap_linear_weights(model, a, out)
    if weights.dim() != 2 or weights.shape[1] != a.shape[1]:
        raise ValueError(f"weights must have shape (classes, {a.shape[1]}), got "
                         f"{tuple(weights.shape)}")
    w = weights.detach()[target_classes(target, len(x), weights.shape[0], x.device)]  # w^c
    maps = torch.einsum("nk,nkhw->nhw", w, a)[:, None]
    return upsample(maps, x.shape[-2:]) if upsampled else maps


# Factor activation maps live in their own module (chapter 07); they are part of this namespace.
from .factors import MODES, STATISTICS, factor_cam, factor_score  # noqa: E402
