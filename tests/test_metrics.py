"""vismap.metrics: relevance mass, deletion / insertion (RISE), the randomisation sanity check.

Every metric on hand-made cases whose answer is known; every bad input gives a ValueError that
says what is wrong; the pointing game and boxes; the tables of bad inputs of every metric."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import hook_count, raises_own
from scipy import stats
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap import metrics as M


class MeanModel(nn.Module):
    """Two classes with probabilities ``(m + e) / (1 + 2e)`` and ``(1 - m + e) / (1 + 2e)``,
    ``m`` the image's mean: class 0's probability is the share of the image that is still 1."""

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([torch.log(m + 1e-6), torch.log(1 - m + 1e-6)], 1)


class QuadrantModel(nn.Module):
    """Class 0's logit is a weighted sum of the top-left quadrant only; class 1's is 0."""

    def __init__(self, size=8):
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(
            torch.linspace(0.5, 1.5, (size // 2) ** 2 * 3).view(1, 3, size // 2, size // 2)
        )
        self.dropout = nn.Dropout(0.5)  # must be off while the metric runs

    def forward(self, x):
        h = self.size // 2
        score = self.dropout((self.weight * x[:, :, :h, :h]).sum((1, 2, 3)) - 3.0)
        return torch.stack([score, torch.zeros_like(score)], 1)


class LinearModel(nn.Module):
    """Class 0's logit is ``sum(w x) - b`` with positive weights ``w``; class 1's is 0."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), bias

    def forward(self, x):
        score = (self.weight * x).sum((1, 2, 3)) - self.bias
        return torch.stack([score, torch.zeros_like(score)], 1)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    ).eval()


# ------------------------------------------------------------------ relevance mass


def test_relevance_mass_by_hand():
    masks = torch.zeros(4, 6, 6, dtype=torch.bool)
    masks[:, 1:4, 1:4] = True  # 9 pixels of 36
    maps = torch.stack(
        [
            masks.float()[0],  # the mask itself: the maximum, 1
            (~masks).float()[0],  # the reversed map: the minimum, 0
            torch.ones(6, 6),  # uniform: the mask's area, 9 / 36
            -masks.float()[0],
        ]
    )  # no positive mass anywhere: 0, not NaN
    got = M.relevance_mass(maps[:, None], masks)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.25, 0.0]))
    # only the positive part counts: a negative value inside the mask does not add to it
    signed = masks.float()[0] * 2 - (~masks).float()[0]
    assert M.relevance_mass(signed[None], masks[:1]).item() == 1.0
    half = torch.zeros(6, 6)
    half[2, 2], half[5, 5] = 3.0, 1.0
    assert M.relevance_mass(half[None], masks[:1]).item() == pytest.approx(0.75)


def test_relevance_mass_keeps_float64():
    # a share is a sum over every pixel: in float32 two correct orders differ by ~1e-7, so a
    # float64 comparison (the exercise of chapter 08) needs a float64 share
    maps = torch.rand(2, 1, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, 10:30, 5:40] = True
    got = M.relevance_mass(maps, masks)
    assert got.dtype == torch.float64
    want = (maps[:, 0] * masks).sum((1, 2)) / maps[:, 0].sum((1, 2))
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    assert M.relevance_mass(maps.float(), masks).dtype == torch.float32


def test_relevance_mass_never_nan():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    got = M.relevance_mass(torch.zeros(3, 1, 4, 4), masks)
    assert got.tolist() == [0.0, 0.0, 0.0]
    got = M.relevance_mass(torch.full((1, 4, 4), 1e-30), masks[:1])
    assert torch.isfinite(got).all() and got.item() == pytest.approx(1.0)


def test_relevance_mass_bad_input():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"maps \(3, 5, 5\) and masks \(3, 4, 4\) differ"):
        M.relevance_mass(torch.rand(3, 5, 5), masks)
    with pytest.raises(ValueError, match=r"maps \(2, 4, 4\) and masks \(3, 4, 4\) differ"):
        M.relevance_mass(torch.rand(2, 4, 4), masks)
    masks[1] = False
    with pytest.raises(ValueError, match=r"masks of images \[1\] are empty"):
        M.relevance_mass(torch.rand(3, 4, 4), masks)
    with pytest.raises(ValueError, match=r"maps must have shape \(n, 1, H, W\)"):
        M.relevance_mass(torch.rand(3, 3, 4, 4), torch.ones(3, 4, 4, dtype=torch.bool))


def test_importance():
    maps = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert M.importance(maps).tolist() == [[[[3.0, 2.0]]]]  # max_c |M_c|, not the sum
    signed = torch.tensor([[[[1.0, -2.0]]]])
    assert M.importance(signed) is signed  # one channel: kept, sign included
    assert M.importance(signed[:, 0]).shape == (1, 1, 1, 2)


# ------------------------------------------------------------------ deletion and insertion


@pytest.mark.portable
def test_deletion_and_insertion_curves_by_hand():
    # p_0 = mean of the image; deleting k/4 of an all-ones image leaves mean 1 - k/4, and the
    # trapezoid rule integrates a straight line exactly: AUC = 1/2 for any map.
    x = torch.ones(2, 3, 8, 8)
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    line = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    p = (line + 1e-6) / (1 + 2e-6)
    curve = M.deletion_curve(MeanModel(), x, 0, maps, steps=4)
    torch.testing.assert_close(curve, p.expand(2, -1))
    torch.testing.assert_close(
        M.deletion_auc(MeanModel(), x, 0, maps, steps=4), torch.full((2,), 0.5)
    )
    curve = M.insertion_curve(MeanModel(), x, [0, 0], maps, steps=4, baseline=0.0)
    torch.testing.assert_close(curve, p.flip(0).expand(2, -1))
    torch.testing.assert_close(
        M.insertion_auc(MeanModel(), x, 0, maps, steps=4, baseline=0.0), torch.full((2,), 0.5)
    )
    # one step: the image, then the baseline
    torch.testing.assert_close(
        M.deletion_curve(MeanModel(), x, 0, maps, steps=1), p[[0, 4]].expand(2, -1)
    )


class ThreeScores(nn.Module):
    """Logits ``(m, 0.3 m, -m)`` of the image's mean ``m``."""

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m, 0.3 * m, -m], 1)


def test_deletion_follows_the_softmax_or_the_sigmoid_probability():
    # an all-ones image with k/4 of its pixels deleted to black has the mean m_k = 1 - k/4
    x = torch.ones(1, 3, 8, 8)
    maps = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    m = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    logits = torch.stack([m, 0.3 * m, -m], 1)
    softmax = M.deletion_curve(ThreeScores(), x, 0, maps, steps=4)[0]
    torch.testing.assert_close(softmax, logits.softmax(1)[:, 0])
    sigmoid = M.deletion_curve(ThreeScores(), x, 0, maps, steps=4, probability="sigmoid")[0]
    torch.testing.assert_close(sigmoid, torch.sigmoid(m))  # class 0's own yes/no probability
    assert (sigmoid - softmax).abs().max() > 0.1
    torch.testing.assert_close(
        M.insertion_auc(ThreeScores(), x, 0, maps, steps=4, baseline=0.0, probability="sigmoid"),
        torch.trapezoid(torch.sigmoid(m.flip(0)), dx=0.25)[None],
    )
    with pytest.raises(ValueError, match="unknown probability 'logit'; valid: softmax, sigmoid"):
        M.deletion_auc(ThreeScores(), x, 0, maps, probability="logit")


def test_deletion_of_an_irrelevant_region_changes_nothing():
    model = QuadrantModel().train()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) + 0.5
    outside = torch.ones(3, 1, 8, 8)
    outside[:, :, :4, :4] = 0.0  # the map ranks everything but the top-left quadrant first
    curve = M.deletion_curve(model, x, 0, outside, steps=8)  # 8 pixels a step, 48 outside
    flat = curve[:, :7]  # fractions 0 .. 6/8 = 48/64: only the outside has gone
    torch.testing.assert_close(flat, curve[:, :1].expand_as(flat), rtol=0, atol=0)
    assert (curve[:, -1] < curve[:, 0] - 0.5).all()  # then the quadrant goes, and the class
    inserted = M.insertion_curve(model, x, 0, outside, steps=8, baseline=0.0)
    torch.testing.assert_close(inserted[:, :7], inserted[:, :1].expand(3, 7), rtol=0, atol=0)
    # the quadrant first: the probability falls at once (by the first quarter)
    inside = 1 - outside
    first = M.deletion_curve(model, x, 0, inside, steps=8)
    assert (first[:, 2] < 0.1).all() and (curve[:, 2] > 0.9).all()


def test_true_order_beats_the_reversed_order():
    g = torch.Generator().manual_seed(2)
    w = torch.rand(1, 3, 8, 8, generator=g) + 0.1
    x = torch.rand(4, 3, 8, 8, generator=g)
    model = LinearModel(w, bias=(w * x).sum((1, 2, 3)).mean().item() / 2)
    truth = (w * x).sum(1, keepdim=True)  # each pixel's contribution to the score
    for steps in (4, 16):
        best = M.deletion_auc(model, x, 0, truth, steps=steps)
        worst = M.deletion_auc(model, x, 0, -truth, steps=steps)
        assert (best < worst - 0.1).all()
        best = M.insertion_auc(model, x, 0, truth, steps=steps, baseline=0.0)
        worst = M.insertion_auc(model, x, 0, -truth, steps=steps, baseline=0.0)
        assert (best > worst + 0.1).all()
    # a colour map is ordered by its magnitude max_c |M_c|: the same order as that one-channel map
    magnitude = (w * x).abs().amax(1, keepdim=True)
    torch.testing.assert_close(
        M.deletion_auc(model, x, 0, w * x, steps=8),
        M.deletion_auc(model, x, 0, magnitude, steps=8),
    )


def test_deletion_batches_baselines_and_model_left_alone():
    model = QuadrantModel().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    one = M.deletion_curve(model, x, [0, 1, 0], maps, steps=5, batch_size=1)
    big = M.deletion_curve(model, x, torch.tensor([0, 1, 0]), maps, steps=5, batch_size=256)
    torch.testing.assert_close(one, big)  # and dropout was off: the same numbers twice
    assert model.training and model.weight.requires_grad and model.weight.grad is None
    assert hook_count(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # baselines: "blur" is blur(x); a number is a constant image; a tensor broadcasts
    torch.testing.assert_close(
        M.insertion_curve(model, x, 0, maps, steps=4),
        M.insertion_curve(model, x, 0, maps, steps=4, baseline=M.blur(x)),
    )
    torch.testing.assert_close(
        M.deletion_curve(model, x, 0, maps, steps=4, baseline=0.5),
        M.deletion_curve(model, x, 0, maps, steps=4, baseline=torch.tensor(0.5)),
    )
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(M.blur(flat), flat)  # blurring a constant image changes nothing
    assert M.blur(x, sigma=1.0).shape == x.shape


@pytest.mark.portable
def test_blur_equals_torchvision_gaussian_blur():
    # a matrix on each side against torchvision's one 2-D kernel: the same sums in another
    # order, so compared in float64; a kernel cut to what the image allows included
    from torchvision.transforms.functional import gaussian_blur

    g = torch.Generator().manual_seed(2)
    for shape, sigma in [((2, 3, 64, 64), 2.0), ((1, 1, 9, 12), 1.0), ((2, 3, 4, 5), 2.0)]:
        x = torch.rand(shape, generator=g, dtype=torch.float64)
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(shape[-2:]) - 1)
        want = gaussian_blur(x, [size, size], [sigma, sigma])
        torch.testing.assert_close(M.blur(x, sigma), want, rtol=0, atol=1e-12)


def test_all_zero_maps_give_numbers_not_nan():
    model = QuadrantModel()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    zeros = torch.zeros(2, 1, 8, 8)
    for f in (M.deletion_auc, M.insertion_auc):
        assert torch.isfinite(f(model, x, 0, zeros, steps=4)).all()
    assert torch.isfinite(M.spearman(zeros, torch.rand(2, 1, 8, 8))).all()
    assert M.spearman(zeros, zeros).tolist() == [0.0, 0.0]
    assert torch.isfinite(M.ssim(zeros, zeros)).all()


def test_deletion_bad_input():
    model = QuadrantModel()
    x, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="steps must be an integer >= 1.*got 0"):
        M.deletion_auc(model, x, 0, maps, steps=0)
    with pytest.raises(ValueError, match="unknown baseline 'gauss'; valid: 'blur'"):
        M.insertion_auc(model, x, 0, maps, baseline="gauss")
    with pytest.raises(ValueError, match="target has 3 classes for a batch of 2 images"):
        M.deletion_auc(model, x, [0, 1, 0], maps)
    with pytest.raises(ValueError, match="out of range"):
        M.deletion_auc(model, x, 2, maps)
    with pytest.raises(
        ValueError,
        match=r"maps \(2, 1, 6, 6\) do not fit the images "
        r"\(2, 3, 8, 8\)",
    ):
        M.deletion_auc(model, x, 0, torch.rand(2, 1, 6, 6))
    with pytest.raises(ValueError, match=r"maps \(3, 1, 8, 8\) do not fit"):
        M.insertion_auc(model, x, 0, torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="not a callable target"):
        M.deletion_auc(model, x, lambda out: out[:, 0], maps)
    with pytest.raises(ValueError, match=r"broadcastable to x \(2, 3, 8, 8\)"):
        M.deletion_auc(model, x, 0, maps, baseline=torch.zeros(5, 8, 8))
    with pytest.raises(ValueError, match="sigma must be a positive"):
        M.blur(x, sigma=0)
    assert hook_count(model) == 0


# ------------------------------------------------------------------ sanity checks


@pytest.mark.portable
def test_ranks_equal_scipy_rankdata_with_ties():
    g = torch.Generator().manual_seed(3)
    for rows in (
        torch.randint(0, 4, (4, 50), generator=g).double(),  # many ties
        torch.rand(3, 200, generator=g, dtype=torch.float64),  # none
        torch.zeros(2, 7, dtype=torch.float64),
        torch.ones(1, 1, dtype=torch.float64),
    ):
        np.testing.assert_array_equal(M._ranks(rows).numpy(), stats.rankdata(rows.numpy(), axis=1))


@pytest.mark.portable
def test_spearman_and_ssim_against_references():
    g = torch.Generator().manual_seed(6)
    a = torch.randint(0, 4, (3, 1, 5, 5), generator=g).float()  # many ties
    b = torch.randint(0, 4, (3, 1, 5, 5), generator=g).float()
    want = [
        stats.spearmanr(p.flatten().numpy(), q.flatten().numpy()).statistic
        for p, q in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(M.spearman(a, b).numpy(), want, rtol=1e-5)
    assert M.spearman(a, 2 * a + 1).tolist() == pytest.approx([1.0] * 3)
    assert M.spearman(a, -a).tolist() == pytest.approx([-1.0] * 3)
    c = torch.rand(2, 16, 16, generator=g)
    assert M.ssim(c, c).tolist() == pytest.approx([1.0, 1.0])
    assert (M.ssim(c, 1 - c) < 0).all()
    with pytest.raises(ValueError, match="same shape"):
        M.spearman(a, b[:2])


def test_randomization_check_on_a_tiny_model():
    model = tiny_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    rng = torch.get_rng_state()
    result = M.randomization_check(model, x, 1, E.saliency, seed=3)
    assert result.layers == ["5", "2", "0"]  # the linear layer, then the convs, top down
    assert result.spearman.shape == result.ssim.shape == (3,)
    assert result.spearman_images.shape == (3, 6) and result.maps.shape == (4, 6, 8, 8)
    assert result.maps.min() >= 0 and result.maps.flatten(2).amax(2).eq(1).all()
    rho = result.spearman.tolist()
    assert rho[0] < 0.9 and rho[-1] < rho[0] and rho[-1] < 0.5, rho  # the gradient changes
    assert result.ssim[-1] < result.ssim[0]
    # the caller's model: bit-identical parameters, same mode and flags; random state untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    again = M.randomization_check(model, x, 1, E.saliency, seed=3)
    torch.testing.assert_close(again.spearman, result.spearman)  # reproducible


def test_randomization_check_of_a_method_that_ignores_the_model():
    # an "explanation" that is the image itself (an edge detector, in Adebayo's words) passes
    # through every randomisation unchanged: correlation 1 and SSIM 1 at every step
    model = tiny_cnn(1)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    result = M.randomization_check(model, x, 0, lambda m, x, t: x.abs(), layers=["5", ["2", "0"]])
    assert result.layers == ["5", "2 + 0"]
    assert result.spearman.tolist() == pytest.approx([1.0, 1.0])
    assert result.ssim.tolist() == pytest.approx([1.0, 1.0])


def test_randomization_check_bad_input():
    model = tiny_cnn()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown layer '9'"):
        M.randomization_check(model, x, 0, E.saliency, layers=["9"])
    with pytest.raises(ValueError, match="layer '1' has no parameters"):
        M.randomization_check(model, x, 0, E.saliency, layers=["1"])
    with pytest.raises(ValueError, match="layers is empty"):
        M.randomization_check(model, x, 0, E.saliency, layers=[])
    with pytest.raises(ValueError, match="no parameters to randomise"):
        M.randomization_check(nn.Sequential(nn.ReLU()), x, 0, lambda m, x, t: x)


def test_pixel_auroc_known_answers():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    assert M.pixel_auroc(masks.float(), masks) == 1.0  # the mask itself: perfect
    assert M.pixel_auroc(-masks.float(), masks) == 0.0  # reversed: worst
    assert M.pixel_auroc(torch.zeros(2, 8, 8), masks) == 0.5  # all ties: chance
    # against the definition: P(score of a positive > score of a negative), ties 1/2
    torch.manual_seed(0)
    maps = torch.randn(2, 1, 8, 8)
    pos, neg = maps[:, 0][masks], maps[:, 0][~masks]
    direct = ((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()).mean()
    assert M.pixel_auroc(maps, masks) == pytest.approx(direct.item(), abs=1e-6)


def test_pixel_auroc_bad_input():
    with pytest.raises(ValueError, match="differ"):
        M.pixel_auroc(torch.zeros(2, 8, 8), torch.zeros(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="both positive and negative"):
        M.pixel_auroc(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool))


# ------------------------------------------------------------------ pointing game and boxes


def test_pointing_game_by_hand():
    masks = torch.zeros(3, 5, 5, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    maps = torch.zeros(3, 1, 5, 5)
    maps[0, 0, 2, 2] = 1.0  # inside
    maps[1, 0, 4, 4] = 1.0  # outside, 2 px away (diagonally) from the mask
    # maps[2] is all zeros: points nowhere
    assert M.pointing_game(maps, masks).tolist() == [True, False, False]
    assert M.pointing_game(maps, masks, tolerance=2).tolist() == [True, True, False]
    assert M.pointing_game(masks.float(), masks).all()  # the mask itself scores the maximum


def test_box_from_map_keeps_the_largest_component():
    m = torch.zeros(1, 10, 12)
    m[0, 1:4, 1:3] = 1.0  # 6 pixels
    m[0, 5:9, 6:11] = 0.5  # 20 pixels, above 20 % of the maximum
    m[0, 0, 11] = 0.1  # below 20 % of the maximum: ignored
    assert M.box_from_map(m).tolist() == [[6, 5, 11, 9]]
    assert M.box_from_map(m, threshold=0.6).tolist() == [[1, 1, 3, 4]]
    assert M.box_from_map(torch.zeros(1, 4, 4)).tolist() == [[0, 0, 0, 0]]


def blocky_maps(n, h, w, seed):
    """Maps of few values in 2x2 blocks: several components per map, ties of size among them,
    ties of the maximum, some maps all zero or all negative."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randint(0, 4, (n, 1, h // 2, w // 2), generator=g).float()
    maps = F.interpolate(maps, size=(h, w), mode="nearest") - 1.0
    maps[::7] = 0.0
    maps[3::7] = -1.0
    return maps


def test_box_from_map_equals_the_map_by_map_definition():
    # all maps are labelled at once; this is the rule map by map, as Zhou et al. state it
    from scipy import ndimage

    def by_map(m, threshold):
        top = m.max()
        if not top > 0:
            return [0, 0, 0, 0]
        labels, count = ndimage.label(m >= threshold * top, structure=np.ones((3, 3)))
        sizes = ndimage.sum_labels(np.ones_like(m), labels, index=np.arange(1, count + 1))
        rows, cols = ndimage.find_objects(labels)[int(np.argmax(sizes))]
        return [cols.start, rows.start, cols.stop, rows.stop]

    for seed, (h, w) in enumerate([(16, 16), (10, 14), (64, 64)]):
        maps = blocky_maps(40, h, w, seed)
        for threshold in (0.2, 0.5, 1.0):
            want = [by_map(m[0].numpy(), threshold) for m in maps]
            assert M.box_from_map(maps, threshold).tolist() == want


def test_pointing_game_tolerance_is_the_grown_mask():
    # the mask grown by t steps of 8-connectivity (scipy's binary dilation), objects at the
    # image's edges included; the map's first maximum decides, as argmax
    from scipy import ndimage

    g = torch.Generator().manual_seed(4)
    masks = torch.rand(30, 12, 12, generator=g) > 0.93
    maps = blocky_maps(30, 12, 12, 5)  # tied maxima; maps 0, 3, 7, ... constant: no hit
    for t in (0, 1, 2, 5):
        grown = ndimage.binary_dilation(masks.numpy(), np.ones((1, 3, 3), bool), iterations=t)
        grown = torch.from_numpy(grown if t else masks.numpy())
        peak = maps.flatten(1).argmax(1)
        constant = maps.flatten(1).amax(1) == maps.flatten(1).amin(1)
        want = grown.flatten(1)[torch.arange(30), peak] & ~constant
        assert M.pointing_game(maps, masks, tolerance=t).tolist() == want.tolist()


@pytest.mark.portable
def test_ssim_equals_scikit_image_map_by_map():
    # the batch at once through scipy's Gaussian filter; scikit-image's function map by map,
    # with the paper's settings; small maps (a ResNet's 7x7 grid) take a smaller border
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(8)
    for side in (64, 11, 8, 7, 5):
        a = torch.rand(6, 1, side, side, generator=g, dtype=torch.float64)
        b = (a + 0.3 * torch.rand(6, 1, side, side, generator=g, dtype=torch.float64)) / 1.3
        window = min(11, side if side % 2 else side - 1)
        want = [
            structural_similarity(
                p[0].numpy(),
                q[0].numpy(),
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                win_size=window,
            )
            for p, q in zip(a, b, strict=True)
        ]
        # float64 throughout; the result is returned as float32
        np.testing.assert_allclose(M.ssim(a, b).numpy(), want, rtol=1e-6, atol=1e-7)


def test_box_iou_and_localization_accuracy():
    a = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 0, 0]])
    b = torch.tensor([[0, 0, 4, 4], [2, 2, 6, 6], [0, 0, 2, 2]])
    torch.testing.assert_close(M.box_iou(a, b), torch.tensor([1.0, 4 / 28, 0.0]))
    d = vm.data.make_shapes(20, seed=5)
    assert M.localization_accuracy(d.masks.float(), d.boxes) == 1.0  # the mask's own box
    with pytest.raises(ValueError, match=r"boxes must have shape \(n, 4\)"):
        M.localization_accuracy(d.masks.float(), d.boxes[:, :, :2])
    with pytest.raises(ValueError, match=r"maps must have shape"):
        M.pointing_game(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4))


# ------------------------------------------------------------------ the tables of bad inputs


@pytest.fixture(scope="module")
def cnn_and_images(pretrained):
    shapes = vm.data.make_shapes(2, seed=9)
    return pretrained("shapes-cnn"), shapes.images, shapes.labels


PERTURBATION = {
    "x wrong channels": (lambda x, t, m: dict(x=x[:, :1]), ValueError, "x has 1"),
    "x a size the model cannot take": (
        lambda x, t, m: dict(x=x[..., :32, :32], maps=m[..., :32, :32]),
        ValueError,
        "(3, 64, 64)",
    ),
    "x float64": (lambda x, t, m: dict(x=x.double()), ValueError, "x is torch.float64"),
    "x 3-D": (lambda x, t, m: dict(x=x[0]), ValueError, "x[None]"),
    "model None": (lambda x, t, m: dict(model=None), TypeError, "model"),
    "target None": (lambda x, t, m: dict(target=None), TypeError, "target"),
    "target a string": (lambda x, t, m: dict(target="circle"), TypeError, "target"),
    "target 2-D": (lambda x, t, m: dict(target=t[:, None]), ValueError, "target has shape"),
    "target callable": (
        lambda x, t, m: dict(target=lambda out: out[:, 0]),
        ValueError,
        "not a callable target",
    ),
    "target out of range": (lambda x, t, m: dict(target=6), ValueError, "out of range"),
    "maps numpy": (lambda x, t, m: dict(maps=m.numpy()), TypeError, "maps"),
    "maps NaN": (lambda x, t, m: dict(maps=m * float("nan")), ValueError, "maps"),
    "maps size": (lambda x, t, m: dict(maps=m[..., :32, :32]), ValueError, "maps"),
    "maps one too few": (lambda x, t, m: dict(maps=m[:1]), ValueError, "maps"),
    "baseline NaN": (lambda x, t, m: dict(baseline=float("nan")), ValueError, "baseline"),
    "baseline a string": (lambda x, t, m: dict(baseline="black"), ValueError, "baseline"),
    "baseline shape": (lambda x, t, m: dict(baseline=torch.zeros(5)), ValueError, "baseline"),
    "steps 0": (lambda x, t, m: dict(steps=0), ValueError, "steps"),
    "batch_size 0": (lambda x, t, m: dict(batch_size=0), ValueError, "batch_size"),
    "probability": (lambda x, t, m: dict(probability="logit"), ValueError, "probability"),
}


@pytest.mark.parametrize("case", list(PERTURBATION))
@pytest.mark.parametrize(
    "function", ["deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"]
)
def test_perturbation_metrics_bad_input(function, case, cnn_and_images):
    model, x, labels = cnn_and_images
    maps = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    make, error, word = PERTURBATION[case]
    call = {
        "model": model,
        "x": x,
        "target": labels,
        "maps": maps,
        "steps": 2,
        "baseline": 0.0,
        **make(x, labels, maps),
    }
    raises_own(error, (word,), lambda: getattr(M, function)(**call))
    assert hook_count(model) == 0


# Calls of the metrics of maps alone, with the error and a word its message must contain.
MAPS = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))

MASKS = torch.zeros(2, 64, 64, dtype=torch.bool)

MASKS[:, 20:30, 10:40] = True
BOXES = torch.tensor([[10, 20, 40, 30]] * 2)

MAP_METRICS = {
    "pointing_game maps numpy": (lambda: M.pointing_game(MAPS.numpy(), MASKS), TypeError, "maps"),
    "pointing_game masks numpy": (lambda: M.pointing_game(MAPS, MASKS.numpy()), TypeError, "masks"),
    "pointing_game masks size": (lambda: M.pointing_game(MAPS, MASKS[:, :32]), ValueError, "masks"),
    "pointing_game masks one too few": (
        lambda: M.pointing_game(MAPS, MASKS[:1]),
        ValueError,
        "masks",
    ),
    "pointing_game maps NaN": (
        lambda: M.pointing_game(MAPS * float("nan"), MASKS),
        ValueError,
        "maps",
    ),
    "relevance_mass a map of +inf": (
        lambda: M.relevance_mass(MAPS.index_put((torch.tensor(0),), torch.tensor(math.inf)), MASKS),
        ValueError,
        "maps",
    ),
    "spearman a map of -inf": (
        lambda: M.spearman(MAPS.index_put((torch.tensor(1),), torch.tensor(-math.inf)), MAPS),
        ValueError,
        "a",
    ),
    "pointing_game tolerance -1": (
        lambda: M.pointing_game(MAPS, MASKS, tolerance=-1),
        ValueError,
        "tolerance",
    ),
    "pointing_game tolerance 1.5": (
        lambda: M.pointing_game(MAPS, MASKS, tolerance=1.5),
        ValueError,
        "tolerance",
    ),
    "relevance_mass maps numpy": (lambda: M.relevance_mass(MAPS.numpy(), MASKS), TypeError, "maps"),
    "relevance_mass maps NaN": (
        lambda: M.relevance_mass(MAPS * float("nan"), MASKS),
        ValueError,
        "maps",
    ),
    "relevance_mass masks size": (
        lambda: M.relevance_mass(MAPS, MASKS[:, :32]),
        ValueError,
        "masks",
    ),
    "box_from_map threshold 2": (
        lambda: M.box_from_map(MAPS, threshold=2),
        ValueError,
        "threshold",
    ),
    "box_from_map threshold -1": (
        lambda: M.box_from_map(MAPS, threshold=-1),
        ValueError,
        "threshold",
    ),
    "box_from_map one map": (lambda: M.box_from_map(MAPS[0, 0]), ValueError, "maps"),
    "box_from_map maps numpy": (lambda: M.box_from_map(MAPS.numpy()), TypeError, "maps"),
    "localization_accuracy boxes (n, 3)": (
        lambda: M.localization_accuracy(MAPS, BOXES[:, :3]),
        ValueError,
        "boxes",
    ),
    "localization_accuracy boxes numpy": (
        lambda: M.localization_accuracy(MAPS, BOXES.numpy()),
        TypeError,
        "boxes",
    ),
    "localization_accuracy boxes one too few": (
        lambda: M.localization_accuracy(MAPS, BOXES[:1]),
        ValueError,
        "boxes",
    ),
    "localization_accuracy iou 2": (
        lambda: M.localization_accuracy(MAPS, BOXES, iou=2),
        ValueError,
        "iou",
    ),
    "box_iou (n, 3)": (lambda: M.box_iou(BOXES, BOXES[:, :3]), ValueError, "boxes"),
    "importance numpy": (lambda: M.importance(MAPS.numpy()), TypeError, "maps"),
    "importance one map": (lambda: M.importance(MAPS[0, 0]), ValueError, "maps"),
    "spearman numpy": (lambda: M.spearman(MAPS.numpy(), MAPS), TypeError, "must be a torch"),
    "spearman one too few": (lambda: M.spearman(MAPS, MAPS[:1]), ValueError, "same shape"),
    "ssim one too few": (lambda: M.ssim(MAPS, MAPS[:1]), ValueError, "same shape"),
    "ssim numpy": (lambda: M.ssim(MAPS.numpy(), MAPS), TypeError, "must be a torch"),
    "pixel_auroc maps numpy": (lambda: M.pixel_auroc(MAPS.numpy(), MASKS), TypeError, "maps"),
    "pixel_auroc masks one too few": (lambda: M.pixel_auroc(MAPS, MASKS[:1]), ValueError, "masks"),
    "blur sigma a string": (lambda: M.blur(MAPS, sigma="a"), ValueError, "sigma"),
    "blur sigma 0": (lambda: M.blur(MAPS, sigma=0), ValueError, "sigma"),
}


@pytest.mark.parametrize("case", list(MAP_METRICS))
def test_map_metrics_bad_input(case):
    call, error, word = MAP_METRICS[case]
    raises_own(error, (word,), call)


RANDOMIZATION = {
    "layers a bare int": (dict(layers=3), TypeError, "layers"),  # an index, not a name
    "layers an index out of range": (dict(layers=[99]), TypeError, "layers"),
    "layers a group with an index": (dict(layers=[["classifier.4", 2]]), TypeError, "layers"),
    "layers an unknown name": (dict(layers=["99"]), ValueError, "unknown layer '99'"),
    "method a name": (dict(method="saliency"), TypeError, "method"),
    "method None": (dict(method=None), TypeError, "method"),
    "seed a string": (dict(seed="a"), TypeError, "seed"),
    "target None": (dict(target=None), TypeError, "target"),
    "model None": (dict(model=None), TypeError, "model"),
    "x one image": (dict(x=torch.rand(3, 64, 64)), ValueError, "x[None]"),
}


@pytest.mark.parametrize("case", list(RANDOMIZATION))
def test_randomization_check_bad_input_table(case, cnn_and_images):
    model, x, labels = cnn_and_images
    parts, error, word = RANDOMIZATION[case]
    call = {"model": model, "x": x, "target": labels, "method": E.saliency, **parts}
    message = raises_own(error, (word,), lambda: M.randomization_check(**call))
    if error is TypeError and word == "layers":
        assert "'classifier.4'" in message  # the names it could have given
    assert hook_count(model) == 0
