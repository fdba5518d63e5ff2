"""Measuring explanations against the ground truth the course owns (masks and boxes).

* :func:`pointing_game` - is a map's maximum on the object? (Zhang et al. 2016, *Top-down
  Neural Attention by Excitation Backprop*);
* :func:`box_from_map` - Zhou et al. 2016's box: keep the pixels above 20 % of the map's
  maximum, take the largest connected component, box it;
* :func:`box_iou`, :func:`localization_accuracy` - a box is correct when its intersection over
  union with the true box is at least 0.5 (the ILSVRC localisation criterion CAM uses).

Maps are ``(n, 1, H, W)`` or ``(n, H, W)``; masks ``(n, H, W)`` bool; boxes ``(n, 4)`` as
``(x0, y0, x1, y1)`` in the pixel-edge convention of :mod:`vismap.data` (``x1 - x0`` is the
width in pixels).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["pointing_game", "box_from_map", "box_iou", "localization_accuracy"]


def _maps_2d(maps: torch.Tensor, what: str = "maps") -> torch.Tensor:
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{what} must have shape (n, 1, H, W) or (n, H, W), got "
                         f"{tuple(maps.shape)}")
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
    if tolerance > 0:
        grown = ndimage.binary_dilation(masks.cpu().numpy(), np.ones((1, 3, 3), bool),
                                        iterations=tolerance)
        masks = torch.from_numpy(grown).to(maps.device)
    flat = maps.flatten(1)
    peak = flat.argmax(1)
    constant = flat.max(1).values == flat.min(1).values
    return masks.flatten(1).gather(1, peak[:, None])[:, 0].to(maps.device) & ~constant


def box_from_map(maps: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Zhou et al. 2016's localisation rule: keep the pixels whose value is at least
    ``threshold`` times the map's maximum, take the largest 8-connected component, return its
    tight box.

    Returns:
        ``(n, 4)`` int64 boxes ``(x0, y0, x1, y1)``; a map with no positive value gives the
        empty box ``(0, 0, 0, 0)``.
    """
    maps = _maps_2d(maps).detach().cpu().numpy()
    boxes = np.zeros((len(maps), 4), dtype=np.int64)
    for k, m in enumerate(maps):
        top = m.max()
        if not top > 0:
            continue
        labels, count = ndimage.label(m >= threshold * top, structure=np.ones((3, 3)))
        sizes = ndimage.sum_labels(np.ones_like(m), labels, index=np.arange(1, count + 1))
        rows, cols = ndimage.find_objects(labels)[int(np.argmax(sizes))]
        boxes[k] = (cols.start, rows.start, cols.stop, rows.stop)
    return torch.from_numpy(boxes)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of paired boxes ``a, b (n, 4)`` -> ``(n,)`` (0 for empty boxes)."""
    a, b = a.float(), b.float()
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area = lambda box: (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def localization_accuracy(maps: torch.Tensor, boxes: torch.Tensor, threshold: float = 0.2,
                          iou: float = 0.5) -> float:
    """Share of maps whose :func:`box_from_map` overlaps the true box ``(n, 4)`` with
    IoU >= ``iou``."""
    if boxes.dim() == 3 and boxes.shape[1] == 1:
        boxes = boxes[:, 0]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {tuple(boxes.shape)}")
    predicted = box_from_map(maps, threshold)
    if len(predicted) != len(boxes):
        raise ValueError(f"{len(predicted)} maps but {len(boxes)} boxes")
    return (box_iou(predicted, boxes) >= iou).float().mean().item()
