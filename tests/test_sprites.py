"""vismap.data sprites: one object bit for bit as before, two-object scenes (chapter 07)."""

import hashlib

import numpy as np
import pytest
import torch

import vismap as vm
from vismap.data import sprites as S

# sha256 of images + factors of make_sprites(n, seed), taken before two-object scenes existed.
BEFORE = {
    (1000, 0): "3ba991c3d5465cb4efb24d0855d047c0498819f0f4df36aa91f998a5eb822a02",
    (257, 3): "1e3ff59df179a45e5800149e812e513dd2212ee88013445d06f8e25bdaebc7cf",
    (64, 20191018): "d3b2d8fea69b09f29e627fcc08fbe3c89f3d84e64d9dcd42a416e9d08d9cd811",
}


def _digest(s) -> str:
    return hashlib.sha256(s.images.numpy().tobytes() + s.factors.numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def pairs():
    return vm.data.make_sprites(600, seed=4, objects=2)


@pytest.mark.parametrize("n, seed", list(BEFORE))
def test_one_object_is_unchanged_bit_for_bit(n, seed):
    s = vm.data.make_sprites(n, seed)
    assert _digest(s) == BEFORE[n, seed]
    assert _digest(vm.data.make_sprites(n, seed, objects=1)) == BEFORE[n, seed]
    assert s.masks.shape == (n, 1, 64, 64) and torch.equal(s.masks, s.images > 0)


def test_two_object_contract(pairs):
    n = len(pairs)
    assert pairs.images.shape == (n, 1, 64, 64) and pairs.images.dtype == torch.float32
    assert pairs.factors.shape == (n, 2, 5) and pairs.masks.shape == (n, 2, 64, 64)
    assert pairs.masks.dtype == torch.bool
    assert set(pairs.images.unique().tolist()) == {0.0, 1.0}
    # The image is exactly the union of the two objects, and every object is drawn.
    assert torch.equal((pairs.masks[:, 0] | pairs.masks[:, 1]).float(), pairs.images[:, 0])
    assert pairs.masks.flatten(2).any(2).all()
    # Every factor takes values of the dSprites grid.
    for k, name in enumerate(S.SPRITE_FACTORS):
        assert np.isin(pairs.factors[..., k].numpy(), S.SPRITE_GRID[name]).all(), name


def test_two_objects_never_overlap_nor_touch(pairs):
    a, b = pairs.masks[:, 0], pairs.masks[:, 1]
    assert not (a & b).any()
    grown = torch.nn.functional.max_pool2d(a[:, None].float(), 3, 1, 1)[:, 0] > 0
    assert not (grown & b).any(), "the objects touch: no free pixel between them"


def test_two_objects_are_told_apart_by_side(pairs):
    cols = torch.arange(64).float()
    centre = [
        (pairs.masks[:, k].any(1).float() * cols).sum(1) / pairs.masks[:, k].any(1).sum(1)
        for k in range(2)
    ]
    assert (centre[0] < 32).all() and (centre[1] > 32).all()
    # Object A's position factor moves object A, and only A.
    f = pairs.factors[:2].clone()
    f[:, 0, 3] = 0.0
    left = S.render_sprites(f)
    f[:, 0, 3] = 1.0
    right = S.render_sprites(f)
    for img_l, img_r in zip(left[:, 0], right[:, 0], strict=True):
        moved = (img_l != img_r).any(0).nonzero()
        assert moved.max() < 40  # only columns of the left object change


def test_two_object_render_matches_and_covers_ranges(pairs):
    assert torch.equal(S.render_sprites(pairs.factors), pairs.images)
    # Positions cover their ranges: both ends of x and y are drawn for both objects.
    for k in (3, 4):
        assert pairs.factors[:, :, k].min() == 0.0 and pairs.factors[:, :, k].max() == 1.0


def test_two_object_determinism():
    a, b = vm.data.make_sprites(40, seed=9, objects=2), vm.data.make_sprites(40, seed=9, objects=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    c = vm.data.make_sprites(40, seed=10, objects=2)
    assert not torch.equal(a.factors, c.factors)
    assert torch.equal(a.masks, b.masks)


def test_factor_names():
    assert S.sprite_factor_names(1) == S.SPRITE_FACTORS
    names = S.sprite_factor_names(2)
    assert len(names) == 10 and names[3] == "A.pos_x" and names[9] == "B.pos_y"


@pytest.mark.parametrize("objects", [0, 3, 1.0, True, "2", None])
def test_bad_objects(objects):
    with pytest.raises(ValueError, match=r"objects must be 1 .* or 2 .*got"):
        vm.data.make_sprites(5, seed=0, objects=objects)


@pytest.mark.parametrize(
    "n, seed, match",
    [
        (0, 0, "n must be a positive integer"),
        (2.5, 0, "n must be a positive integer"),
        (4, -1, "seed must be a non-negative integer"),
        (4, "a", "seed must be a non-negative integer"),
    ],
)
def test_bad_n_and_seed_for_two_objects(n, seed, match):
    with pytest.raises(ValueError, match=match):
        vm.data.make_sprites(n, seed=seed, objects=2)


def test_render_rejects_bad_factor_shapes():
    with pytest.raises(ValueError, match=r"\(n, 5\).*\(n, 2, 5\).*got shape \(3, 3, 5\)"):
        S.render_sprites(np.zeros((3, 3, 5)))
