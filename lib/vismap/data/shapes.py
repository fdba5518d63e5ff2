"""*Shapes*: the course's "ImageNet in miniature", with ground truth (see :func:`make_shapes`).

Shapes are rendered anti-aliased, like a photo of a smooth outline taken with square pixels:
each pixel shows the fraction of its area that the shape covers (its *coverage*, estimated on a
4x4 sub-pixel grid, :func:`~vismap.data._geometry._coverage`), blended over what lies beneath,
and shape centres are real numbers, so a shape can sit anywhere between pixels. Objects and
distractors carry a gentle linear shading and a little per-pixel noise, so neighbouring pixels
are never exactly equal and max-pooling almost never meets a tie. The ground truth is exact on
that rendering: an object's mask is the set of pixels it covers by at least half (coverage
>= 0.5), and its box is the tight bound of its mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._geometry import _SHAPE_FUNCS, SIZE, _check_n_seed, _coverage, boxes_from_masks

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
        masks: ``(n, objects, 64, 64)`` bool, the pixels each object covers by at least half
            (anti-aliased coverage >= 0.5).
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


# Both bilinear upsamplings side by side: X M X^T with M = diag(coarse 8x8, fine 16x16) is
# A8 coarse A8^T + A16 fine A16^T.
_UP = np.concatenate([_upsample_matrix(8), _upsample_matrix(16)], axis=1)  # (64, 24)


def _background(rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill ``out (n, 3, 64, 64)`` with textured, noisy, dark-to-mid backgrounds: a base colour,
    smooth colour blotches (8x8 and 16x16 normal noise upsampled bilinearly), grey stripes of
    random direction and frequency (a texture the model must learn to ignore) and grey pixel
    noise. Blotches, base and stripes are one batched product ``L @ R`` (each is low rank), so
    the full-size array is written once and the noise added once."""
    n = out.shape[0]
    base = rng.uniform(0.05, 0.45, size=(n, 3, 1, 1)).astype(np.float32)
    blotches = np.zeros((n, 3, 24, 24), dtype=np.float32)
    blotches[..., :8, :8] = rng.normal(0.0, 0.10, size=(n, 3, 8, 8))
    blotches[..., 8:, 8:] = rng.normal(0.0, 0.06, size=(n, 3, 16, 16))
    blotches[..., :8, :8] += base  # rows of an upsampling matrix sum to 1: this adds the base
    # Stripes amp * sin(a x + b y) = amp * (sin(b y) cos(a x) + cos(b y) sin(a x)), rank 2.
    theta = rng.uniform(0, np.pi, size=(n, 1)).astype(np.float32)
    freq = rng.uniform(0.3, 1.2, size=(n, 1)).astype(np.float32)
    amp = rng.uniform(0.0, 0.08, size=(n, 1)).astype(np.float32)
    grid = np.arange(SIZE, dtype=np.float32)
    a, b = freq * np.cos(theta) * grid, freq * np.sin(theta) * grid  # (n, 64) each
    left = np.empty((n, 1, SIZE, 26), dtype=np.float32)
    left[..., :24] = _UP
    left[:, 0, :, 24], left[:, 0, :, 25] = amp * np.sin(b), amp * np.cos(b)
    right = np.empty((n, 3, 26, SIZE), dtype=np.float32)
    np.matmul(blotches, _UP.T, out=right[:, :, :24])
    right[:, :, 24], right[:, :, 25] = np.cos(a)[:, None], np.sin(a)[:, None]
    np.matmul(left, right, out=out)
    noise = rng.random(size=(n, 1, SIZE, SIZE), dtype=np.float32)  # uniform: faster than normal
    noise -= np.float32(0.5)
    noise *= np.float32(0.14)  # standard deviation 0.14 / sqrt(12) = 0.04
    out += noise


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


def _paint(
    rng: np.random.Generator,
    img: np.ndarray,
    at: np.ndarray,
    kinds: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    angle: np.ndarray,
    colour: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Composite anti-aliased, shaded shapes over the images ``img (n, 3, 64, 64)``, in place:
    shape ``k`` (its kind, centre, radius, angle and RGB colour) goes into image ``at[k]``.

    A pixel of coverage ``a`` (:func:`~vismap.data._geometry._coverage`) becomes
    ``(1 - a) background + a (colour * shade + noise)``: the shade falls linearly by 0-20 %
    across the shape in a random direction (light from one side) and the noise is grey, per
    pixel, uniform in +-0.025 (standard deviation 0.014), so that neighbouring pixels of a
    shape are never exactly equal (no tied maxima for max-pooling). Returns
    ``(image, row, column, coverage)`` of every pixel painted.
    """
    m = len(kinds)
    light = rng.uniform(0, 2 * np.pi, size=m)
    fall = rng.uniform(0.0, 0.2, size=m)
    k, y, x, a = _coverage(_SHAPE_FUNCS, kinds, cx, cy, radius, angle)
    # shade = 1 - fall (1 + along) / 2, along = <light direction, (p - c) / r> in [-1, 1].
    lx, ly = np.cos(light) / radius, np.sin(light) / radius
    along = (x - cx[k]) * lx[k] + (y - cy[k]) * ly[k]
    shade = (1.0 - 0.5 * fall[k] * (1.0 + np.clip(along, -1.0, 1.0))).astype(np.float32)
    noise = (rng.random(len(k), dtype=np.float32) - np.float32(0.5)) * np.float32(0.05)
    paint = colour[k] * shade[:, None] + noise[:, None]  # (p, 3)
    i = at[k]
    flat, where = img.reshape(-1), (i * 3 * SIZE + y) * SIZE + x  # channel 0 of each pixel
    for c in range(3):  # plain 1-D gathers and scatters: faster than img[i, :, y, x]
        old = flat[where + c * SIZE * SIZE]
        flat[where + c * SIZE * SIZE] = old + a * (paint[:, c] - old)
    return i, y, x, a


def _make_shapes_chunk(rng: np.random.Generator, img: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Draw ``len(img)`` scenes into ``img (n, 3, 64, 64)`` and ``masks (n, objects, 64, 64)``
    (both written in place); return the labels ``(n, objects)``."""
    n, objects = masks.shape[:2]
    _background(rng, img)
    classes = len(SHAPE_CLASSES)
    # Where the objects go (painted last, on top). Centres are real numbers: sub-pixel positions.
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
        r = rng.uniform(2.0, 4.5, size=(n,))
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
        _paint(rng, img, present, kind, xy[present, 0], xy[present, 1], r[present], angle, colour)
    everyone = np.arange(n)
    for j in range(objects):
        angle = rng.uniform(-_ROTATION, _ROTATION, size=(n,))
        colour = _bright_colours(rng, n)
        i, y, x, a = _paint(
            rng,
            img,
            everyone,
            labels[:, j],
            centres[:, j, 0],
            centres[:, j, 1],
            radius[:, j],
            angle,
            colour,
        )
        masks[i, j, y, x] = a >= 0.5
    np.clip(img, 0.0, 1.0, out=img)
    return labels


def make_shapes(n: int, seed: int = 0, objects: int = 1) -> Shapes:
    """Make ``n`` Shapes scenes: the course's "ImageNet in miniature", with ground truth.

    Each 64x64 RGB image shows ``objects`` shape(s) of :data:`SHAPE_CLASSES` (radius 11-18 px
    alone, 9-13 px in pairs; random position, rotation and bright colour) over a textured
    background (smooth colour blotches, stripes, pixel noise) with one to four small distractor
    shapes (radius 2-4.5 px, kept 2 px clear of the objects) of any class, so that a model has to
    find the big shape. Edges are anti-aliased (pixel value = coverage-weighted blend), centres
    are sub-pixel, and shapes are lightly shaded and noisy (see the module's docstring); the
    mask of an object is its pixels of coverage >= 0.5 and the box the mask's tight bound.
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
    for start, child in zip(range(0, n, _CHUNK), seeds, strict=True):
        part = slice(start, start + _CHUNK)
        labels[part] = _make_shapes_chunk(np.random.default_rng(child), images[part], masks[part])
    masks_t = torch.from_numpy(masks)
    return Shapes(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels[:, 0] if objects == 1 else labels),
        masks=masks_t,
        boxes=boxes_from_masks(masks_t),
        seed=int(seed),
    )
