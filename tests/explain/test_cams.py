"""vismap.explain.cams: CAM, Grad-CAM, LayerCAM, guided Grad-CAM, Grad-CAM++ and Score-CAM.
Hand-computed cases on tiny models; equality with pytorch-grad-cam and captum on the course's
models and torchvision's ResNet-18 and VGG-11 (random weights); bad input."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import assert_maps_close, float64, hook_count, out_of_place
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap._running import fast_layout

gradcam_lib = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

# ------------------------------------------------------------------ hand-computed expectations


def test_cam_by_hand():
    # One 2x2 feature map per channel, K = 2, weights w = [[1, -1]]: M = A^0 - A^1.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Identity()
            self.fc = nn.Linear(2, 1, bias=False)
            self.fc.weight.data = torch.tensor([[1.0, -1.0]])

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [5.0, 0.0]]]])
    got = E.cam(Net(), x, 0, layer="features", upsampled=False)
    assert got[0, 0].tolist() == [[0.5, 1.5], [-2.0, 4.0]]


def test_gradcam_pp_by_hand():
    # The layer is the input itself (K = 2 maps of 2x2) and y = sum_k c_k sum_ij A^k_ij, so the
    # gradient is c_k everywhere: alpha_k = c^2 / (2 c^2 + S_k c^3), S_k = sum_ij A^k_ij.
    # A^0 = [[1, 2], [3, 4]] (S = 10), c_0 = 1: alpha = 1/12, w_0 = 4 * 1/12 * 1 = 1/3.
    # A^1 = [[1, 0], [0, 1]] (S = 2), c_1 = 2: alpha = 4/24, w_1 = 4 * 1/6 * 2 = 4/3.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Identity()

        def forward(self, x):
            a = self.features(x)
            return (a[:, 0].sum((1, 2)) + 2 * a[:, 1].sum((1, 2)))[:, None]

    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    got = E.gradcam_pp(Net(), a, 0, layer="features", upsampled=False)
    torch.testing.assert_close(got[0, 0], torch.tensor([[5 / 3, 2 / 3], [1.0, 8 / 3]]))
    # Grad-CAM on the same: alpha_k = mean gradient = c_k, M = A^0 + 2 A^1
    torch.testing.assert_close(
        E.gradcam(Net(), a, 0, layer="features", upsampled=False)[0, 0],
        torch.tensor([[3.0, 2.0], [3.0, 6.0]]),
    )


def test_scorecam_by_hand():
    # The layer is the input (2 maps of 2x2, no upsampling needed); y = sum of every pixel.
    # H_0 = rescaled A^0 = [[0, 1/3], [2/3, 1]]; A^1 is constant, so H_1 = 0 and S_1 = y(0) = 0.
    # S_0 = y(x * H_0) = (0 + 1/3 + 4/3 + 3) + (0 + 1/3 + 2/3 + 1) = 20/3.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Identity()

        def forward(self, x):
            return self.features(x).sum((1, 2, 3))[:, None]

    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    e = math.exp(20 / 3)
    alpha = [e / (e + 1), 1 / (e + 1)]
    want = torch.relu(alpha[0] * x[0, 0] + alpha[1] * x[0, 1])
    got = E.scorecam(Net(), x, 0, layer="features", upsampled=False)
    torch.testing.assert_close(got[0, 0], want)
    assert torch.equal(E.scorecam(Net(), x, 0, layer="features", batch_size=1), got)


# ------------------------------------------------------------------ pytorch-grad-cam and captum


@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=31)


CASES = [
    pytest.param("shapes-gap", "features.10", 64, id="shapes-gap"),
    pytest.param("shapes-cnn", "features.9", 64, id="shapes-cnn"),
    pytest.param("resnet18", "layer4", 96, id="resnet18", marks=pytest.mark.slow),
    pytest.param("vgg11", "features.18", 64, id="vgg11", marks=pytest.mark.slow),
]


def model_of(name: str, request: pytest.FixtureRequest) -> nn.Module:
    """A course checkpoint (loaded fresh), or the session's shared torchvision model (which
    must not be changed), asked for only when a torchvision case runs. The course's checkpoints
    come in float64: the comparisons with the reference libraries claim the same mathematics,
    which float32 shows only to its rounding, whose last bits depend on the CPU's kernels."""
    if name.startswith("shapes-"):
        return float64(request.getfixturevalue("pretrained")(name))
    return request.getfixturevalue("torchvision_models")[name]


@pytest.mark.portable
@pytest.mark.parametrize("name, layer, size", CASES)
@pytest.mark.parametrize("ours, theirs", [(E.gradcam, "GradCAM"), (E.layercam, "LayerCAM")])
def test_matches_pytorch_grad_cam(ours, theirs, name, layer, size, request):
    model = model_of(name, request)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    x = x.to(next(model.parameters()).dtype)
    targets = [1, 4, 2]
    # pytorch-grad-cam stores the layer's output by reference, so a following in-place
    # ReLU (VGG's features.19) overwrites it with ReLU(A): it is given a copy of the model
    # with out-of-place ReLUs (the function is the same; vismap copes with in-place ones).
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    lib = getattr(gradcam_lib, theirs)(
        model=reference, target_layers=[reference.get_submodule(layer)]
    )
    # In float32 (torchvision's models) the reference is given x in vismap's layout
    # (channels-last on a CPU), so that both run the same kernels.
    given = x if x.dtype == torch.float64 else fast_layout(x)
    want = lib(input_tensor=given, targets=[ClassifierOutputTarget(t) for t in targets])
    got = E.normalize(ours(model, x, torch.tensor(targets), layer=layer))[:, 0]
    # pytorch-grad-cam min-max normalises with a 1e-7 guard and resizes with OpenCV in float32
    # whatever the input's dtype: float32 maps in [0, 1] (measured 2e-7 from float64 gradients,
    # up to 1.03e-5 from float32 ones on VGG-11: OpenCV's resize against torch's interpolate)
    tolerance = 1e-6 if x.dtype == torch.float64 else 2e-5
    assert_maps_close(got, torch.from_numpy(want).to(got.dtype), tolerance, msg=layer)


@pytest.mark.portable
@pytest.mark.parametrize("name, layer, size", CASES)
def test_matches_captum_layer_gradcam_and_guided_gradcam(name, layer, size, request):
    model = model_of(name, request)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    x = x.to(next(model.parameters()).dtype)
    rel = 1e-12 if x.dtype == torch.float64 else 1e-5  # float32: torchvision's, in float32
    module = model.get_submodule(layer)
    want = captum_attr.LayerGradCam(model, module).attribute(
        x, target=[0, 5], relu_attributions=True
    )
    got = E.gradcam(model, x, [0, 5], layer=layer, upsampled=False)
    assert_maps_close(got, want, rel, msg=f"{name} Grad-CAM")
    with pytest.warns(UserWarning):
        want = captum_attr.GuidedGradCam(model, module).attribute(
            x, target=[0, 5], interpolate_mode="bilinear"
        )
    got = E.guided_gradcam(model, x, [0, 5], layer=layer)
    assert_maps_close(got, want, rel, msg=f"{name} guided Grad-CAM")
    assert hook_count(model) == 0


@pytest.mark.portable
def test_cam_equals_gradcam_on_a_gap_network(shapes, pretrained):
    # y^c = sum_k w_k mean_ij A^k_ij  =>  dy/dA^k_ij = w_k / Z  =>  alpha_k = w_k / Z
    # (an identity of the mathematics: in float64)
    model = float64(pretrained("shapes-gap"))
    images = shapes.images.double()
    c = E.cam(model, images, shapes.labels, layer="features.10", upsampled=False)
    g = E.gradcam(model, images, shapes.labels, layer="features.10", upsampled=False)
    z = c.shape[-1] * c.shape[-2]
    assert_maps_close(g, torch.relu(c) / z, 1e-12, msg="Z Grad-CAM = ReLU(CAM)")
    weights = model.classifier[1].weight
    by_weights = E.cam(model, images, shapes.labels, layer="features.10", weights=weights)
    torch.testing.assert_close(by_weights, E.cam(model, images, shapes.labels, layer="features.10"))


def _pgc(kind, model, layer, x, target, **options):
    reference = out_of_place(model)
    with getattr(gradcam_lib, kind)(
        model=reference, target_layers=[reference.get_submodule(layer)], **options
    ) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])


@pytest.mark.portable
def test_gradcam_pp_equals_pytorch_grad_cam(reference_case):
    # pytorch-grad-cam adds 1e-6 to the denominator of alpha (vismap's eps, 0 by default: the
    # paper's formula); with the same eps the maps agree. It normalises each map to [0, 1] and
    # returns float32 (OpenCV's resize), whatever the input's dtype: even from float64 gradients
    # the two agree to float32's rounding of values in [0, 1] (measured 2e-7), hence 1e-6.
    name, model, layer, x, target, rel = reference_case
    got = E.normalize(E.gradcam_pp(model, x, target, layer=layer, eps=1e-6))[:, 0]
    if x.dtype == torch.float64:
        want = _pgc("GradCAMPlusPlus", model, layer, x, target)
        tolerance = 1e-6
    else:
        # torchvision's float32 models: given the same memory layout (vismap runs channels-last
        # on a CPU) the reference sees the same gradients, and the maps agree up to OpenCV's
        # float32 resize against torch's interpolate (measured 1.03e-5 on shapes-cnn in
        # float32); in NCHW their last bits differ, which g^2 and g^3 amplify
        want = _pgc("GradCAMPlusPlus", model, layer, fast_layout(x), target)
        tolerance = 2e-5
    assert_maps_close(got, torch.from_numpy(want).to(got.dtype), tolerance, msg=name)
    paper = E.normalize(E.gradcam_pp(model, x, target, layer=layer))[:, 0]
    difference = float((paper - got).abs().max())
    assert hook_count(model) == 0
    # the guard matters only where gradients are small (2 g^2 comparable to 1e-6)
    assert difference < 0.5, (name, difference)


class HalfPixelUpsampling(nn.Module):
    """Bilinear upsampling with half-pixel centres (``align_corners=False``), as vismap."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, maps):
        return nn.functional.interpolate(maps, size=self.size, mode="bilinear", align_corners=False)


@pytest.mark.portable
def test_scorecam_equals_pytorch_grad_cam(reference_case, monkeypatch):
    # By design pytorch-grad-cam upsamples the feature maps into masks with
    # nn.UpsamplingBilinear2d, which aligns corners; vismap (and its Grad-CAM, captum, OpenCV)
    # uses half-pixel centres. Given the same upsampling, the maps agree; as they are, they
    # differ, by how much is checked below (on every model but VGG-11).
    monkeypatch.setenv("TQDM_DISABLE", "1")
    name, model, layer, x, target, rel = reference_case
    # two images on the course's models; one on torchvision's (one masked forward of an
    # ImageNet-size network per feature map, per image and per library), cropped to 40x40: the
    # same masks and scores at any size, 0.4x the convolutions of 64x64, and ResNet-18's layer4
    # is still 2x2 (at 32x32 it would be 1x1, every mask a constant image)
    k = 1 if name in ("resnet18", "vgg11") else 2
    x, target = x[:k], target[:k]
    if name in ("resnet18", "vgg11"):
        x = x[..., :40, :40]
    # Wang et al. mask with rectified activation maps: at shapes-cnn's conv output (features.9)
    # the softmax-weighted sum of its maps is negative everywhere on these scenes (an empty map).
    # VGG-11 at its second conv (128 maps, 20x20), not its last (512 maps: 4x the forwards, the
    # costliest test of the suite): ResNet-18's layer4 already has 512 maps, and what VGG-11
    # adds, a conv whose output the next in-place ReLU overwrites, holds at every conv layer.
    layer = {"shapes-cnn": "features.10", "vgg11": "features.3"}.get(name, layer)
    as_shipped = None if name == "vgg11" else _pgc("ScoreCAM", model, layer, x, target)
    monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", HalfPixelUpsampling)
    want = _pgc("ScoreCAM", model, layer, x, target)
    got = E.normalize(E.scorecam(model, x, target, layer=layer))[:, 0]
    # float32 maps in [0, 1] out of pytorch-grad-cam (see Grad-CAM++ above)
    assert_maps_close(
        got, torch.from_numpy(want).to(got.dtype), 1e-6 if rel < 1e-6 else 1e-5, msg=name
    )
    assert hook_count(model) == 0
    assert (want.reshape(len(want), -1).max(1) > 0).all(), (name, "an empty map proves nothing")
    if as_shipped is not None:
        difference = np.abs(as_shipped - want).max()
        assert difference > 1e-4, (name, difference)


# ------------------------------------------------------------------ properties


def test_counterfactual_is_gradcam_of_the_negated_score(shapes, pretrained):
    model = pretrained("shapes-cnn")
    cf = E.gradcam(model, shapes.images, shapes.labels, layer="features.9", counterfactual=True)
    neg = E.gradcam(
        model,
        shapes.images,
        lambda out: -out.gather(1, shapes.labels[:, None])[:, 0],
        layer="features.9",
    )
    torch.testing.assert_close(cf, neg)


def test_zero_gradient_gives_zero_maps(shapes, pretrained):
    model = pretrained("shapes-gap")
    maps = E.gradcam(model, shapes.images, lambda out: out[:, 0] * 0, layer="features.10")
    assert maps.eq(0).all() and E.normalize(maps).eq(0).all()


# ------------------------------------------------------------------ bad input


def test_coarse_bad_input(shapes, pretrained):
    cnn = pretrained("shapes-cnn")
    with pytest.raises(ValueError, match="global average pooling.*use gradcam"):
        E.cam(cnn, shapes.images, 0, layer="features.10")
    with pytest.raises(ValueError, match=r"feature maps \(n, K, h, w\)"):
        E.gradcam(cnn, shapes.images, 0, layer="classifier.1")
    with pytest.raises(ValueError, match="empty batch"):
        E.gradcam(cnn, shapes.images[:0], 0, layer="features.9")
    with pytest.raises(ValueError, match=r"one score per sample, shape \(6,\)"):
        E.gradcam(cnn, shapes.images, lambda out: out[:, :2], layer="features.9")
    with pytest.raises(ValueError, match="unknown layer 'features.99'.*'features.9'"):
        E.gradcam(cnn, shapes.images, 0, layer="features.99")
    assert hook_count(cnn) == 0
