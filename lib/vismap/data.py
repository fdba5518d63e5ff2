"""Procedural data sets with ground truth: *Shapes* and *Sprites*.

Real photo collections cannot be downloaded while the course runs offline, and they lack
the one thing an explanation course needs most: the true location of what the model should
look at. Both data sets here are drawn from a seeded random generator, vectorised with numpy,
and come with their ground truth.

* :func:`make_shapes` - 64x64 RGB scenes of one or two shapes from :data:`SHAPE_CLASSES` on a
  textured, noisy background with small distractors; exact masks and tight boxes per object.
* :func:`make_sprites` - the dSprites grid (Matthey et al. 2017) rebuilt: 3 shapes x 6 scales x
  40 orientations x 32 x 32 positions, 64x64 binary images, with the factor values of each.

Every shape is an *implicit* region {(u, v) : inside_c(u, v)} in unit-free local coordinates
(u, v) = R(-theta) (p - c) / r of a pixel centre p, a shape centre c, a radius r and an angle
theta. Every shape lies inside the unit disk, so a shape of radius r stays inside r pixels of
its centre. A pixel belongs to a shape when its centre is inside: the mask is exact, the
picture is the mask painted in a colour, and the box is the mask's tight bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "SHAPE_CLASSES",
    "SPRITE_SHAPES",
    "SPRITE_FACTORS",
    "SPRITE_GRID",
    "Shapes",
    "Sprites",
    "make_shapes",
    "make_sprites",
    "sprite_factor_grid",
    "render_sprites",
    "boxes_from_masks",
    "ANOMALIES",
    "add_anomalies",
]

SIZE = 64
_ROTATION = np.pi  # objects turn by up to this angle either way
_CHUNK = 256  # images per vectorised step of make_shapes (fixed: it is part of the seed)
SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "heart")

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


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shapes:
    """A batch of Shapes scenes.

    Attributes:
        images: ``(n, 3, 64, 64)`` float32 in [0, 1].
        labels: ``(n,)`` int64 class indices into :data:`SHAPE_CLASSES` when ``objects=1``,
            ``(n, 2)`` (one class per object, the two always different) when ``objects=2``.
        masks: ``(n, objects, 64, 64)`` bool, exactly the pixels painted with each object.
        boxes: ``(n, objects, 4)`` int64 tight boxes ``(x0, y0, x1, y1)`` of the masks
            (pixel-edge convention, see :func:`boxes_from_masks`).
        seed: the seed that made them.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    seed: int

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def class_names(self) -> list:
        """The class name of every label, in the shape of :attr:`labels`."""
        names = np.array(SHAPE_CLASSES, dtype=object)[self.labels.numpy()]
        return names.tolist()


def _check_n_seed(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of images), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _upsample_matrix(k: int, size: int = SIZE) -> np.ndarray:
    """The ``(size, k)`` matrix of bilinear upsampling from k to size samples (half-pixel
    centres), so that ``A @ X @ A.T`` upsamples a ``k x k`` grid to ``size x size``."""
    pos = np.clip((np.arange(size) + 0.5) * (k / size) - 0.5, 0, k - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, k - 1)
    a = np.zeros((size, k), dtype=np.float32)
    np.add.at(a, (np.arange(size), lo), 1 - (pos - lo))
    np.add.at(a, (np.arange(size), hi), pos - lo)
    return a


_UP8, _UP16 = _upsample_matrix(8), _upsample_matrix(16)


def _background(rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill ``out (n, 3, 64, 64)`` with textured, noisy, dark-to-mid backgrounds."""
    n = out.shape[0]
    base = rng.uniform(0.05, 0.45, size=(n, 3, 1, 1)).astype(np.float32)
    # Smooth colour blotches: 8x8 and 16x16 noise upsampled bilinearly.
    coarse = rng.normal(0.0, 0.10, size=(n, 3, 8, 8)).astype(np.float32)
    fine = rng.normal(0.0, 0.06, size=(n, 3, 16, 16)).astype(np.float32)
    # Stripes of random direction and frequency (a texture the model must learn to ignore).
    theta = rng.uniform(0, np.pi, size=(n, 1, 1)).astype(np.float32)
    freq = rng.uniform(0.3, 1.2, size=(n, 1, 1)).astype(np.float32)
    amp = rng.uniform(0.0, 0.08, size=(n, 1, 1)).astype(np.float32)
    grid = np.arange(SIZE, dtype=np.float32)
    grey = amp * np.sin(freq * (np.cos(theta) * grid[None, None, :]
                                + np.sin(theta) * grid[None, :, None]))
    grey += rng.standard_normal(size=(n, SIZE, SIZE), dtype=np.float32) * 0.04  # pixel noise
    np.matmul(_UP8 @ coarse, _UP8.T, out=out)
    out += _UP16 @ fine @ _UP16.T
    out += base
    out += grey[:, None]


def _bright_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random saturated, bright colours ``(n, 3)``: a random hue at value 0.65-1."""
    hue = rng.uniform(0, 1, size=n)
    value = rng.uniform(0.65, 1.0, size=n)
    sat = rng.uniform(0.5, 1.0, size=n)
    k = (np.arange(3)[None, :] * (1 / 3) + hue[:, None]) % 1.0  # three phases of the hue wheel
    wheel = np.clip(np.abs(k * 6 - 3) - 1, 0, 1)  # piecewise-linear RGB of a pure hue
    return (value[:, None] * (1 - sat[:, None] * (1 - wheel))).astype(np.float32)


def _place_apart(rng: np.random.Generator, r1, r2, max_tries: int = 1000):
    """Centres for two objects of radii r1, r2 whose bounding disks do not touch."""
    n = len(r1)
    lo1, lo2 = r1 + 1, r2 + 1
    c1 = rng.uniform(lo1[:, None], SIZE - 1 - lo1[:, None], size=(n, 2))
    c2 = rng.uniform(lo2[:, None], SIZE - 1 - lo2[:, None], size=(n, 2))
    for _ in range(max_tries):
        bad = np.hypot(*(c1 - c2).T) <= r1 + r2 + 2
        if not bad.any():
            return c1, c2
        k = int(bad.sum())
        c1[bad] = rng.uniform(lo1[bad, None], SIZE - 1 - lo1[bad, None], size=(k, 2))
        c2[bad] = rng.uniform(lo2[bad, None], SIZE - 1 - lo2[bad, None], size=(k, 2))
    raise RuntimeError("could not place two objects apart")  # pragma: no cover


def _make_shapes_chunk(rng: np.random.Generator, img: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Draw ``len(img)`` scenes into ``img (n, 3, 64, 64)`` and ``masks (n, objects, 64, 64)``
    (both written in place); return the labels ``(n, objects)``."""
    n, objects = masks.shape[:2]
    _background(rng, img)
    classes = len(SHAPE_CLASSES)
    # Where the objects go (painted last, on top).
    if objects == 1:
        labels = rng.integers(0, classes, size=(n, 1))
        radius = rng.uniform(11.0, 18.0, size=(n, 1))
        centres = rng.uniform(radius + 1, SIZE - 2 - radius, size=(n, 2))[:, None, :]
    else:
        first = rng.integers(0, classes, size=n)
        second = (first + rng.integers(1, classes, size=n)) % classes  # always a different class
        labels = np.stack([first, second], 1)
        radius = rng.uniform(9.0, 13.0, size=(n, 2))
        c1, c2 = _place_apart(rng, radius[:, 0], radius[:, 1])
        centres = np.stack([c1, c2], 1)
    # Distractors: one to four small shapes of any class, kept 2 px clear of every object
    # (a distractor that touched an object would change its outline).
    n_distract = rng.integers(1, 5, size=n)
    for k in range(4):
        r = rng.uniform(2.0, 4.5, size=n)
        xy = np.empty((n, 2))
        todo = np.ones(n, dtype=bool)
        for _ in range(20):
            xy[todo] = rng.uniform(r[todo, None], SIZE - 1 - r[todo, None], size=(todo.sum(), 2))
            gap = np.hypot(*(xy[:, None, :] - centres).transpose(2, 0, 1)) - radius - r[:, None]
            todo = (gap <= 2).any(1)
            if not todo.any():
                break
        present = np.nonzero((n_distract > k) & ~todo)[0]
        m = len(present)
        kind = rng.integers(0, classes, size=m)
        angle = rng.uniform(0, 2 * np.pi, size=m)
        colour = _bright_colours(rng, m) * rng.uniform(0.6, 1.0, size=(m, 1)).astype(np.float32)
        i, y, x = _rasterise(_SHAPE_FUNCS, kind, xy[present, 0], xy[present, 1], r[present],
                             angle)
        img[present[i], :, y, x] = colour[i]
    for j in range(objects):
        angle = rng.uniform(-_ROTATION, _ROTATION, size=n)
        colour = _bright_colours(rng, n)
        i, y, x = _rasterise(_SHAPE_FUNCS, labels[:, j], centres[:, j, 0], centres[:, j, 1],
                             radius[:, j], angle)
        img[i, :, y, x] = colour[i]
        masks[i, j, y, x] = True
    np.clip(img, 0.0, 1.0, out=img)
    return labels


def make_shapes(n: int, seed: int = 0, objects: int = 1) -> Shapes:
    """Make ``n`` Shapes scenes: the course's "ImageNet in miniature", with ground truth.

    Each 64x64 RGB image shows ``objects`` shape(s) of :data:`SHAPE_CLASSES` (radius 11-18 px
    alone, 9-13 px in pairs; random position, rotation and bright colour) over a textured
    background (smooth colour blotches, stripes, pixel noise) with one to four small distractor
    shapes (radius 2-4.5 px, kept 2 px clear of the objects) of any class, so that a model has to find the big shape.
    With ``objects=2`` the two shapes are of different classes and their bounding disks do not
    touch: the "cat and dog" scenes of the source document.

    Args:
        n: number of images, >= 1.
        seed: non-negative seed; the same arguments give the same tensors, bit for bit.
        objects: 1 or 2 objects per image.

    Returns:
        :class:`Shapes` with ``images (n, 3, 64, 64)``, ``labels (n,)`` or ``(n, 2)``,
        ``masks (n, objects, 64, 64)`` and ``boxes (n, objects, 4)``.
    """
    _check_n_seed(n, seed)
    if objects not in (1, 2):
        raise ValueError(f"objects must be 1 or 2 (shapes per image), got {objects!r}")
    # Fixed-size chunks, each with its own child generator, keep the temporaries small; the
    # outputs are allocated once and filled in place (touching fresh memory is the slow part).
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    masks = np.zeros((n, objects, SIZE, SIZE), dtype=bool)
    labels = np.empty((n, objects), dtype=np.int64)
    seeds = np.random.SeedSequence([int(seed), objects]).spawn((n + _CHUNK - 1) // _CHUNK)
    for start, child in zip(range(0, n, _CHUNK), seeds):
        part = slice(start, start + _CHUNK)
        labels[part] = _make_shapes_chunk(np.random.default_rng(child), images[part], masks[part])
    images, labels, masks = map(torch.from_numpy, (images, labels, masks))
    if objects == 1:
        labels = labels[:, 0]
    return Shapes(images=images, labels=labels, masks=masks,
                  boxes=boxes_from_masks(masks), seed=int(seed))


# --------------------------------------------------------------------------------------------
# Sprites: the dSprites grid
# --------------------------------------------------------------------------------------------

SPRITE_SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
SPRITE_FACTORS: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y")
SPRITE_GRID: dict = {
    "shape": np.arange(3, dtype=np.float32),
    "scale": np.linspace(0.5, 1.0, 6, dtype=np.float32),
    "orientation": (np.arange(40) * (2 * np.pi / 40)).astype(np.float32),
    "pos_x": np.linspace(0.0, 1.0, 32, dtype=np.float32),
    "pos_y": np.linspace(0.0, 1.0, 32, dtype=np.float32),
}
_SPRITE_FUNCS = (_square, _ellipse, _dsprites_heart)
_SPRITE_RADIUS = 11.0  # pixels, at scale 1
_SPRITE_MARGIN = 12.0  # centre range: 12 .. 51 pixels


@dataclass(frozen=True)
class Sprites:
    """A batch of sprites.

    Attributes:
        images: ``(n, 1, 64, 64)`` float32, exactly 0 or 1.
        factors: ``(n, 5)`` float32 true factor values, columns :data:`SPRITE_FACTORS`:
            shape index (0 square, 1 ellipse, 2 heart), scale in [0.5, 1], orientation in
            [0, 2 pi), x and y position in [0, 1].
        seed: the seed that drew them (``None`` for an explicit grid).
    """

    images: torch.Tensor
    factors: torch.Tensor
    seed: int | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def sprite_factor_grid() -> np.ndarray:
    """All 3 x 6 x 40 x 32 x 32 = 737,280 factor combinations of dSprites, ``(737280, 5)``,
    in dSprites' order (the last factor, y position, varies fastest)."""
    values = [SPRITE_GRID[name] for name in SPRITE_FACTORS]
    return np.array(list(product(*values)), dtype=np.float32)


def render_sprites(factors) -> torch.Tensor:
    """Render sprites ``(n, 1, 64, 64)`` float32 in {0, 1} from factor rows ``(n, 5)``.

    A sprite of scale s has radius ``11 s`` pixels; position p in [0, 1] puts its centre at
    pixel ``12 + 39 p``, so every sprite stays inside the image.
    """
    f = np.asarray(factors, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != 5:
        raise ValueError(f"factors must have shape (n, 5) with columns {SPRITE_FACTORS}, "
                         f"got shape {tuple(f.shape)}")
    span = SIZE - 1 - 2 * _SPRITE_MARGIN
    kind = np.rint(f[:, 0]).astype(np.int64)
    if ((kind < 0) | (kind > 2)).any():
        raise ValueError("the shape factor must be 0 (square), 1 (ellipse) or 2 (heart)")
    images = np.zeros((len(f), SIZE, SIZE), dtype=np.float32)
    i, y, x = _rasterise(_SPRITE_FUNCS, kind, _SPRITE_MARGIN + span * f[:, 3],
                         _SPRITE_MARGIN + span * f[:, 4], _SPRITE_RADIUS * f[:, 1], f[:, 2])
    images[i, y, x] = 1.0
    return torch.from_numpy(images[:, None])


def make_sprites(n: int, seed: int = 0) -> Sprites:
    """Draw ``n`` distinct sprites uniformly from the dSprites grid (:func:`sprite_factor_grid`).

    Args:
        n: number of images, 1 .. 737,280.
        seed: non-negative seed; the same arguments give the same tensors, bit for bit.

    Returns:
        :class:`Sprites` with ``images (n, 1, 64, 64)`` and ``factors (n, 5)``.
    """
    _check_n_seed(n, seed)
    sizes = [len(SPRITE_GRID[name]) for name in SPRITE_FACTORS]
    total = int(np.prod(sizes))
    if n > total:
        raise ValueError(f"n must be at most {total} (the size of the grid), got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    flat = rng.choice(total, size=n, replace=False)
    index = np.stack(np.unravel_index(flat, sizes), 1)
    factors = np.stack([SPRITE_GRID[name][index[:, k]] for k, name in
                        enumerate(SPRITE_FACTORS)], 1).astype(np.float32)
    return Sprites(images=render_sprites(factors), factors=torch.from_numpy(factors),
                   seed=int(seed))


# --------------------------------------------------------------------------------------------
# Anomalies: what the sprites VAE never saw, with a known mask (chapter 07)
# --------------------------------------------------------------------------------------------

ANOMALIES: tuple[str, ...] = ("blob", "scratch")
_ANOMALY_GAP = 3  # pixels kept free between an anomaly and the sprite


def add_anomalies(images: torch.Tensor, seed: int = 0,
                  kind: str = "blob") -> tuple[torch.Tensor, torch.Tensor]:
    """Paint one anomaly into each binary image ``(n, 1, H, W)``, away from what is there.

    ``"blob"``: a filled disk of radius 2.5-4 px; ``"scratch"``: a straight stroke about 2 px
    wide and 10-18 px long at any angle. It is placed at least 3 px from every lit pixel of
    the image, so the anomaly's mask is exactly the new pixels.

    Returns:
        ``(images, masks)``: the images with their anomaly (a new tensor) and the anomaly masks
        ``(n, H, W)`` bool. The same seed gives the same anomalies.
    """
    if kind not in ANOMALIES:
        raise ValueError(f"unknown anomaly {kind!r}; valid: {', '.join(ANOMALIES)}")
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (n, 1, H, W), got {tuple(images.shape)}")
    _check_n_seed(len(images), seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    h, w = images.shape[-2:]
    v, u = np.mgrid[0:h, 0:w] + 0.5
    out = images.clone()
    masks = np.zeros((len(images), h, w), dtype=bool)
    lit = images[:, 0].cpu().numpy() > 0
    for k in range(len(images)):
        keep_out = ndimage.binary_dilation(lit[k], iterations=_ANOMALY_GAP)
        for _ in range(1000):
            cx, cy = rng.uniform(5, w - 5), rng.uniform(5, h - 5)
            if kind == "blob":
                mask = (u - cx) ** 2 + (v - cy) ** 2 <= rng.uniform(2.5, 4.0) ** 2
            else:
                half, angle = rng.uniform(5, 9), rng.uniform(0, np.pi)
                d = np.array([np.cos(angle), np.sin(angle)])
                t = np.clip((u - cx) * d[0] + (v - cy) * d[1], -half, half)
                mask = (u - cx - t * d[0]) ** 2 + (v - cy - t * d[1]) ** 2 <= 1.0
            if mask.any() and not (mask & keep_out).any():
                break
        else:
            raise ValueError(f"no room for a {kind} in image {k}: it is too full")
        masks[k] = mask
    out[:, 0][torch.from_numpy(masks)] = 1.0
    return out, torch.from_numpy(masks)
