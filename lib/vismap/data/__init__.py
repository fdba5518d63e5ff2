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
its centre. Sprites are binary: a pixel belongs to a sprite when its centre is inside. Shapes
are anti-aliased: a pixel shows the fraction of its area the shape covers (4x4 supersampling),
blended over the background; an object's mask is its pixels of coverage >= 0.5 and its box the
mask's tight bound.
"""

from ._geometry import SIZE, boxes_from_masks
from .shapes import SHAPE_CLASSES, Shapes, make_shapes
from .sprites import (
    ANOMALIES,
    PAIR_LAYOUT,
    SPRITE_FACTORS,
    SPRITE_GRID,
    SPRITE_OBJECTS,
    SPRITE_SHAPES,
    Sprites,
    add_anomalies,
    make_sprites,
    render_sprites,
    sprite_factor_grid,
    sprite_factor_names,
)

TRAIN_SEED = 1  # seed of the classifiers' training images
HELDOUT_SEED = 20_191_018  # seed of the held-out images; never used for training

__all__ = [
    "SHAPE_CLASSES",
    "SPRITE_SHAPES",
    "SPRITE_FACTORS",
    "SPRITE_GRID",
    "SPRITE_OBJECTS",
    "PAIR_LAYOUT",
    "sprite_factor_names",
    "Shapes",
    "Sprites",
    "make_shapes",
    "make_sprites",
    "sprite_factor_grid",
    "render_sprites",
    "boxes_from_masks",
    "ANOMALIES",
    "add_anomalies",
    "SIZE",
    "TRAIN_SEED",
    "HELDOUT_SEED",
]
