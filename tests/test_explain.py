"""vismap.explain (fine-grained methods): hand-computed cases, captum, reliability, bad input."""

import copy
import gc
import warnings

import pytest
import torch
from conftest import assert_maps_close, float64, hook_count
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap._running import fast_layout

captum_attr = pytest.importorskip("captum.attr")


# ------------------------------------------------------------------ hand-computed expectations

def tiny_mlp(inplace: bool = False) -> nn.Sequential:
    """x (1, 2, 1, 1) -> h = W x -> ReLU -> y = v . relu(h), W = [[1, -1], [-1, 1]], v = [-1, 2].

    For x = (2, 1): h = (1, -1), relu(h) = (1, 0), y = -1. The signal reaching the ReLU is
    R = v = (-1, 2); the three rules give R * [h > 0] = (-1, 0), R * [R > 0] = (0, 2) and both
    = (0, 0); times W^T: gradient (-1, 1), deconvnet (-2, 2), guided (0, 0).
    """
    lin1, lin2 = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        lin2.weight.copy_(torch.tensor([[-1.0, 2.0]]))
    return nn.Sequential(nn.Flatten(), lin1, nn.ReLU(inplace=inplace), lin2)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("method, expected", [
    (E.saliency, [-1.0, 1.0]), (E.deconvnet, [-2.0, 2.0]), (E.guided_backprop, [0.0, 0.0])])
def test_three_rules_by_hand(method, expected, inplace):
    x = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    got = method(tiny_mlp(inplace), x, 0)
    assert got.flatten().tolist() == expected


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


@pytest.mark.parametrize(("shape", "size"), [
    ((64, 1, 8, 8), (64, 64)),  # shapes-cnn's Grad-CAM: 8x8 -> 64x64
    ((2, 512, 7, 7), (112, 112)),  # Score-CAM's masks at ResNet-18's layer4
    ((3, 1, 5, 7), (33, 50)),  # scales that are not integers, and differ per axis
    ((2, 3, 20, 30), (7, 11)),  # smaller: bilinear without antialiasing, as F.interpolate
    ((1, 1, 1, 1), (5, 4)),  # a single cell
])
@pytest.mark.portable
def test_upsample_equals_torch_bilinear_interpolation(shape, size):
    g = torch.Generator().manual_seed(8)
    maps = torch.randn(shape, generator=g, dtype=torch.float64)
    want = torch.nn.functional.interpolate(maps, size=size, mode="bilinear",
                                           align_corners=False)
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


# ------------------------------------------------------------------ captum, on real architectures

@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=21)


def course_models():
    """The course's classifiers as float64 copies: the comparisons with captum claim the same
    mathematics, which float32 shows only to its rounding (whose last bits depend on the
    CPU's kernels)."""
    return {name: float64(vm.models.load_pretrained(name)) for name in vm.models.ARCHITECTURES}


PAIRS = [(E.saliency, "Saliency"), (E.deconvnet, "Deconvolution"),
         (E.guided_backprop, "GuidedBackprop")]


def _captum(name, model, x, target):
    method = getattr(captum_attr, name)(model)
    kwargs = {"abs": False} if name == "Saliency" else {}
    with pytest.warns(UserWarning) if name != "Saliency" else _nothing():
        return method.attribute(x.clone().requires_grad_(True), target=target, **kwargs)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.portable
@pytest.mark.parametrize("ours, theirs", PAIRS, ids=[p[1] for p in PAIRS])
def test_matches_captum_on_course_models_with_mixed_targets(ours, theirs, shapes):
    for name, model in course_models().items():
        target = shapes.labels.roll(1)  # a different class per image, not the true one
        images = shapes.images.double()
        got = ours(model, images, target)
        want = _captum(theirs, model, images, target)
        assert_maps_close(got, want, 1e-12, msg=name)
        assert hook_count(model) == 0


@pytest.mark.portable
@pytest.mark.slow
@pytest.mark.parametrize("ours, theirs", PAIRS, ids=[p[1] for p in PAIRS])
def test_matches_captum_on_torchvision_models_with_inplace_relus(ours, theirs, torchvision_models):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for name, model in torchvision_models.items():
        assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
        got = ours(model, x, torch.tensor([3, 7]))
        # float32 (a float64 VGG-11 is slow): captum is given x in vismap's layout
        # (channels-last on a CPU), so that both run the same kernels
        want = _captum(theirs, model, fast_layout(x), torch.tensor([3, 7]))
        assert_maps_close(got, want, 1e-5, msg=name)
        assert hook_count(model) == 0


@pytest.mark.portable
@pytest.mark.slow
def test_occlusion_matches_captum(shapes):
    model = float64(vm.models.load_pretrained("shapes-cnn"))  # the same mathematics: float64
    images = shapes.images[:2].double()  # two images: float64 convolutions are slow on a CPU
    for window, stride, baseline in [(8, 4, 0.0), (12, 6, 0.5), (7, 3, 0.2)]:
        got = E.occlusion(model, images, shapes.labels[:2], window=window, stride=stride,
                          baseline=baseline)
        want = captum_attr.Occlusion(model).attribute(
            images, sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride), baselines=baseline, target=shapes.labels[:2],
            perturbations_per_eval=16)  # batched: the same attributions, fewer forwards
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
            fast_layout(x), sliding_window_shapes=(3, 16, 16), strides=(3, 12, 12),
            baselines=0.3, target=torch.tensor([2, 9]))
        # an occlusion map is a difference of two scores: float32's rounding is relative to the
        # scores, which are larger than their difference (measured 1.4e-5 of the map's max)
        assert_maps_close(got, want[:, :1], 1e-4, msg=name)
        assert hook_count(model) == 0


# ------------------------------------------------------------------ the explicit deconvnet

@pytest.mark.portable
@pytest.mark.parametrize("name", ["shapes-cnn", "shapes-allconv",
                                  pytest.param("vgg11", marks=pytest.mark.slow)])
def test_zeiler_fergus_equals_the_deconvnet_rule(name, shapes, request):
    if name == "vgg11":  # the session's shared model: changed only in a copy
        model = copy.deepcopy(request.getfixturevalue("torchvision_models")[name])
    else:
        model = vm.models.load_pretrained(name)
    model = model.double()  # float64: the claim is an identity
    features = model.features
    x = shapes.images[:3].double()
    layers = [i for i, m in enumerate(features) if isinstance(m, (nn.Conv2d, nn.ReLU))]
    for index in layers[1::2] + [layers[-1]]:
        with torch.no_grad():
            a = features[:index + 1](x.clone())
        channel = int(a.flatten(2).amax(2).mean(0).argmax())  # an active feature map
        unit = a[:, channel].flatten(1).argmax(1)
        value = a[:, channel].flatten(1).gather(1, unit[:, None])[:, 0]
        explicit = E.zeiler_fergus(model, x, index, channel)

        def unit_score(out, unit=unit, channel=channel):
            return out[:, channel].flatten(1).gather(1, unit[:, None])[:, 0]

        rule = E.deconvnet(features[:index + 1], x, unit_score)
        assert_maps_close(explicit, value[:, None, None, None] * rule, 1e-12,
                          msg=f"{name} layer {index}")
        assert explicit.abs().sum() > 0


def test_zeiler_fergus_position_and_names(shapes):
    model = vm.models.load_pretrained("shapes-cnn")
    by_name = E.zeiler_fergus(model, shapes.images[:2], "features.9", 3, position=(4, 4))
    by_index = E.zeiler_fergus(model, shapes.images[:2], 9, 3, position=(4, 4))
    assert torch.equal(by_name, by_index)
    per_image = E.zeiler_fergus(model, shapes.images[:2], 9, 3,
                                position=torch.tensor([[4, 4], [1, 6]]))
    assert torch.equal(per_image[0], by_index[0]) and not torch.equal(per_image[1], by_index[1])
    torch.testing.assert_close(per_image[1:], E.zeiler_fergus(model, shapes.images[1:2], 9, 3,
                                                              position=(1, 6)))
    with pytest.raises(ValueError, match="out of range"):
        E.zeiler_fergus(model, shapes.images[:2], 9, 64)
    with pytest.raises(ValueError, match="outside the 8x8 map"):
        E.zeiler_fergus(model, shapes.images[:2], 9, 3, position=(8, 0))
    with pytest.raises(ValueError, match="direct member"):
        E.zeiler_fergus(model, shapes.images[:2], "classifier.1", 0)
    same = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding="same"), torch.nn.ReLU())
    with pytest.raises(ValueError, match="needs numeric padding to transpose layer 0"):
        E.zeiler_fergus(same, shapes.images[:2], 1, 0)


# ------------------------------------------------------------------ reliability

ALL = [E.saliency, E.deconvnet, E.guided_backprop,
       lambda m, x, t: E.occlusion(m, x, t, window=16, stride=16)]


@pytest.mark.parametrize("method", ALL)
def test_callable_target_equals_its_definition(method, shapes):
    model = vm.models.load_pretrained("shapes-gap")
    x = shapes.images[:3]
    margin = method(model, x, lambda out: out[:, 2] - out[:, 0])
    if method is ALL[0]:  # gradients are linear in the score
        torch.testing.assert_close(margin, method(model, x, 2) - method(model, x, 0))
    assert margin.shape[0] == 3 and torch.isfinite(margin).all()


@pytest.mark.parametrize("method", ALL)
def test_model_left_as_it_was(method, shapes):
    model = vm.models.load_pretrained("shapes-cnn").train()
    model.features[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(model.modules())
    with torch.no_grad():  # works inside no_grad too
        out = method(model, shapes.images[:2], 1)
    assert out.abs().sum() > 0
    assert model.training and all(m.training for m in model.modules())
    assert not model.features[0].weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "features.0.weight")
    assert list(model.modules()) == modules and hook_count(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ALL)
def test_no_hook_survives_an_exception(method, shapes):
    model = vm.models.load_pretrained("shapes-cnn").train()

    def failing_target(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        method(model, shapes.images[:2], failing_target)
    assert hook_count(model) == 0 and model.training


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # touching some torch objects warns of deprecations
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


@pytest.mark.slow
def test_no_growth_over_200_calls(shapes):
    model = vm.models.load_pretrained("shapes-gap")
    x = shapes.images[:1]
    E.guided_backprop(model, x, 0)
    tensors = live_tensors()
    for _ in range(200):
        E.guided_backprop(model, x, 0)
        E.deconvnet(model, x, 1)
    assert live_tensors() <= tensors + 2
    assert hook_count(model) == 0


def test_all_zero_gradient_gives_zeros_not_nan(shapes):
    model = vm.models.load_pretrained("shapes-gap")
    for method in ALL:
        maps = method(model, shapes.images[:2], lambda out: out[:, 0] * 0)
        assert torch.isfinite(maps).all() and maps.eq(0).all()
        assert E.normalize(maps).eq(0).all()


def test_dtype_and_device_follow_the_input(shapes):
    model = vm.models.load_pretrained("shapes-gap").double()
    out = E.guided_backprop(model, shapes.images[:2].double(), 0)
    assert out.dtype == torch.float64 and out.device == shapes.images.device


# ------------------------------------------------------------------ bad input

def test_bad_input_messages(shapes):
    model = vm.models.load_pretrained("shapes-cnn")
    x = shapes.images[:2]
    with pytest.raises(ValueError, match=r"\(n, C, H, W\).*\(3, 64, 64\)"):
        E.saliency(model, x[0], 0)
    with pytest.raises(ValueError, match="empty batch"):
        E.saliency(model, x[:0], 0)
    with pytest.raises(ValueError, match=r"out of range.*6 classes, 0 \.\. 5"):
        E.guided_backprop(model, x, 6)
    with pytest.raises(ValueError, match="out of range"):
        E.deconvnet(model, x, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="3 classes for a batch of 2"):
        E.saliency(model, x, [0, 1, 2])
    with pytest.raises(ValueError, match=r"one score per sample, shape \(2,\)"):
        E.saliency(model, x, lambda out: out)
    with pytest.raises(ValueError, match="larger than the 64x64 image"):
        E.occlusion(model, x, 0, window=65)
    with pytest.raises(ValueError, match="positive int"):
        E.occlusion(model, x, 0, window=8, stride=0)
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(2))
    no_relu(x)
    with pytest.raises(ValueError, match="needs nn.ReLU modules"):
        E.guided_backprop(no_relu, x, 0)
    assert hook_count(no_relu) == 0


def test_layer_names_are_checked():
    from vismap._layers import resolve_layer

    model = vm.models.load_pretrained("shapes-cnn")
    assert resolve_layer(model, "features.9") == ("features.9", model.features[9])
    assert resolve_layer(model, model.features[9]) == ("features.9", model.features[9])
    with pytest.raises(ValueError) as err:
        resolve_layer(model, "features.99")
    assert "'features.9'" in str(err.value) and "'classifier.1'" in str(err.value)
    with pytest.raises(ValueError, match="not a module of this model"):
        resolve_layer(model, nn.Conv2d(1, 1, 1))


def test_occlusion_splits_many_images_into_batches():
    model = vm.models.load_pretrained("shapes-cnn")
    d = vm.data.make_shapes(10, seed=8)
    baseline = torch.rand_like(d.images)
    whole = vm.explain.occlusion(model, d.images, d.labels, window=16, stride=16,
                                 baseline=baseline, batch_size=1000)
    split = vm.explain.occlusion(model, d.images, d.labels, window=16, stride=16,
                                 baseline=baseline, batch_size=4)
    torch.testing.assert_close(split, whole)


# ------------------------------------------------------------------ the fast paths equal the plain ones


@pytest.mark.portable
def test_fast_relu_rules_equal_their_masks():
    # _core computes each ReLU rule's backward R * mask(y, R) with fused kernels; it must equal
    # the readable mask of RULES, including at y = 0 and R = 0 (the ties of the rules).
    from vismap.explain.gradients import _MASKED, RULES

    y = torch.tensor([[-1.0, 0.0, 2.0], [3.0, 0.0, -0.5]]).repeat(2, 1)
    r = torch.tensor([[0.5, -1.0, 0.0], [-2.0, 0.0, 1.5]]).repeat_interleave(2, 0)
    for rule in RULES:
        want = torch.where(RULES[rule](y, r), r, torch.zeros_like(r))
        assert torch.equal(_MASKED[rule](y.clone(), r.clone()), want), rule


@pytest.mark.portable
def test_smoothgrad_default_base_equals_the_wrapped_gradient(shapes):
    # the default base (the gradient) takes a fast path; any other base the general one
    model = vm.models.load_pretrained("shapes-cnn")
    x, t = shapes.images[:3], shapes.labels[:3]
    fast = E.smoothgrad(model, x, t, samples=4, sigma=0.1, generator=torch.Generator().manual_seed(3))
    general = E.smoothgrad(model, x, t, samples=4, sigma=0.1,
                           method=lambda m, xx, tt: E.saliency(m, xx, tt),
                           generator=torch.Generator().manual_seed(3))
    assert_maps_close(fast, general, 1e-6)  # float32: two kernels for one product


def test_explaining_restores_modes_after_a_switch_or_an_exception():
    model = vm.models.load_pretrained("shapes-cnn")
    model.classifier.train()  # a mixed state: features in eval mode, the head in train mode
    model.features[0].weight.requires_grad_(False)
    before = [(m.training) for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="inside"):
        with vm._running.explaining(model):
            model.features.train()
            raise RuntimeError("inside")
    with vm._running.explaining(model):
        model.eval()
        model.features[3].weight.requires_grad_(False)
    assert [m.training for m in model.modules()] == before
    assert [p.requires_grad for p in model.parameters()] == grads
    assert hook_count(model) == 0
