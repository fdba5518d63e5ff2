"""The explicit deconvnet of Zeiler & Fergus 2014 (chapter 03), built by the paper's own
construction: switches, rectification, transposed filters (:func:`zeiler_fergus`). Its result
equals the deconvnet ReLU rule (:func:`vismap.explain.deconvnet`) times the unit's activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_count, check_input, check_model
from .._layers import Layer, resolve_layer
from .._running import forward

__all__ = ["zeiler_fergus"]


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
