"""vismap.explain (coarse-grained: CAM, Grad-CAM, LayerCAM, guided Grad-CAM) and vismap.metrics."""

import copy

import numpy as np
import pytest
import torch
from conftest import assert_maps_close, float64, hook_count
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap import metrics as M
from vismap._running import fast_layout

gradcam_lib = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=31)


# (model, layer, image size): the course's networks, and torchvision's (random weights, their
# in-place ReLUs kept), which are slow on a CPU.
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
        return float64(vm.models.load_pretrained(name))
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
    lib = getattr(gradcam_lib, theirs)(model=reference, target_layers=[
        reference.get_submodule(layer)])
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
    want = captum_attr.LayerGradCam(model, module).attribute(x, target=[0, 5],
                                                             relu_attributions=True)
    got = E.gradcam(model, x, [0, 5], layer=layer, upsampled=False)
    assert_maps_close(got, want, rel, msg=f"{name} Grad-CAM")
    with pytest.warns(UserWarning):
        want = captum_attr.GuidedGradCam(model, module).attribute(
            x, target=[0, 5], interpolate_mode="bilinear")
    got = E.guided_gradcam(model, x, [0, 5], layer=layer)
    assert_maps_close(got, want, rel, msg=f"{name} guided Grad-CAM")
    assert hook_count(model) == 0


@pytest.mark.portable
def test_cam_equals_gradcam_on_a_gap_network(shapes):
    # y^c = sum_k w_k mean_ij A^k_ij  =>  dy/dA^k_ij = w_k / Z  =>  alpha_k = w_k / Z
    # (an identity of the mathematics: in float64)
    model = float64(vm.models.load_pretrained("shapes-gap"))
    images = shapes.images.double()
    c = E.cam(model, images, shapes.labels, layer="features.10", upsampled=False)
    g = E.gradcam(model, images, shapes.labels, layer="features.10", upsampled=False)
    z = c.shape[-1] * c.shape[-2]
    assert_maps_close(g, torch.relu(c) / z, 1e-12, msg="Z Grad-CAM = ReLU(CAM)")
    weights = model.classifier[1].weight
    by_weights = E.cam(model, images, shapes.labels, layer="features.10", weights=weights)
    torch.testing.assert_close(by_weights, E.cam(model, images, shapes.labels,
                                                 layer="features.10"))


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


def test_counterfactual_is_gradcam_of_the_negated_score(shapes):
    model = vm.models.load_pretrained("shapes-cnn")
    cf = E.gradcam(model, shapes.images, shapes.labels, layer="features.9", counterfactual=True)
    neg = E.gradcam(model, shapes.images, lambda out: -out.gather(1, shapes.labels[:, None])[:, 0],
                    layer="features.9")
    torch.testing.assert_close(cf, neg)


def test_coarse_methods_leave_the_model_alone(shapes):
    model = vm.models.load_pretrained("shapes-cnn").train()
    for method in (E.gradcam, E.layercam, E.guided_gradcam):
        with torch.no_grad():
            out = method(model, shapes.images[:2], 1, layer="features.9")
        assert torch.isfinite(out).all() and out.shape[-2:] == (64, 64)
        assert model.training and hook_count(model) == 0
        assert all(p.requires_grad and p.grad is None for p in model.parameters())

    def boom(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        E.gradcam(model, shapes.images[:2], boom, layer="features.9")
    assert hook_count(model) == 0 and model.training


def test_zero_gradient_gives_zero_maps(shapes):
    model = vm.models.load_pretrained("shapes-gap")
    maps = E.gradcam(model, shapes.images, lambda out: out[:, 0] * 0, layer="features.10")
    assert maps.eq(0).all() and E.normalize(maps).eq(0).all()


def test_coarse_bad_input(shapes):
    cnn = vm.models.load_pretrained("shapes-cnn")
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


# ------------------------------------------------------------------ metrics

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
