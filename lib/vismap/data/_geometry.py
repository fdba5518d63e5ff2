"""Geometry shared by the data sets: implicit shapes, rasterisation, boxes, argument checks.

Every shape is an *implicit* region {(u, v) : inside_c(u, v)} in unit-free local coordinates
(u, v) = R(-theta) (p - c) / r of a pixel centre p, a shape centre c, a radius r and an angle
theta. Every shape lies inside the unit disk, so a shape of radius r stays inside r pixels of
its centre.
"""

from __future__ import annotations

import numpy as np
import torch

SIZE = 64  # the side of every image, in pixels

# --------------------------------------------------------------------------------------------
# Implicit shapes. Each takes local coordinates u, v (arrays, the unit disk bounds the shape)
# and returns a boolean array: is the point inside?
# --------------------------------------------------------------------------------------------


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 0.85**2


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.68


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral triangle inscribed in the circle of radius 0.98: three half-planes whose
    # outward normals point at angles 90, 210 and 330 degrees, at distance 0.98 / 2.
    inside = np.ones(u.shape, dtype=bool)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.49
    return inside


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.22) & (av <= 0.95)) | ((av <= 0.22) & (au <= 0.95))


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Five points at radius 0.98, valleys at radius 0.4, radius linear in the angle between.
    phase = (np.arctan2(v, u) * (5 / (2 * np.pi))) % 1.0  # 0 at a point, 0.5 at a valley
    from_point = np.minimum(phase, 1.0 - phase) * 2.0  # 0 at a point, 1 at a valley
    return np.hypot(u, v) <= 0.98 - 0.58 * from_point


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Two round lobes (centres (+-0.4, -0.28), radius 0.45) over a triangle pointing down to
    # (0, 0.92): a deep notch and a sharp tip, so that a small heart is not a blob.
    lobes = ((np.abs(u) - 0.4) ** 2 + (v + 0.28) ** 2) <= 0.45**2
    tip = (v >= -0.1) & (1.02 * np.abs(u) + 0.8 * (v + 0.1) <= 0.82)
    return lobes | tip


def _dsprites_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic algebraic heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled into the unit disk.
    x, y = u * 1.3, -v * 1.3 + 0.2
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0


_SHAPE_FUNCS = (_circle, _square, _triangle, _cross, _star, _heart)


def _rasterise(
    inside_fns,
    kinds: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    angle: np.ndarray,
    size: int = SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels covered by one shape per image, computed on a small patch around each shape.

    Returns ``(i, y, x)``: the image index, row and column of every covered pixel.
    """
    if len(kinds) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    half = int(np.ceil(radius.max())) + 1
    offsets = np.arange(-half, half + 1)
    ox = np.floor(cx).astype(np.int64)[:, None] + offsets  # (n, P) pixel columns
    oy = np.floor(cy).astype(np.int64)[:, None] + offsets  # (n, P) pixel rows
    dx = (ox - cx[:, None]).astype(np.float32)[:, None, :]  # (n, 1, P)
    dy = (oy - cy[:, None]).astype(np.float32)[:, :, None]  # (n, P, 1)
    cos = (np.cos(angle) / radius).astype(np.float32)[:, None, None]
    sin = (np.sin(angle) / radius).astype(np.float32)[:, None, None]
    u = cos * dx + sin * dy  # rotate by -theta and scale by 1/r
    v = -sin * dx + cos * dy
    inside = np.zeros(u.shape, dtype=bool)
    for k, fn in enumerate(inside_fns):
        sel = kinds == k
        if sel.any():
            inside[sel] = fn(u[sel], v[sel])
    valid = ((oy >= 0) & (oy < size))[:, :, None] & ((ox >= 0) & (ox < size))[:, None, :]
    i, py, px = np.nonzero(inside & valid)
    return i, oy[i, py], ox[i, px]


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``(x0, y0, x1, y1)`` of boolean masks ``(..., H, W)``.

    Pixel-edge convention: the box covers columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``,
    so its area in pixels is ``(x1 - x0) * (y1 - y0)``. An empty mask gives ``(0, 0, 0, 0)``.
    """
    rows, cols = masks.any(-1), masks.any(-2)  # (..., H), (..., W)
    ar_h = torch.arange(masks.shape[-2])
    ar_w = torch.arange(masks.shape[-1])
    big = masks.shape[-1] + masks.shape[-2]
    y0 = torch.where(rows, ar_h, big).amin(-1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(-1)
    x0 = torch.where(cols, ar_w, big).amin(-1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(-1)
    empty = ~rows.any(-1)
    box = torch.stack([x0, y0, x1, y1], -1)
    return torch.where(empty[..., None], torch.zeros_like(box), box)


def _check_n_seed(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of images), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _coverage(
    inside_fns,
    kinds: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    angle: np.ndarray,
    size: int = SIZE,
    samples: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased rasterisation: the fraction of each pixel that one shape per image covers.

    Pixel ``(y, x)`` is the unit square centred on ``(x, y)`` (the centres :func:`_rasterise`
    tests). Its coverage is estimated by supersampling, the box filter of anti-aliasing: the
    implicit shape is tested at ``s x s`` sub-pixel centres (``s = samples``) and

        coverage(y, x) = (1 / s^2) sum_{a, b = 0}^{s - 1} inside(x - 1/2 + (a + 1/2) / s,
                                                                y - 1/2 + (b + 1/2) / s).

    Vectorised in two passes over a square patch around each shape, the shapes sorted by kind
    so that each implicit function sees one contiguous block: first the pixel centres; then
    only the pixels whose 3x3 neighbourhood is mixed (some centres inside, some outside: the
    edge band) are supersampled, every other pixel is 0 or 1. Shapes of radius below 5 px are
    supersampled over their whole bounding disk, so thin parts that no pixel centre hits still
    show.

    Returns ``(i, y, x, coverage)``: the image index, row, column and coverage in (0, 1]
    (float32) of every pixel inside the image that the shape touches.
    """
    if len(kinds) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0, dtype=np.float32)
    order = np.argsort(kinds, kind="stable")  # shapes grouped by kind
    kinds, cx, cy, radius, angle = (a[order] for a in (kinds, cx, cy, radius, angle))
    bounds = np.searchsorted(kinds, np.arange(len(inside_fns) + 1))  # kind k: bounds[k]..[k+1]
    half = int(np.ceil(radius.max())) + 2  # a pixel reaches 0.71 px past its centre
    offsets = np.arange(-half, half + 1)
    n, p = len(kinds), len(offsets)
    ox = np.floor(cx).astype(np.int64)[:, None] + offsets  # (n, P) pixel columns
    oy = np.floor(cy).astype(np.int64)[:, None] + offsets  # (n, P) pixel rows
    dx = (ox - cx[:, None]).astype(np.float32)  # (n, P) pixel centre - shape centre
    dy = (oy - cy[:, None]).astype(np.float32)
    cos = (np.cos(angle) / radius).astype(np.float32)
    sin = (np.sin(angle) / radius).astype(np.float32)

    # Pass 1: the pixel centres, (n, P, P).
    c3, s3 = cos[:, None, None], sin[:, None, None]
    u = c3 * dx[:, None, :] + s3 * dy[:, :, None]  # rotate by -theta and scale by 1/r
    v = c3 * dy[:, :, None] - s3 * dx[:, None, :]
    centre = np.empty((n, p, p), dtype=bool)
    for k, fn in enumerate(inside_fns):
        block = slice(bounds[k], bounds[k + 1])
        centre[block] = fn(u[block], v[block])
    # Pass 2: supersample the edge band (and small shapes' whole disks).
    any_in, all_in = centre.copy(), centre.copy()  # over the 3x3 neighbourhood: rows, then columns
    for f in (any_in, all_in):
        op = np.logical_or if f is any_in else np.logical_and
        op(f[:, 1:], f[:, :-1].copy(), out=f[:, 1:])
        op(f[:, :-1], f[:, 1:].copy(), out=f[:, :-1])
        op(f[:, :, 1:], f[:, :, :-1].copy(), out=f[:, :, 1:])
        op(f[:, :, :-1], f[:, :, 1:].copy(), out=f[:, :, :-1])
    edge = any_in & ~all_in
    small = radius < 5
    if small.any():
        near = np.hypot(dx[:, None, :], dy[:, :, None]) <= radius[:, None, None] + 1
        edge |= near & small[:, None, None]
    coverage = centre.astype(np.float32).reshape(-1)
    at = np.flatnonzero(edge)  # (m,) flat indices into (n, P, P), sorted by shape, so by kind
    per_shape = np.bincount(at // (p * p), minlength=n)
    # A sub-pixel centre (dx + a, dy + b) has local coordinates (u + c a + s b, v + c b - s a).
    sub = ((np.arange(samples) + 0.5) / samples - 0.5).astype(np.float32)
    sa, sb = np.tile(sub, samples), np.repeat(sub, samples)  # (s^2,) offsets, x fastest
    u = u.reshape(-1)[at, None] + np.repeat(cos[:, None] * sa + sin[:, None] * sb, per_shape, 0)
    v = v.reshape(-1)[at, None] + np.repeat(cos[:, None] * sb - sin[:, None] * sa, per_shape, 0)
    hits = np.empty(u.shape, dtype=bool)  # (m, s^2)
    edge_bounds = np.concatenate([[0], np.cumsum(per_shape)])[bounds]
    for k, fn in enumerate(inside_fns):
        block = slice(edge_bounds[k], edge_bounds[k + 1])
        hits[block] = fn(u[block], v[block])
    coverage[at] = np.count_nonzero(hits, axis=1) * np.float32(1 / samples**2)
    valid = ((oy >= 0) & (oy < size))[:, :, None] & ((ox >= 0) & (ox < size))[:, None, :]
    touched = np.flatnonzero((coverage > 0) & valid.reshape(-1))
    i, rest = np.divmod(touched, p * p)
    py, px = np.divmod(rest, p)
    return order[i], oy[i, py], ox[i, px], coverage[touched]
