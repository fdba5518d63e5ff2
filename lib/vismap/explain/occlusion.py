"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2; chapter 03): hide a window of the
image, watch the score drop (:func:`occlusion`).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import baseline_like, check_call, check_count
from .._running import explaining, fast_empty, fast_layout, forward, model_input
from .._targets import Target, repeat_target, slice_target, target_scores

__all__ = ["occlusion"]


def _pair(v, what: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(pair) != 2 or not all(
        isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in pair
    ):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return pair


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
    hidden = baseline_like(baseline, x)
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
                scores = target_scores(out, repeat_target(target, len(windows))).view(
                    len(windows), n
                )
                drops.append(base - scores)
    drop = torch.cat(drops)  # (P, n)
    total = torch.einsum("pn,phw->nhw", drop, masks)
    return (total / masks.sum(0))[:, None]  # every pixel is covered by at least one window


def _slice_baseline(baseline, x: torch.Tensor, start: int, size: int):
    """The baseline of samples ``start:start+size`` when it has one row per sample."""
    b = torch.as_tensor(baseline)
    per_sample = b.dim() == x.dim() and b.shape[0] == x.shape[0] > 1
    return b[start : start + size] if per_sample else baseline
