"""Measuring explanations against the ground truth the course owns (masks and boxes), against
the model itself (deleting what a map points at), and against a randomised model.

Against the ground truth:

* :func:`pointing_game` - is a map's maximum on the object? (Zhang et al. 2016, *Top-down
  Neural Attention by Excitation Backprop*);
* :func:`relevance_mass` - the share of a map's positive mass that lies on the object (the
  energy-based pointing game of Wang et al. 2020, *Score-CAM*);
* :func:`box_from_map` - Zhou et al. 2016's box: keep the pixels above 20 % of the map's
  maximum, take the largest connected component, box it;
* :func:`box_iou`, :func:`localization_accuracy` - a box is correct when its intersection over
  union with the true box is at least 0.5 (the ILSVRC localisation criterion CAM uses);
* :func:`pixel_auroc` - the map as a pixel detector of a mask (anomaly localisation, ch. 07).

Against the model (Petsiuk et al. 2018, *RISE*):

* :func:`deletion_curve`, :func:`deletion_auc` - remove the pixels a map ranks first; a good
  map makes the class probability fall fast (low area);
* :func:`insertion_curve`, :func:`insertion_auc` - reveal them on a blurred copy; a good map
  makes it rise fast (high area).

Against a randomised model (Adebayo et al. 2018, *Sanity Checks for Saliency Maps*):

* :func:`randomization_check` - randomise the layers from the top down and measure how much the
  map changes (:func:`spearman`, :func:`ssim`).

Maps are ``(n, 1, H, W)`` or ``(n, H, W)``; masks ``(n, H, W)`` bool; boxes ``(n, 4)`` as
``(x0, y0, x1, y1)`` in the pixel-edge convention of :mod:`vismap.data` (``x1 - x0`` is the
width in pixels). A map with one channel per colour (the gradient methods, ``(n, C, H, W)``)
becomes one importance per pixel with :func:`importance`.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ._checks import (
    baseline_like,
    check_call,
    check_count,
    check_input,
    check_model,
)
from ._layers import Layer, resolve_layer
from ._running import explaining, fast_layout, forward, inference_safe
from ._targets import Target, check_target, is_score, target_classes

__all__ = [
    "pointing_game",
    "box_from_map",
    "box_iou",
    "localization_accuracy",
    "relevance_mass",
    "importance",
    "blur",
    "deletion_curve",
    "PROBABILITIES",
    "deletion_auc",
    "insertion_curve",
    "insertion_auc",
    "spearman",
    "ssim",
    "randomization_check",
    "Randomization",
    "BLUR_SIGMA",
    "pixel_auroc",
]


def _tensor(value: object, what: str) -> torch.Tensor:
    """``value`` must be a tensor; floating-point values must be finite (a NaN in a map would
    rank, point or weigh silently wrong)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_floating_point() and not _finite(value):
        raise ValueError(f"{what} has NaN or infinite values; give finite values")
    return value


def _finite(value: torch.Tensor) -> bool:
    """Whether every value is finite, read off the smallest and the largest (a NaN makes both
    NaN, an infinity one of them): one reduction, where ``isfinite(value).all()`` writes a mask
    as large as ``value`` first (a 500-map batch: 0.5 ms against 8 ms)."""
    if value.numel() == 0:
        return True
    low, high = torch.aminmax(value)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _fraction(value: object, what: str) -> float:
    """``value`` must be a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def _maps_2d(maps: torch.Tensor, what: str = "maps") -> torch.Tensor:
    _tensor(maps, what)
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(
            f"{what} must have shape (n, 1, H, W) or (n, H, W), got {tuple(maps.shape)}"
        )
    return maps


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Hit or miss per image: is the map's maximum inside the mask (grown by ``tolerance``
    pixels, Zhang et al. use 15 at 224 px)?

    Returns:
        ``(n,)`` bool; ``.float().mean()`` is the pointing accuracy. An all-constant map (all
        zeros, say) points nowhere and counts as a miss.
    """
    maps = _maps_2d(maps)
    masks = _maps_2d(masks, "masks").bool()
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
    check_count(tolerance, "tolerance", minimum=0)
    n, h, w = maps.shape
    flat = maps.flatten(1)
    top, peak = flat.max(1)  # the first maximum of each map, as argmax
    constant = top == flat.amin(1)
    # the mask grown by ``tolerance`` steps of 8-connectivity contains the peak exactly when a
    # mask pixel lies in the (2 tolerance + 1)-square around the peak: only that square is read
    # (a row or column beyond the image is clamped onto the square's own edge pixels)
    near = torch.arange(-tolerance, tolerance + 1, device=maps.device)
    rows = ((peak // w)[:, None, None] + near[None, :, None]).clamp(0, h - 1)
    cols = ((peak % w)[:, None, None] + near[None, None, :]).clamp(0, w - 1)
    image = torch.arange(n, device=maps.device)[:, None, None]
    hit = masks.to(maps.device)[image, rows, cols].flatten(1).any(1)
    return hit & ~constant


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The share of each map's positive mass that lies inside the mask: the energy-based
    pointing game (Wang et al. 2020, *Score-CAM*, Sec. 5.2; Arras et al. 2022 call it relevance
    mass accuracy),

    ``mass = sum_{p in mask} max(M_p, 0) / sum_p max(M_p, 0)``.

    Unlike the pointing game it looks at the whole map, not only its peak. A map equal to the
    mask scores 1, a map that is zero on the mask scores 0, and so does a map with no positive
    value at all (it puts no mass anywhere; never NaN).

    Args:
        maps: ``(n, 1, H, W)`` or ``(n, H, W)``; a colour map ``(n, C, H, W)`` must first go
            through :func:`importance`.
        masks: ``(n, H, W)`` or ``(n, 1, H, W)`` bool, each with at least one pixel.

    Returns:
        ``(n,)`` in [0, 1], in the maps' floating-point dtype (float32 for integer maps), so
        that float64 maps give a float64 share.
    """
    maps = _maps_2d(maps)
    maps = (maps if maps.is_floating_point() else maps.float()).clamp(min=0)
    masks = _check_masks(masks, maps)
    inside = (maps * masks).flatten(1).sum(1)
    total = maps.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))


def _check_masks(masks: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``masks`` as ``(n, H, W)`` bool on the maps' device, the maps' shape, none empty."""
    masks = _maps_2d(masks, "masks").bool().to(maps.device)
    if masks.shape != maps.shape:
        raise ValueError(
            f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ; "
            f"give one mask per map, at the map's resolution"
        )
    empty = (~masks.flatten(1).any(1)).nonzero()[:, 0].tolist()
    if empty:
        raise ValueError(
            f"the masks of images {empty[:10]}{' ...' if len(empty) > 10 else ''} "
            f"are empty: a mask must contain at least one pixel"
        )
    return masks


def box_from_map(maps: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Zhou et al. 2016's localisation rule: keep the pixels whose value is at least
    ``threshold`` times the map's maximum, take the largest 8-connected component, return its
    tight box.

    Returns:
        ``(n, 4)`` int64 boxes ``(x0, y0, x1, y1)``; a map with no positive value gives the
        empty box ``(0, 0, 0, 0)``.
    """
    threshold = _fraction(threshold, "threshold")
    arrays = _maps_2d(maps).detach().cpu().numpy()
    top = arrays.max(axis=(1, 2), initial=-np.inf, keepdims=True)
    kept = (arrays >= threshold * top) & (top > 0)
    # every map's components at once: 8-connected within a map, never across two maps
    within = np.zeros((3, 3, 3), bool)
    within[1] = True
    labels, count = ndimage.label(kept, structure=within)
    boxes = np.zeros((len(arrays), 4), dtype=np.int64)
    if count == 0:
        return torch.from_numpy(boxes)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    found = ndimage.find_objects(labels)  # component j + 1: (map, rows, columns) slices
    image = np.array([k.start for k, _, _ in found])
    # per map the largest component, the first in scan order among equals (labels are numbered
    # in scan order)
    order = np.lexsort((np.arange(count), -sizes, image))
    first = order[np.r_[True, image[order][1:] != image[order][:-1]]]
    for j in first:
        _, rows, cols = found[j]
        boxes[image[j]] = (cols.start, rows.start, cols.stop, rows.stop)
    return torch.from_numpy(boxes)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of paired boxes ``a, b (n, 4)`` -> ``(n,)`` (0 for empty boxes)."""
    _tensor(a, "a")
    _tensor(b, "b")
    if a.dim() != 2 or a.shape[1] != 4 or a.shape != b.shape:
        raise ValueError(
            f"a and b must be paired boxes of the same shape (n, 4), got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    a, b = a.float(), b.float()
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area = lambda box: (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def localization_accuracy(
    maps: torch.Tensor, boxes: torch.Tensor, threshold: float = 0.2, iou: float = 0.5
) -> float:
    """Share of maps whose :func:`box_from_map` overlaps the true box ``(n, 4)`` with
    IoU >= ``iou``."""
    _tensor(boxes, "boxes")
    iou = _fraction(iou, "iou")
    if boxes.dim() == 3 and boxes.shape[1] == 1:
        boxes = boxes[:, 0]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {tuple(boxes.shape)}")
    predicted = box_from_map(maps, threshold)
    if len(predicted) != len(boxes):
        raise ValueError(f"{len(predicted)} maps but {len(boxes)} boxes")
    return (box_iou(predicted, boxes) >= iou).float().mean().item()


def importance(maps: torch.Tensor) -> torch.Tensor:
    """One importance per pixel, ``(n, 1, H, W)``, from a map of any method.

    A map with several channels (the gradient methods' ``(n, C, H, W)``, signed) becomes its
    magnitude ``max_c |M_c|``: how strongly each pixel matters, whatever the sign - Simonyan et
    al.'s (2014) definition, the one the whole course uses (chapters 00, 04, 06, 08). A
    one-channel map ``(n, 1, H, W)`` or
    ``(n, H, W)`` is kept as it is, sign included: for CAM, Grad-CAM or occlusion a larger value
    *is* more evidence for the class, and a negative value evidence against it.
    """
    _tensor(maps, "maps")
    if maps.dim() == 3:
        return maps[:, None]
    if maps.dim() != 4:
        raise ValueError(
            f"maps must have shape (n, C, H, W), (n, 1, H, W) or (n, H, W), got {tuple(maps.shape)}"
        )
    return maps if maps.shape[1] == 1 else maps.abs().amax(1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Deletion and insertion (Petsiuk, Das & Saenko 2018, RISE, Sec. 4.2)
# --------------------------------------------------------------------------------------------

BLUR_SIGMA = 2.0
"""Standard deviation in pixels of the ``"blur"`` baseline: about RISE's blur (an 11-pixel
kernel on 224-pixel images) scaled to our 64-pixel ones. It keeps the colours and wipes out the
outlines: shapes-cnn calls nearly every blurred image a circle (notebook 08)."""


def blur(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """A Gaussian blur of the images ``x (n, C, H, W)``, per channel, with edges reflected:
    torchvision's ``gaussian_blur`` with the kernel ``2 r + 1`` wide, ``r = ceil(3 sigma)`` (at
    most ``min(H, W) - 1``).

    A 2-D Gaussian is the product of two 1-D ones, so the blur is one matrix on each side,
    ``blur(X) = B_H X B_W^T``, with ``B`` from :func:`_gaussian_matrix`."""
    check_input(x)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < math.inf:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
    h, w = x.shape[-2:]
    r = min(math.ceil(3 * sigma), min(h, w) - 1)  # a reflection reaches r pixels back at most
    return _gaussian_matrix(h, sigma, r, x) @ x @ _gaussian_matrix(w, sigma, r, x).T


def _gaussian_matrix(size: int, sigma: float, r: int, like: torch.Tensor) -> torch.Tensor:
    """The matrix ``B (size, size)`` of a 1-D Gaussian blur with reflected edges:
    ``(B v)_i = sum_{k=-r..r} g_k v_{reflect(i + k)}``, ``g_k = exp(-k^2 / 2 sigma^2)`` over
    their sum, where ``reflect`` mirrors an index at the first and the last sample without
    repeating it (-1 -> 1, size -> size - 2); weights that land on one sample add up."""
    k = torch.arange(-r, r + 1, dtype=like.dtype, device=like.device)
    g = torch.exp(-0.5 * (k / sigma) ** 2)
    g = g / g.sum()
    i = torch.arange(size, device=like.device)[:, None]
    source = (i + torch.arange(-r, r + 1, device=like.device)).abs()  # mirrored at 0
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # at size - 1
    matrix = torch.zeros(size, size, dtype=like.dtype, device=like.device)
    return matrix.index_put_((i.expand_as(source), source), g.expand_as(source), accumulate=True)


def _baseline(baseline: float | str | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The image that "removed" pixels take: a constant, ``"blur"``, or a tensor like ``x``."""
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(
                f"unknown baseline {baseline!r}; valid: 'blur', a number (a "
                f"constant image), or a tensor broadcastable to x {tuple(x.shape)}"
            )
        return blur(x)
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float, torch.Tensor)):
        raise ValueError(
            f"baseline must be 'blur', a number or a tensor like x, got {type(baseline).__name__}"
        )
    return baseline_like(baseline, x)


def _pixel_order(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pixel indices ``(n, H*W)`` from the most to the least important by ``importance(maps)``.

    Ties (the zeros of a ReLU'd map, a constant map) are broken by one fixed random permutation
    of the pixels, so that no part of the image (the top rows, say) goes first by accident.
    """
    scores = importance(maps).detach()
    n, _, h, w = x.shape
    if scores.shape[0] != n or scores.shape[-2:] != (h, w):
        raise ValueError(
            f"maps {tuple(maps.shape)} do not fit the images {tuple(x.shape)}: "
            f"give one map per image at the image's resolution ({h}x{w})"
        )
    scores = scores.flatten(1).to(x.device)
    shuffle = torch.randperm(h * w, generator=torch.Generator().manual_seed(0)).to(x.device)
    ranked = scores[:, shuffle].argsort(dim=1, descending=True, stable=True)
    return shuffle[ranked]


# How a classifier's logits ``y`` become the probability of class ``c`` that deletion and
# insertion follow: ``softmax(y)_c`` for a softmax classifier (RISE's), ``sigmoid(y_c)`` for a
# multi-label one (one yes/no question per class, as vismap.train.multilabel_loss trains).
PROBABILITIES = {
    "softmax": lambda logits: F.softmax(logits, 1),
    "sigmoid": torch.sigmoid,
}


def _perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    steps: int,
    start: torch.Tensor,
    end: torch.Tensor,
    batch_size: int,
    probability: str = "softmax",
) -> torch.Tensor:
    """The target's probability on images that take, at step ``k``, the ``round(k H W /
    steps)`` pixels the map ranks first from ``end`` and the others from ``start``."""
    n, _, h, w = x.shape
    if is_score(target):
        raise ValueError(
            "deletion and insertion measure a class's probability: give an "
            "int or one class per image, not a callable target"
        )
    if probability not in PROBABILITIES:
        raise ValueError(
            f"unknown probability {probability!r}; valid: {', '.join(PROBABILITIES)} "
            "(softmax for a classifier trained with the softmax cross-entropy, sigmoid for one "
            "trained with one sigmoid per class)"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"steps must be an integer >= 1 (the curve has steps + 1 points), got {steps!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = _pixel_order(maps, x)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(h * w, device=x.device).expand(n, -1)
    )  # rank of every pixel
    counts = torch.round(torch.arange(steps + 1, device=x.device) * (h * w / steps)).long()
    probs = torch.empty(n * (steps + 1), device=x.device)
    with explaining(model), torch.no_grad():
        classes = None
        for first in range(0, n * (steps + 1), batch_size):
            j = torch.arange(first, min(first + batch_size, n * (steps + 1)), device=x.device)
            i, k = j // (steps + 1), j % (steps + 1)  # image, step
            changed = (rank[i] < counts[k, None]).view(-1, 1, h, w)
            out = forward(model, fast_layout(torch.where(changed, end[i], start[i])))
            if classes is None:
                classes = target_classes(target, n, out.shape[1], x.device)
            probs[j] = PROBABILITIES[probability](out).gather(1, classes[i, None])[:, 0]
    return probs.view(n, steps + 1)


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    steps: int = 32,
    baseline: float | str | torch.Tensor = 0.0,
    batch_size: int = 64,
    probability: str = "softmax",
) -> torch.Tensor:
    """The deletion curve (Petsiuk, Das & Saenko 2018, *RISE: Randomized Input Sampling for
    Explanation of Black-box Models*, Sec. 4.2).

    Order the pixels by the map, most important first (:func:`importance`: a colour map by
    ``max_c |M_c|``, a one-channel map by its signed value; ties broken at random, by a fixed
    permutation). At step ``k = 0 .. steps`` replace the first ``round(k H W / steps)`` of them
    (all channels) by the ``baseline`` and record the target's probability
    ``p_k = softmax(f(x_k))_c`` (or ``sigmoid(f(x_k)_c)`` with ``probability="sigmoid"``, for
    a multi-label classifier: :data:`PROBABILITIES`). If the map found what the model uses,
    the probability falls at once. All ``n (steps + 1)`` perturbed images go through the model
    ``batch_size`` at a time (on a CPU about 64 is fastest, as for
    :func:`vismap.explain.occlusion`; on a GPU give more), under ``torch.no_grad()``; the model
    is left as it was.

    Args:
        model: a classifier, ``(n, C, H, W) -> (n, classes)`` logits.
        x: images ``(n, C, H, W)``.
        target: the class, an int or one per image.
        maps: ``(n, 1, H, W)``, ``(n, H, W)`` or ``(n, C, H, W)``.
        steps: the number of equal fractions, >= 1.
        baseline: what deleted pixels become: a number (a constant image; RISE uses 0), the
            string ``"blur"`` (:func:`blur` of ``x``), or a tensor broadcastable to ``x``.
        probability: ``"softmax"`` (RISE's, for a softmax classifier) or ``"sigmoid"`` (for a
            multi-label classifier, whose class probabilities are ``sigmoid(y_c)``).

    Returns:
        ``(n, steps + 1)`` probabilities at the fractions ``0, 1/steps, ..., 1``.
    """
    check_call(model, x, target)
    base = _baseline(baseline, x)
    return _perturbation_curve(model, x, target, maps, steps, x, base, batch_size, probability)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    steps: int = 32,
    baseline: float | str | torch.Tensor = "blur",
    batch_size: int = 64,
    probability: str = "softmax",
) -> torch.Tensor:
    """The insertion curve (Petsiuk et al. 2018, Sec. 4.2): start from the ``baseline`` (by
    default a blurred copy of the image, as in RISE) and put back the image's pixels in the
    map's order; a good map makes the probability rise at once. Arguments and returns as
    :func:`deletion_curve`: ``(n, steps + 1)``, from the baseline (fraction 0) to the image
    (fraction 1)."""
    check_call(model, x, target)
    base = _baseline(baseline, x)
    return _perturbation_curve(model, x, target, maps, steps, base, x, batch_size, probability)


def _auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under ``curve (n, steps + 1)`` over the fractions [0, 1], trapezoid rule."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def deletion_auc(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    steps: int = 32,
    baseline: float | str | torch.Tensor = 0.0,
    batch_size: int = 64,
    probability: str = "softmax",
) -> torch.Tensor:
    """Area under the :func:`deletion_curve` (trapezoid rule over the deleted fraction in
    [0, 1]), ``(n,)``. **Lower is better**: the probability falls fast when what the map ranks
    first is deleted."""
    return _auc(
        deletion_curve(
            model,
            x,
            target,
            maps,
            steps=steps,
            baseline=baseline,
            batch_size=batch_size,
            probability=probability,
        )
    )


def insertion_auc(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    steps: int = 32,
    baseline: float | str | torch.Tensor = "blur",
    batch_size: int = 64,
    probability: str = "softmax",
) -> torch.Tensor:
    """Area under the :func:`insertion_curve` (trapezoid rule over the inserted fraction in
    [0, 1]), ``(n,)``. **Higher is better**."""
    return _auc(
        insertion_curve(
            model,
            x,
            target,
            maps,
            steps=steps,
            baseline=baseline,
            batch_size=batch_size,
            probability=probability,
        )
    )


# --------------------------------------------------------------------------------------------
# Sanity checks (Adebayo et al. 2018)
# --------------------------------------------------------------------------------------------


def _as_rows(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _tensor(a, "a")
    _tensor(b, "b")
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(
            f"compare two batches of maps of the same shape (n, ...), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.detach().flatten(1).cpu().double(), b.detach().flatten(1).cpu().double()


def _ranks(rows: torch.Tensor) -> torch.Tensor:
    """The rank of every value within its row of ``rows (n, m)``, from 1 to ``m``; tied values
    share the mean of their ranks (``scipy.stats.rankdata(rows, axis=1)``).

    In a sorted row, a run of equal values at positions ``first .. last`` (0-based) takes the
    rank ``(first + last) / 2 + 1``."""
    values, order = rows.sort(dim=1, stable=True)
    m = values.shape[1]
    position = torch.arange(m, device=rows.device).expand_as(values)
    differs = values[:, 1:] != values[:, :-1]  # a new run starts at j + 1
    edge = torch.ones_like(values[:, :1], dtype=torch.bool)
    starts, ends = torch.cat([edge, differs], 1), torch.cat([differs, edge], 1)
    first = torch.where(starts, position, 0).cummax(1).values  # the last start at or before j
    last = torch.where(ends, position, m).flip(1).cummin(1).values.flip(1)  # first end from j on
    return torch.empty_like(values).scatter_(1, order, (first + last).to(values.dtype) / 2 + 1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between paired maps ``a, b (n, ...)``, one per pair ``(n,)``:
    the Pearson correlation of their pixel ranks (:func:`_ranks`: tied pixels share the mean of
    their ranks). A constant map has no order to compare: its correlation is 0, not NaN."""
    rows_a, rows_b = _as_rows(a, b)
    ra, rb = _ranks(rows_a), _ranks(rows_b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    norm = ((ra**2).sum(1) * (rb**2).sum(1)).sqrt()
    rho = torch.where(norm > 0, (ra * rb).sum(1) / torch.where(norm > 0, norm, 1.0), 0.0)
    return rho.float()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004) of paired maps
    ``a, b (n, H, W)`` or ``(n, 1, H, W)``, one per pair ``(n,)``, with the paper's settings:

        ``SSIM = mean_p (2 m_a m_b + C1)(2 s_ab + C2) / (m_a^2 + m_b^2 + C1)(s_a^2 + s_b^2 + C2)``

    where ``m``, ``s^2`` and ``s_ab`` are each pixel's local means, variances and covariance
    under a Gaussian window of standard deviation 1.5 (cut at 3.5 standard deviations, edges
    reflected), ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2`` for the data range ``R``, and the mean
    leaves out a 5-pixel border (less on maps smaller than 11 pixels): the definition of
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``, computed for the whole batch at once, in float64."""
    a, b = _maps_2d(a, "a").detach().cpu().double(), _maps_2d(b, "b").detach().cpu().double()
    if a.shape != b.shape:
        raise ValueError(
            f"compare maps of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    side = min(a.shape[-2:])
    border = (min(11, side if side % 2 else side - 1) - 1) // 2

    def local_mean(v: torch.Tensor) -> np.ndarray:  # per map: sigma 0 across the batch
        return ndimage.gaussian_filter(v.numpy(), (0, 1.5, 1.5), truncate=3.5, mode="reflect")

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a, var_b = local_mean(a * a) - mu_a**2, local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    h, w = s.shape[-2:]
    inner = s[:, border : h - border, border : w - border]
    return torch.from_numpy(inner.mean(axis=(1, 2))).float()


@dataclass
class Randomization:
    """What :func:`randomization_check` measured.

    Attributes:
        layers: the names randomised at each step, ``k`` of them (a step may be a group).
        spearman: ``(k,)`` rank correlation with the original map after step ``k``, the mean
            over the images; ``spearman_images (k, n)`` per image.
        ssim: ``(k,)`` structural similarity, likewise; ``ssim_images (k, n)``.
        maps: ``(k + 1, n, H, W)`` the compared maps, ``maps[0]`` the original: absolute
            importance, normalised to [0, 1] per map.
    """

    layers: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    spearman_images: torch.Tensor
    ssim_images: torch.Tensor
    maps: torch.Tensor


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _layer_steps(
    model: nn.Module, layers: Layer | Sequence[Layer | Sequence[Layer]] | None
) -> list[list[str]]:
    """The names randomised at each step: given (a name, a module, or a list of them per step),
    or every module with parameters of its own, from the last registered (the output) up."""
    if layers is None:
        steps = [[name] for name, m in model.named_modules() if _owns_parameters(m)][::-1]
        if not steps:
            raise ValueError("the model has no parameters to randomise")
        return steps
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, (list, tuple)):
        raise _layers_error(model, layers)
    steps = []
    for step in layers:
        if not isinstance(step, (str, nn.Module, list, tuple)):
            raise _layers_error(model, step)
        group = [step] if isinstance(step, (str, nn.Module)) else list(step)
        if not all(isinstance(layer, (str, nn.Module)) for layer in group):
            raise _layers_error(model, step)
        names = [resolve_layer(model, layer)[0] for layer in group]
        for name in names:
            if not any(True for _ in model.get_submodule(name).parameters()):
                raise ValueError(f"layer {name!r} has no parameters to randomise")
        steps.append(names)
    if not steps:
        raise ValueError("layers is empty: give at least one layer to randomise")
    return steps


def _layers_error(model: nn.Module, bad: object) -> TypeError:
    """The error for ``layers`` holding something that is no layer (an index, say)."""
    names = [name for name, m in model.named_modules() if _owns_parameters(m)][::-1]
    return TypeError(
        f"layers must be a layer (a name or a module), or a list with one name, module or "
        f"list of them per step; got {bad!r}. A layer is named, not numbered (a module of an "
        f"nn.Sequential is named by its index as a string, '3'); this model's layers with "
        f"parameters, top down: {', '.join(repr(n) for n in names[:20])}"
    )


def _compared(maps: torch.Tensor) -> torch.Tensor:
    """Adebayo et al.'s comparison form: the absolute importance, normalised to [0, 1]."""
    m = importance(maps).abs()[:, 0].detach().float()
    flat = m.flatten(1)
    top = flat.max(1, keepdim=True).values
    return torch.where(top > 0, flat / top.clamp(min=1e-30), torch.zeros_like(flat)).view_as(m)


@inference_safe
def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    method: Callable[[nn.Module, torch.Tensor, Target], torch.Tensor],
    *,
    layers: Layer | Sequence[Layer | Sequence[Layer]] | None = None,
    seed: int = 0,
) -> Randomization:
    """Cascading model-parameter randomisation (Adebayo, Gilmer, Muelly, Goodfellow, Hardt &
    Kim 2018, *Sanity Checks for Saliency Maps*, Sec. 4.1).

    An explanation of what the *model* learnt must change when the model's weights are
    destroyed. On a deep copy of ``model`` (the caller's is never touched), the layers are
    re-initialised from the top (the output) down, cumulatively: step 1 randomises the last
    layer, step 2 also the one below, and so on. After each step the map
    ``method(copy, x, target)`` is recomputed and compared with the original map by
    :func:`spearman` and :func:`ssim`. As in the paper both maps are compared by their
    *absolute* values, each normalised to [0, 1] by its maximum (a colour map first becomes
    ``max_c |M_c|``, :func:`importance`).

    Re-initialisation is each layer's own ``reset_parameters()`` (PyTorch's default
    initialisation, the paper's "initialisation distribution"), drawn from ``torch.manual_seed(
    seed + step)`` inside ``torch.random.fork_rng()``: the result is reproducible and the
    caller's random state is left alone.

    Args:
        method: ``(model, x, target) -> maps``, e.g. ``vm.explain.saliency`` or
            ``lambda m, x, t: vm.explain.gradcam(m, x, t, layer="features.10")``.
        layers: what to randomise at each step, in order: names or modules, or a list of them
            for a group randomised in one step. Default: every module with parameters of its
            own, from the last registered to the first (the top-down order for networks whose
            modules are registered in the order they run, as the course's and torchvision's).
        seed: the seed of the new weights.

    Returns:
        :class:`Randomization`: per step the layer names, the mean rank correlation and SSIM
        over the images (and per image), and the compared maps.
    """
    check_input(x, check_model(model))
    check_target(target, x.shape[0])
    if not callable(method):
        raise TypeError(
            f"method must be a function (model, x, target) -> maps, e.g. vm.explain.saliency "
            f"(a registry name: vm.explain.get_method(name)); got {type(method).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    steps = _layer_steps(model, layers)
    clone = copy.deepcopy(model)
    maps = [_compared(method(clone, x, target))]
    with torch.random.fork_rng(devices=[]):
        for k, names in enumerate(steps, start=1):
            torch.manual_seed(seed + k)
            for name in names:
                for m in clone.get_submodule(name).modules():
                    reset = getattr(m, "reset_parameters", None)
                    if callable(reset) and _owns_parameters(m):
                        reset()
            maps.append(_compared(method(clone, x, target)))
    if maps[0].shape != maps[-1].shape:
        raise ValueError(
            f"method returned maps of shape {tuple(maps[0].shape)} and then {tuple(maps[-1].shape)}"
        )
    rho = torch.stack([spearman(maps[0], m) for m in maps[1:]])
    sim = torch.stack([ssim(maps[0], m) for m in maps[1:]])
    return Randomization(
        layers=[" + ".join(names) for names in steps],
        spearman=rho.mean(1),
        ssim=sim.mean(1),
        spearman_images=rho,
        ssim_images=sim,
        maps=torch.stack(maps).cpu(),
    )


def pixel_auroc(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """Pixel-level area under the ROC curve of ``maps`` as detectors of ``masks``, pooled over
    all pixels of all images: the probability that a random pixel inside a mask scores above a
    random pixel outside it (ties count one half). It is the Mann-Whitney statistic
    ``AUROC = (R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)``, with ``R_+`` the rank sum of the
    positive pixels. 0.5 is chance, 1 a perfect detector.

    Args:
        maps: ``(n, 1, H, W)``, ``(n, C, H, W)`` (channels summed) or ``(n, H, W)``.
        masks: ``(n, H, W)`` bool, at least one pixel in and one out.
    """
    if _tensor(maps, "maps").dim() == 4 and maps.shape[1] > 1:
        maps = maps.sum(1, keepdim=True)
    maps = _maps_2d(maps)
    masks = _maps_2d(masks, "masks").bool()
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
    positive = masks.reshape(-1).cpu()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "pixel_auroc needs masks with both positive and negative pixels; "
            f"got {n_pos} positive and {n_neg} negative"
        )
    r = _ranks(maps.detach().reshape(1, -1).double().cpu())[0]
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
