"""vismap.explain.maps: upsample equals torch's bilinear interpolation; normalize; bad input."""

import numpy as np
import pytest
import torch
from conftest import assert_maps_close, raises_own

from vismap import explain as E


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((64, 1, 8, 8), (64, 64)),  # shapes-cnn's Grad-CAM: 8x8 -> 64x64
        ((2, 512, 7, 7), (112, 112)),  # Score-CAM's masks at ResNet-18's layer4
        ((3, 1, 5, 7), (33, 50)),  # scales that are not integers, and differ per axis
        ((2, 3, 20, 30), (7, 11)),  # smaller: bilinear without antialiasing, as F.interpolate
        ((1, 1, 1, 1), (5, 4)),  # a single cell
    ],
)
@pytest.mark.portable
def test_upsample_equals_torch_bilinear_interpolation(shape, size):
    g = torch.Generator().manual_seed(8)
    maps = torch.randn(shape, generator=g, dtype=torch.float64)
    want = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(E.upsample(maps, size), want, atol=1e-12, rtol=0)
    # float32: two interpolation weights per axis, each rounded: a few float32 ulps of the max
    assert_maps_close(E.upsample(maps.float(), size), want.float(), 1e-6)
    with pytest.raises(ValueError, match="floating point"):
        E.upsample(maps.long(), size)


def test_upsample_after_inference_mode_still_differentiates():
    # the interpolation matrices are cached: one first built under inference mode must not be
    # an inference tensor that a later differentiable call cannot save for backward
    with torch.inference_mode():
        E.upsample(torch.rand(2, 1, 5, 3), (17, 19))
    maps = torch.rand(2, 1, 5, 3, requires_grad=True)
    E.upsample(maps, (17, 19)).sum().backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()


def test_normalize_is_safe_on_constant_maps():
    maps = torch.zeros(3, 1, 5, 5)
    maps[1] = 7.0
    maps[2, 0, 0, 0] = 2.0
    out = E.normalize(maps)
    assert not out.isnan().any()
    assert out[0].eq(0).all() and out[1].eq(0).all() and out[2].max() == 1.0


def test_good_calls():
    assert E.normalize(torch.zeros(2, 4)).eq(0).all()  # all-zero stays zero
    assert E.upsample(MAPS, (np.int64(8), torch.tensor(8))).shape == (2, 1, 8, 8)


# ------------------------------------------------------------------ bad input


MAPS = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))


BAD = {
    "normalize one number": (lambda m: E.normalize(torch.tensor(3.0)), ValueError, "maps[None]"),
    "normalize one row": (lambda m: E.normalize(torch.arange(5.0)), ValueError, "maps[None]"),
    "normalize numpy": (lambda m: E.normalize(np.zeros((2, 1, 4, 4))), TypeError, "maps"),
    "normalize a list": (lambda m: E.normalize([[0.0, 1.0]]), TypeError, "maps"),
    "normalize NaN": (
        lambda m: E.normalize(torch.tensor([[0.0, float("nan"), 1.0]] * 2)),
        ValueError,
        "maps [0, 1] have NaN",
    ),
    "normalize infinite": (
        lambda m: E.normalize(torch.tensor([[0.0, 1.0], [0.0, float("inf")]])),
        ValueError,
        "maps [1] have NaN or infinite",
    ),
    "normalize eps -1": (lambda m: E.normalize(torch.zeros(2, 4), eps=-1.0), ValueError, "eps"),
    "upsample size 0": (lambda m: E.upsample(MAPS, (0, 4)), ValueError, "size"),
    "upsample size an int": (lambda m: E.upsample(MAPS, 64), ValueError, "size"),
    "upsample size three": (lambda m: E.upsample(MAPS, (64, 64, 64)), ValueError, "size"),
    "upsample size a float": (lambda m: E.upsample(MAPS, (6.5, 4)), ValueError, "size"),
    "upsample maps numpy": (lambda m: E.upsample(MAPS.numpy(), (8, 8)), ValueError, "maps"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case):
    call, error, word = BAD[case]
    raises_own(error, (word,), lambda: call(None))
