"""vismap.data: determinism, exact masks and boxes, two-object scenes, the sprites grid."""

import numpy as np
import pytest
import torch

import vismap.data as D
from vismap.data import _geometry, sprites


@pytest.fixture(scope="module")
def shapes():
    return D.make_shapes(300, seed=3)


@pytest.fixture(scope="module")
def pairs():
    return D.make_shapes(300, seed=4, objects=2)


def test_shapes_contract(shapes):
    assert shapes.images.shape == (300, 3, 64, 64) and shapes.images.dtype == torch.float32
    assert shapes.images.min() >= 0 and shapes.images.max() <= 1
    assert shapes.labels.shape == (300,) and shapes.labels.dtype == torch.int64
    assert shapes.masks.shape == (300, 1, 64, 64) and shapes.masks.dtype == torch.bool
    assert shapes.boxes.shape == (300, 1, 4)
    assert len(D.SHAPE_CLASSES) >= 5
    assert set(shapes.labels.tolist()) == set(range(len(D.SHAPE_CLASSES)))
    assert shapes.class_names[0] == D.SHAPE_CLASSES[shapes.labels[0]]


def test_same_seed_same_bits_other_seed_other_images():
    a, b = D.make_shapes(40, seed=11), D.make_shapes(40, seed=11)
    for field in ("images", "labels", "masks", "boxes"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    c = D.make_shapes(40, seed=12)
    assert not torch.equal(a.images, c.images)
    s1, s2 = D.make_sprites(50, seed=5), D.make_sprites(50, seed=5)
    assert torch.equal(s1.images, s2.images) and torch.equal(s1.factors, s2.factors)
    assert not torch.equal(s1.factors, D.make_sprites(50, seed=6).factors)


def test_small_batches_of_every_size():
    for n in range(1, 9):
        for seed in range(12):
            for objects in (1, 2):
                d = D.make_shapes(n, seed=seed, objects=objects)
                assert d.images.shape == (n, 3, 64, 64) and (d.masks.sum((2, 3)) > 0).all()


def test_masks_are_exactly_the_painted_pixels(shapes):
    # Every object pixel has the object's single colour; the pixels just outside the mask do
    # not all have it (the background is noisy), so the mask is neither too small nor too big.
    for k in range(20):
        mask = shapes.masks[k, 0]
        pixels = shapes.images[k][:, mask]  # (3, m)
        assert mask.sum() > 50
        assert torch.allclose(pixels, pixels[:, :1].expand_as(pixels))
        colour = pixels[:, 0, None, None]
        same = (shapes.images[k] == colour).all(0)
        assert torch.equal(same & mask, mask)
        assert (same & ~mask).sum() < 5  # a background pixel of the same colour is a rare fluke


def test_boxes_are_tight_bounds_of_masks(shapes, pairs):
    for data in (shapes, pairs):
        for k in range(30):
            for j in range(data.masks.shape[1]):
                ys, xs = torch.nonzero(data.masks[k, j], as_tuple=True)
                expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert data.boxes[k, j].tolist() == [int(v) for v in expected]


def test_boxes_from_masks_hand_made():
    mask = torch.zeros(1, 5, 6, dtype=torch.bool)
    mask[0, 1:3, 2:5] = True
    assert D.boxes_from_masks(mask).tolist() == [[2, 1, 5, 3]]
    assert D.boxes_from_masks(torch.zeros(2, 4, 4, dtype=torch.bool)).tolist() == [[0] * 4] * 2


def test_objects_fit_inside_their_radius_and_the_image():
    # The implicit shapes stay inside the unit disk: sample them densely.
    u, v = np.meshgrid(np.linspace(-1.5, 1.5, 601), np.linspace(-1.5, 1.5, 601))
    for fn in _geometry._SHAPE_FUNCS + sprites._SPRITE_FUNCS:
        inside = fn(u, v)
        assert inside.any() and np.hypot(u, v)[inside].max() <= 1.0, fn.__name__


def test_two_object_scenes(pairs):
    assert pairs.labels.shape == (300, 2) and pairs.masks.shape == (300, 2, 64, 64)
    assert (pairs.labels[:, 0] != pairs.labels[:, 1]).all()
    assert not (pairs.masks[:, 0] & pairs.masks[:, 1]).any()
    assert (pairs.masks.sum((2, 3)) > 30).all()
    assert len(pairs.class_names[0]) == 2


def test_sprites_grid():
    grid = D.sprite_factor_grid()
    assert grid.shape == (3 * 6 * 40 * 32 * 32, 5) == (737_280, 5)
    g = D.SPRITE_GRID
    assert len(g["shape"]) == 3 and len(g["scale"]) == 6 and len(g["orientation"]) == 40
    assert len(g["pos_x"]) == len(g["pos_y"]) == 32
    assert g["scale"].min() == pytest.approx(0.5) and g["scale"].max() == pytest.approx(1.0)
    assert g["orientation"].min() == 0 and g["orientation"].max() < 2 * np.pi
    assert np.allclose(np.diff(g["orientation"]), 2 * np.pi / 40)
    assert len(np.unique(grid, axis=0)) == len(grid)


def test_make_sprites_contract():
    s = D.make_sprites(500, seed=0)
    assert s.images.shape == (500, 1, 64, 64) and s.factors.shape == (500, 5)
    assert set(torch.unique(s.images).tolist()) == {0.0, 1.0}
    f = s.factors.numpy()
    for col, name in enumerate(D.SPRITE_FACTORS):
        assert np.isin(f[:, col], D.SPRITE_GRID[name]).all(), name
    assert len(np.unique(f, axis=0)) == 500  # drawn without replacement
    assert (s.images.sum((1, 2, 3)) > 10).all()
    # Every sprite is drawn whole: no pixel on the image border.
    border = s.images[..., [0, -1], :].sum() + s.images[..., :, [0, -1]].sum()
    assert border == 0


def test_sprite_factors_move_the_sprite():
    base = np.array([[0, 1.0, 0.0, 0.0, 0.5], [0, 1.0, 0.0, 1.0, 0.5]], dtype=np.float32)
    img = D.render_sprites(base)[:, 0]
    cols = [torch.nonzero(i)[:, 1].float().mean() for i in img]
    assert cols[1] - cols[0] > 30  # pos_x 0 -> 1 moves the sprite right by ~39 px
    small, big = D.render_sprites(np.array([[1, 0.5, 0, .5, .5], [1, 1.0, 0, .5, .5]]))
    assert 3.5 < big.sum() / small.sum() < 4.5  # area grows with the scale squared


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=0), "positive integer"),
    (dict(n=-3), "positive integer"),
    (dict(n=2.5), "positive integer"),
    (dict(n=4, objects=3), "objects must be 1 or 2"),
    (dict(n=4, objects=0), "objects must be 1 or 2"),
    (dict(n=4, seed=-1), "non-negative"),
    (dict(n=4, seed=1.5), "non-negative"),
])
def test_make_shapes_bad_input(kwargs, words):
    with pytest.raises(ValueError, match=words):
        D.make_shapes(**kwargs)


def test_sprites_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        D.make_sprites(0)
    with pytest.raises(ValueError, match="non-negative"):
        D.make_sprites(5, seed=-2)
    with pytest.raises(ValueError, match="at most 737280"):
        D.make_sprites(737_281)
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        D.render_sprites(np.zeros((3, 4)))
