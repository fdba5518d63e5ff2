"""Chapter 08's metrics (vismap.metrics) against Quantus (Hedström et al. 2023), a test
dependency only.

Every metric of chapter 08 that Quantus computes for the same quantity is compared on the same
precomputed maps (Quantus's ``a_batch``) and masks (``s_batch``): the pointing game
(``PointingGame``), the relevance mass (``RelevanceMassAccuracy``), the pixel AUROC (``AUC``) and
the cascading randomisation (``MPRT``, with the Spearman correlation both use). Where Quantus
computes something else by design, the difference is written down and tested: how the pointing
game treats tied maxima and constant maps, that Quantus's mass counts negative values, how each
seeds the randomised layers, and Quantus's SSIM window. Chapter 08's other scores have no
Quantus twin: CAM's box localisation (IoU >= 0.5), and deletion / insertion AUC on RISE's
probability curves (Quantus's ``PixelFlipping`` and ``RegionPerturbation`` perturb and
aggregate differently); Quantus's ``RelevanceRankAccuracy``, ``TopKIntersection`` and
``AttributionLocalisation`` have no vismap twin.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import vismap as vm

quantus = pytest.importorskip("quantus")
similarity = pytest.importorskip("quantus.functions.similarity_func")


@pytest.fixture(scope="module")
def scenes(pretrained):
    """Grad-CAM maps of ``shapes-gap`` for 8 test images and each object's mask, as Quantus
    takes them: numpy, maps ``(n, 1, H, W)``, masks ``(n, 1, H, W)``."""
    model = pretrained("shapes-gap")
    s = vm.data.make_shapes(8, seed=5)
    maps = vm.explain.gradcam(model, s.images, s.labels, layer="features.10")
    return model, s.images, s.labels, maps, s.masks[:, 0]


def quantus_scores(metric, x, y, maps, masks) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=None,
            x_batch=x.numpy(),
            y_batch=y.numpy(),
            a_batch=maps.numpy(),
            s_batch=masks[:, None].numpy().astype(float),
        )
    return np.asarray(scores, dtype=float)


def test_pointing_game_equals_quantus(scenes):
    _, x, y, maps, masks = scenes
    assert maps.flatten(1).max(1).values.unique().numel() == len(maps)  # one peak each
    want = quantus_scores(quantus.PointingGame(disable_warnings=True), x, y, maps, masks)
    got = vm.metrics.pointing_game(maps, masks).numpy()
    np.testing.assert_array_equal(got, want.astype(bool))
    assert 0 < got.sum() < len(got)  # hits and misses: a test that can tell them apart


def test_pointing_game_ties_and_constant_maps_differ_by_design(scenes):
    # Quantus counts a hit when *any* pixel tied for the maximum lies in the mask; vismap looks
    # at one peak (the first in reading order). A constant map points nowhere: a miss for
    # vismap, refused by Quantus. On real maps, whose maximum is unique, both agree (above).
    _, x, y, _, masks = scenes
    n = len(masks)
    ties = torch.zeros(n, 1, 64, 64)
    ties[:, 0, 0, 0] = 1.0  # a corner, outside every object
    inside = masks.flatten(1).float().argmax(1)
    ties.view(n, -1)[torch.arange(n), inside] = 1.0  # tied with a pixel inside the object
    constant = torch.ones(n, 1, 64, 64)
    q = quantus.PointingGame(disable_warnings=True)
    assert quantus_scores(q, x, y, ties, masks).all()
    assert not vm.metrics.pointing_game(ties, masks).any()
    with pytest.raises(AssertionError, match="all equal"):  # Quantus refuses a constant map
        quantus_scores(q, x, y, constant, masks)
    assert not vm.metrics.pointing_game(constant, masks).any()


def test_relevance_mass_equals_quantus_on_non_negative_maps(scenes):
    _, x, y, maps, masks = scenes
    assert (maps >= 0).all()  # Grad-CAM is a ReLU'd map
    want = quantus_scores(quantus.RelevanceMassAccuracy(disable_warnings=True), x, y, maps, masks)
    got = vm.metrics.relevance_mass(maps, masks).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # float32 sums


def test_relevance_mass_of_a_signed_map_differs_by_design(scenes, pretrained):
    # vismap counts the positive mass only (Wang et al. 2020's energy; a share in [0, 1]);
    # Quantus divides the signed sums as they are (with abs=False, its default), so that a map
    # with negative values can score below 0 or above 1
    model = pretrained("shapes-gap")
    _, x, y, _, masks = scenes
    signed = vm.explain.gradient_x_input(model, x, y).sum(1, keepdim=True)
    got = vm.metrics.relevance_mass(signed, masks).double().numpy()
    want = quantus_scores(quantus.RelevanceMassAccuracy(disable_warnings=True), x, y, signed, masks)
    positive = quantus_scores(
        quantus.RelevanceMassAccuracy(disable_warnings=True), x, y, signed.clamp(min=0), masks
    )
    assert ((got >= 0) & (got <= 1)).all() and not np.allclose(got, want, rtol=1e-3)
    np.testing.assert_allclose(got, positive, rtol=1e-5, atol=1e-7)  # the positive part: equal


def test_pixel_auroc_equals_quantus_auc(scenes):
    _, x, y, maps, masks = scenes
    want = quantus_scores(quantus.AUC(disable_warnings=True), x, y, maps, masks)
    got = [vm.metrics.pixel_auroc(maps[i : i + 1], masks[i : i + 1]) for i in range(len(maps))]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_spearman_equals_quantus_similarity(scenes):
    _, _, _, maps, _ = scenes
    other = maps.flip(-1) + 0.1 * maps
    want = similarity.correlation_spearman(
        maps.flatten(1).double().numpy(), other.flatten(1).double().numpy(), batched=True
    )
    got = vm.metrics.spearman(maps, other).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cascading_randomisation_equals_quantus_mprt_at_its_first_step(scenes):
    # Both reset each layer with its own reset_parameters(), top down, cumulatively, and compare
    # |map| normalised by its maximum with Spearman's correlation. They seed differently by
    # design: Quantus calls torch.manual_seed(seed + 1) before *every* layer (each layer drawn
    # from the same stream), vismap torch.manual_seed(seed + k) before step k. So the first step
    # draws the same weights and gives the same correlations, to rounding; the later steps
    # randomise other weights and agree only in distribution.
    model, x, y, _, _ = scenes

    def explain(model, inputs, targets, **kwargs):
        maps = vm.explain.saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets))
        return vm.metrics.importance(maps).detach().numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mprt = quantus.MPRT(disable_warnings=True, seed=3, return_average_correlation=False)
        want = mprt(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=explain
        )
    got = vm.metrics.randomization_check(model, x, y, vm.explain.saliency, seed=3)
    layers = [name for name in want if name != "original"]
    assert layers == got.layers  # the same layers, in the same order
    np.testing.assert_allclose(
        got.spearman_images[0].numpy(), want[layers[0]], rtol=1e-5, atol=1e-6
    )
    later = np.abs(got.spearman_images[1].numpy() - np.asarray(want[layers[1]])).max()
    assert later > 1e-3  # other weights: the seeds differ


def test_quantus_ssim_uses_another_window_by_design(scenes):
    # vismap's SSIM is the paper's (an 11x11 Gaussian window, sigma 1.5, maps in [0, 1]);
    # Quantus's calls scikit-image with its default 7x7 uniform window and the two maps' joint
    # range: the same measure with other settings, other values
    _, _, _, maps, _ = scenes
    a = vm.explain.normalize(maps)[:, 0]
    b = vm.explain.normalize(maps.flip(-1) + 0.3 * maps)[:, 0]
    ours = vm.metrics.ssim(a, b).double().numpy()
    theirs = np.asarray(similarity.ssim(a.double().numpy(), b.double().numpy(), batched=True))
    assert np.abs(ours - theirs).max() > 1e-3
    from skimage.metrics import structural_similarity

    by_hand = [
        structural_similarity(p, q, data_range=1.0)
        for p, q in zip(a.double().numpy(), b.double().numpy(), strict=True)
    ]
    np.testing.assert_allclose(theirs, by_hand, rtol=1e-6)  # Quantus: skimage's defaults
