"""vismap.data: determinism, anti-aliased coverage, exact masks and boxes, rare max-pool ties,
two-object scenes, the sprites grid."""

import numpy as np
import pytest
import torch

import vismap.data as D
import vismap.models as vm_models
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


@pytest.mark.slow
def test_small_batches_of_every_size():
    for n in range(1, 9):
        for seed in range(12):
            for objects in (1, 2):
                d = D.make_shapes(n, seed=seed, objects=objects)
                assert d.images.shape == (n, 3, 64, 64) and (d.masks.sum((2, 3)) > 0).all()


def test_masks_cover_the_object_and_its_colour(shapes):
    # Inside the mask (one pixel in from its edge) every pixel is the object's colour up to its
    # shading (at most 20 %) and noise (+-0.025); the pixels just outside the mask are not all
    # of that colour, so the mask is neither much too small nor too big.
    inner = -torch.nn.functional.max_pool2d(-shapes.masks.float(), 3, 1, 1) > 0.5  # eroded
    outer = torch.nn.functional.max_pool2d(shapes.masks.float(), 5, 1, 2) > 0.5  # dilated
    for k in range(20):
        pixels = shapes.images[k][:, inner[k, 0]]  # (3, m)
        assert pixels.shape[1] > 50
        top = pixels.amax(1, keepdim=True)
        assert ((pixels >= 0.8 * top - 0.06) & (pixels <= top)).all()
        ring = shapes.images[k][:, outer[k, 0] & ~shapes.masks[k, 0]]
        colour = pixels.median(1, keepdim=True).values
        assert ((ring - colour).abs().amax(0) > 0.1).float().mean() > 0.3


def _coverage_and_reference(kinds, cx, cy, radius, angle, scale=8):
    """Coverage by _coverage (4x4 samples) and by the pixel-centre rasteriser on a grid
    ``scale`` times finer, averaged back over each pixel (an independent estimate)."""
    n = len(kinds)
    cov = np.zeros((n, 64, 64), dtype=np.float32)
    i, y, x, a = _geometry._coverage(_geometry._SHAPE_FUNCS, kinds, cx, cy, radius, angle)
    cov[i, y, x] = a
    fine = np.zeros((n, 64 * scale, 64 * scale), dtype=bool)
    # Fine pixel K is centred on coarse coordinate (K + 1/2) / scale - 1/2.
    i, y, x = _geometry._rasterise(
        _geometry._SHAPE_FUNCS,
        kinds,
        scale * (cx + 0.5) - 0.5,
        scale * (cy + 0.5) - 0.5,
        scale * radius,
        angle,
        size=64 * scale,
    )
    fine[i, y, x] = True
    return cov, fine.reshape(n, 64, scale, 64, scale).mean((2, 4))


@pytest.mark.slow
@pytest.mark.parametrize("lo, hi", [(9.0, 18.0), (2.0, 4.5)])
def test_coverage_matches_a_fine_rasterisation(lo, hi):
    rng = np.random.default_rng(0)
    n = 120
    kinds = np.arange(n) % len(_geometry._SHAPE_FUNCS)
    cx, cy = rng.uniform(20, 44, n), rng.uniform(20, 44, n)
    cov, ref = _coverage_and_reference(
        kinds, cx, cy, rng.uniform(lo, hi, n), rng.uniform(0, 2 * np.pi, n)
    )
    edge = (ref > 0) & (ref < 1)
    assert np.abs(cov - ref).max() <= 0.25
    assert np.abs(cov - ref)[edge].mean() < 0.04
    # Edges are soft: many pixels are partly covered, and a mask (coverage >= 0.5) agrees with
    # the fine one wherever the fine coverage is not within a quantisation step of 1/2.
    assert ((cov > 0) & (cov < 1)).sum() > 0.1 * (cov > 0).sum()
    sure = np.abs(ref - 0.5) > 0.15
    assert np.array_equal((cov >= 0.5)[sure], (ref >= 0.5)[sure])
    # Sub-pixel positions: a quarter-pixel shift changes the coverage.
    moved, _ = _coverage_and_reference(kinds, cx + 0.25, cy, np.full(n, hi), np.zeros(n))
    still, _ = _coverage_and_reference(kinds, cx, cy, np.full(n, hi), np.zeros(n))
    assert (np.abs(moved - still).reshape(n, -1).max(1) > 0.1).all()


def test_masks_are_coverage_at_least_one_half(monkeypatch):
    # Record the coverage make_shapes computes for every shape it paints; the objects are
    # painted last, and each mask must be exactly their pixels of coverage >= 0.5.
    from vismap.data import shapes as shapes_module

    calls = []

    def recording(*args, **kwargs):
        out = _geometry._coverage(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(shapes_module, "_coverage", recording)
    for objects in (1, 2):
        calls.clear()
        data = D.make_shapes(64, seed=8, objects=objects)
        for j, (i, y, x, a) in enumerate(calls[-objects:]):
            cov = torch.zeros(64, 64, 64)
            cov[torch.from_numpy(i), torch.from_numpy(y), torch.from_numpy(x)] = torch.from_numpy(a)
            assert torch.equal(data.masks[:, j], cov >= 0.5)
            fractional = (cov > 0) & (cov < 1)
            assert fractional.sum() > 0.1 * (cov > 0).sum()  # anti-aliased edges


def test_max_pool_ties_are_rare():
    # Exact ties inside a 2x2 max-pool window make the input gradient of a max-pool network
    # ill-defined (notebook 02). On flat one-colour objects about a fifth of the windows of a
    # first conv layer tied; the anti-aliased, shaded, noisy objects must almost never tie.
    torch.manual_seed(0)
    first = vm_models.shapes_cnn().features[:2].eval()  # first conv + ReLU, random weights
    data = D.make_shapes(100, seed=9)
    with torch.no_grad():
        act = first(data.images)
    top2 = act.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2).topk(2, dim=-1).values
    tied = (top2[..., 0] == top2[..., 1]) & (top2[..., 0] > 0)  # (n, C, 32, 32)
    on_object = data.masks[:, 0].unfold(1, 2, 2).unfold(2, 2, 2).flatten(-2).all(-1)
    on_object = on_object[:, None].expand_as(tied)
    assert on_object.sum() > 10_000
    assert tied[on_object].float().mean() < 0.002
    assert tied.float().mean() < 0.002


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


@pytest.mark.slow
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
    small, big = D.render_sprites(np.array([[1, 0.5, 0, 0.5, 0.5], [1, 1.0, 0, 0.5, 0.5]]))
    assert 3.5 < big.sum() / small.sum() < 4.5  # area grows with the scale squared


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n=0), "positive integer"),
        (dict(n=-3), "positive integer"),
        (dict(n=2.5), "positive integer"),
        (dict(n=4, objects=3), "objects must be 1 or 2"),
        (dict(n=4, objects=0), "objects must be 1 or 2"),
        (dict(n=4, seed=-1), "non-negative"),
        (dict(n=4, seed=1.5), "non-negative"),
    ],
)
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
