"""vismap.explain.occlusion: by hand, against captum's Occlusion, batches, strides."""

import pytest
import torch
from conftest import assert_maps_close, float64, hook_count, raises_own
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap._running import fast_layout

captum_attr = pytest.importorskip("captum.attr")


def test_occlusion_by_hand():
    class TopLeft(nn.Module):  # y = sum of channel 0 over the top-left 2x2 pixels
        def forward(self, x):
            return x[:, :1, :2, :2].sum((1, 2, 3))[:, None]

    x = torch.ones(1, 3, 4, 4)
    got = E.occlusion(TopLeft(), x, 0, window=2, stride=2, baseline=0.0)
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., :2, :2] = 4.0  # hiding the top-left window drops the score by 4
    assert torch.equal(got, expected)
    # stride 1: each pixel of the top-left 2x2 is covered by windows with mean drop computed by hand
    got = E.occlusion(TopLeft(), x, 0, window=2, stride=1, baseline=0.0)
    assert got[0, 0, 0, 0] == 4.0  # covered by one window, which hides all four
    assert got[0, 0, 1, 1] == pytest.approx((4 + 2 + 2 + 1) / 4)
    assert got[0, 0, 3, 3] == 0.0


@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=21)


@pytest.mark.portable
@pytest.mark.slow
def test_occlusion_matches_captum(shapes, pretrained):
    model = float64(pretrained("shapes-cnn"))  # the same mathematics: float64
    images = shapes.images[:2].double()  # two images: float64 convolutions are slow on a CPU
    # windows twice their stride, the last one whole (8, 4) or cut off by the edge (12, 6), and
    # an odd window no multiple of its stride, so that a pixel lies under 1, 2 or 3 windows per
    # axis (15, 7): 64 positions, where (7, 3) has the same overlaps at 400 (2.3 s of this test)
    for window, stride, baseline in [(8, 4, 0.0), (12, 6, 0.5), (15, 7, 0.2)]:
        got = E.occlusion(
            model, images, shapes.labels[:2], window=window, stride=stride, baseline=baseline
        )
        want = captum_attr.Occlusion(model).attribute(
            images,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=baseline,
            target=shapes.labels[:2],
            perturbations_per_eval=16,
        )  # batched: the same attributions, fewer forwards
        assert got.shape == (2, 1, 64, 64)
        # captum keeps part of its occlusion arithmetic in float32 whatever the input's dtype
        # (measured 6.5e-8 of the map's maximum in float64), hence 1e-6, not 1e-12
        assert_maps_close(got, want[:, :1], 1e-6, msg=f"window {window}, stride {stride}")


@pytest.mark.portable
@pytest.mark.slow
def test_occlusion_matches_captum_on_torchvision_models(torchvision_models):
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    for name, model in torchvision_models.items():
        got = E.occlusion(model, x, torch.tensor([2, 9]), window=16, stride=12, baseline=0.3)
        want = captum_attr.Occlusion(model).attribute(  # float32, one layout (as above)
            fast_layout(x),
            sliding_window_shapes=(3, 16, 16),
            strides=(3, 12, 12),
            baselines=0.3,
            target=torch.tensor([2, 9]),
        )
        # an occlusion map is a difference of two scores: float32's rounding is relative to the
        # scores, which are larger than their difference (measured 1.4e-5 of the map's max)
        assert_maps_close(got, want[:, :1], 1e-4, msg=name)
        assert hook_count(model) == 0


def test_occlusion_splits_many_images_into_batches(pretrained):
    model = pretrained("shapes-cnn")
    d = vm.data.make_shapes(10, seed=8)
    baseline = torch.rand_like(d.images)
    whole = vm.explain.occlusion(
        model, d.images, d.labels, window=16, stride=16, baseline=baseline, batch_size=1000
    )
    split = vm.explain.occlusion(
        model, d.images, d.labels, window=16, stride=16, baseline=baseline, batch_size=4
    )
    torch.testing.assert_close(split, whole)


def test_occlusion_refuses_a_stride_that_leaves_pixels_uncovered(pretrained):
    # the pixels between two windows would have no drop to average: NaN, silently, before
    model, x = pretrained("shapes-cnn"), vm.data.make_shapes(2, seed=9).images
    for window, stride in [(8, 9), (8, 100), (16, 32), ((8, 16), (8, 17)), ((8, 16), (9, 8))]:
        raises_own(
            ValueError,
            ("stride",),
            lambda w=window, t=stride: E.occlusion(model, x, 0, window=w, stride=t),
        )
    # stride == window tiles the image; the last window may be cut off by the edge
    maps = E.occlusion(model, x, 0, window=24, stride=24)
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()
