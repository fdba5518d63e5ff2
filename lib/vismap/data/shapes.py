"""*Shapes*: the course's "ImageNet in miniature", with ground truth (see :func:`make_shapes`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._geometry import SIZE, _SHAPE_FUNCS, _check_n_seed, _rasterise, boxes_from_masks

__all__ = ["SHAPE_CLASSES", "Shapes", "make_shapes"]

_ROTATION = np.pi  # objects turn by up to this angle either way
_CHUNK = 256  # images per vectorised step of make_shapes (fixed: it is part of the seed)
SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "heart")

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


