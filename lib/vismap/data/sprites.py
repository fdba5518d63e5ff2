"""*Sprites*: the dSprites grid rebuilt, with the true factors; and anomalies (chapter 07)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import torch
from scipy import ndimage

from ._geometry import (SIZE, _check_n_seed, _dsprites_heart, _ellipse, _rasterise,
                        _square)

__all__ = ["SPRITE_SHAPES", "SPRITE_FACTORS", "SPRITE_GRID", "Sprites", "make_sprites",
           "sprite_factor_grid", "render_sprites", "ANOMALIES", "add_anomalies"]

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
