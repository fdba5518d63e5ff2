"""*Sprites*: the dSprites grid rebuilt, with the true factors; and anomalies (chapter 07)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from scipy import ndimage

from ._geometry import SIZE, _check_n_seed, _dsprites_heart, _ellipse, _rasterise, _square

__all__ = [
    "SPRITE_SHAPES",
    "SPRITE_FACTORS",
    "SPRITE_GRID",
    "SPRITE_OBJECTS",
    "PAIR_LAYOUT",
    "Sprites",
    "make_sprites",
    "sprite_factor_grid",
    "render_sprites",
    "sprite_factor_names",
    "ANOMALIES",
    "add_anomalies",
]

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

#: The two objects of a two-object scene, in the order of ``factors[:, k]`` and ``masks[:, k]``.
SPRITE_OBJECTS: tuple[str, ...] = ("A", "B")
#: Where each object of a two-object scene may be (pixels, centres of the 64x64 image): object
#: A's centre lies in the left part, B's in the right part, both over almost the full height,
#: and a sprite of scale s has radius ``7 s``. Position p in [0, 1] maps linearly into the range.
PAIR_LAYOUT: dict = {
    "radius": 7.0,
    "x": ((7.0, 29.0), (35.0, 57.0)),  # A, B
    "y": (7.0, 57.0),
}
_PAIR_GAP = 1  # pixels kept free between the two objects of a scene


@dataclass(frozen=True)
class Sprites:
    """A batch of sprites.

    Attributes:
        images: ``(n, 1, 64, 64)`` float32, exactly 0 or 1.
        factors: true factor values, columns :data:`SPRITE_FACTORS`: shape index (0 square,
            1 ellipse, 2 heart), scale in [0.5, 1], orientation in [0, 2 pi), x and y position
            in [0, 1]. One object: ``(n, 5)``; two objects: ``(n, 2, 5)``, object A then B
            (each position relative to that object's range, :data:`PAIR_LAYOUT`).
        seed: the seed that drew them (``None`` for an explicit grid).
        masks: ``(n, objects, 64, 64)`` bool, the pixels of each object (for one object, the
            lit pixels).
    """

    images: torch.Tensor
    factors: torch.Tensor
    seed: int | None = None
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def sprite_factor_grid() -> np.ndarray:
    """All 3 x 6 x 40 x 32 x 32 = 737,280 factor combinations of dSprites, ``(737280, 5)``,
    in dSprites' order (the last factor, y position, varies fastest)."""
    values = [SPRITE_GRID[name] for name in SPRITE_FACTORS]
    return np.array(list(product(*values)), dtype=np.float32)


def _shape_index(f: np.ndarray) -> np.ndarray:
    kind = np.rint(f[:, 0]).astype(np.int64)
    if ((kind < 0) | (kind > 2)).any():
        raise ValueError("the shape factor must be 0 (square), 1 (ellipse) or 2 (heart)")
    return kind


def _object_masks(factors: np.ndarray, obj: int) -> np.ndarray:
    """The pixels ``(n, 64, 64)`` bool of object ``obj`` (0 = A, 1 = B) of a two-object scene,
    from its factor rows ``(n, 5)``, placed by :data:`PAIR_LAYOUT`."""
    (x0, x1), (y0, y1) = PAIR_LAYOUT["x"][obj], PAIR_LAYOUT["y"]
    masks = np.zeros((len(factors), SIZE, SIZE), dtype=bool)
    i, y, x = _rasterise(
        _SPRITE_FUNCS,
        _shape_index(factors),
        x0 + (x1 - x0) * factors[:, 3],
        y0 + (y1 - y0) * factors[:, 4],
        PAIR_LAYOUT["radius"] * factors[:, 1],
        factors[:, 2],
    )
    masks[i, y, x] = True
    return masks


def render_sprites(factors) -> torch.Tensor:
    """Render sprites ``(n, 1, 64, 64)`` float32 in {0, 1} from factor rows ``(n, 5)``, or
    two-object scenes from ``(n, 2, 5)``.

    One object: a sprite of scale s has radius ``11 s`` pixels; position p in [0, 1] puts its
    centre at pixel ``12 + 39 p``, so every sprite stays inside the image. Two objects: each
    is placed by :data:`PAIR_LAYOUT` (A left, B right, radius ``7 s``); the image is their
    union (:func:`make_sprites` draws only scenes where they do not touch).
    """
    f = np.asarray(factors, dtype=np.float64)
    if f.ndim == 3 and f.shape[1:] == (2, 5):
        union = _object_masks(f[:, 0], 0) | _object_masks(f[:, 1], 1)
        return torch.from_numpy(union.astype(np.float32)[:, None])
    if f.ndim != 2 or f.shape[1] != 5:
        raise ValueError(
            f"factors must have shape (n, 5) (one object) or (n, 2, 5) (two "
            f"objects) with columns {SPRITE_FACTORS}, got shape {tuple(f.shape)}"
        )
    span = SIZE - 1 - 2 * _SPRITE_MARGIN
    kind = _shape_index(f)
    images = np.zeros((len(f), SIZE, SIZE), dtype=np.float32)
    i, y, x = _rasterise(
        _SPRITE_FUNCS,
        kind,
        _SPRITE_MARGIN + span * f[:, 3],
        _SPRITE_MARGIN + span * f[:, 4],
        _SPRITE_RADIUS * f[:, 1],
        f[:, 2],
    )
    images[i, y, x] = 1.0
    return torch.from_numpy(images[:, None])


def sprite_factor_names(objects: int = 1) -> tuple[str, ...]:
    """Names of the factor columns once flattened: :data:`SPRITE_FACTORS` for one object,
    ``("A.shape", ..., "A.pos_y", "B.shape", ..., "B.pos_y")`` for two."""
    _check_objects(objects)
    if objects == 1:
        return SPRITE_FACTORS
    return tuple(f"{o}.{name}" for o in SPRITE_OBJECTS for name in SPRITE_FACTORS)


def _check_objects(objects: int) -> None:
    if (
        isinstance(objects, bool)
        or not isinstance(objects, (int, np.integer))
        or objects not in (1, 2)
    ):
        raise ValueError(
            f"objects must be 1 (dSprites) or 2 (two-object scenes, object A "
            f"left and B right), got {objects!r}"
        )


def _grid_rows(index: np.ndarray) -> np.ndarray:
    """Factor values ``(..., 5)`` float32 of grid indices ``(..., 5)``."""
    return np.stack(
        [SPRITE_GRID[name][index[..., k]] for k, name in enumerate(SPRITE_FACTORS)], -1
    ).astype(np.float32)


def _make_pairs(n: int, seed: int) -> Sprites:
    """Two-object scenes: each object's factors drawn independently and uniformly from the
    dSprites grid, the pair redrawn (both objects) until the objects are at least
    ``_PAIR_GAP`` pixels apart."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 13]))
    sizes = np.array([len(SPRITE_GRID[name]) for name in SPRITE_FACTORS])
    factors = np.zeros((n, 2, 5), dtype=np.float32)
    masks = np.zeros((n, 2, SIZE, SIZE), dtype=bool)
    todo = np.arange(n)
    grow = np.ones((1, 2 * _PAIR_GAP + 1, 2 * _PAIR_GAP + 1), dtype=bool)
    while len(todo):
        rows = _grid_rows(rng.integers(0, sizes, size=(len(todo), 2, 5)))
        a, b = _object_masks(rows[:, 0], 0), _object_masks(rows[:, 1], 1)
        touch = (ndimage.binary_dilation(a, grow) & b).any((1, 2))
        keep = ~touch
        factors[todo[keep]] = rows[keep]
        masks[todo[keep], 0], masks[todo[keep], 1] = a[keep], b[keep]
        todo = todo[touch]
    images = (masks[:, 0] | masks[:, 1]).astype(np.float32)[:, None]
    return Sprites(
        images=torch.from_numpy(images),
        factors=torch.from_numpy(factors),
        seed=int(seed),
        masks=torch.from_numpy(masks),
    )


def make_sprites(n: int, seed: int = 0, objects: int = 1) -> Sprites:
    """Draw ``n`` sprites: dSprites images (``objects=1``) or two-object scenes (``objects=2``).

    ``objects=1``: ``n`` distinct factor rows drawn uniformly from the dSprites grid
    (:func:`sprite_factor_grid`), one sprite per image.

    ``objects=2``: two sprites per image, told apart by *where* they are, which the encoder
    sees: object A's centre lies in the left part of the image, B's in the right part
    (:data:`PAIR_LAYOUT`; radius ``7 s``, centres 7-29 px and 35-57 px across, 7-57 px down).
    Each object's five factors are drawn independently and uniformly from the dSprites grid;
    a scene whose two objects would overlap or touch is redrawn, so the masks are disjoint
    with at least one free pixel between them.

    Args:
        n: number of images (``objects=1``: 1 .. 737,280).
        seed: non-negative seed; the same arguments give the same tensors, bit for bit.
        objects: 1 or 2.

    Returns:
        :class:`Sprites` with ``images (n, 1, 64, 64)``, ``factors (n, 5)`` or ``(n, 2, 5)``,
        and ``masks (n, objects, 64, 64)``.
    """
    _check_n_seed(n, seed)
    _check_objects(objects)
    if objects == 2:
        return _make_pairs(int(n), int(seed))
    sizes = [len(SPRITE_GRID[name]) for name in SPRITE_FACTORS]
    total = int(np.prod(sizes))
    if n > total:
        raise ValueError(f"n must be at most {total} (the size of the grid), got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    flat = rng.choice(total, size=n, replace=False)
    index = np.stack(np.unravel_index(flat, sizes), 1)
    factors = np.stack(
        [SPRITE_GRID[name][index[:, k]] for k, name in enumerate(SPRITE_FACTORS)], 1
    ).astype(np.float32)
    images = render_sprites(factors)
    return Sprites(
        images=images, factors=torch.from_numpy(factors), seed=int(seed), masks=images > 0
    )


# --------------------------------------------------------------------------------------------
# Anomalies: what the sprites VAE never saw, with a known mask (chapter 07)
# --------------------------------------------------------------------------------------------

ANOMALIES: tuple[str, ...] = ("blob", "scratch")
_ANOMALY_GAP = 3  # pixels kept free between an anomaly and the sprite


def add_anomalies(
    images: torch.Tensor, seed: int = 0, kind: str = "blob"
) -> tuple[torch.Tensor, torch.Tensor]:
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
