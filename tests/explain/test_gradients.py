"""vismap.explain.gradients: saliency, deconvnet, guided backprop (the ReLU rules) and gradient
x input. Hand-computed cases, captum on the course's and torchvision's models, the fused ReLU
rules against their masks, reliability, bad input."""

import gc
import warnings

import pytest
import torch
from conftest import Linear, assert_maps_close, float64, hook_count, tiny_mlp
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap._running import fast_layout

captum_attr = pytest.importorskip("captum.attr")


# ------------------------------------------------------------------ hand-computed expectations


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize(
    "method, expected",
    [(E.saliency, [-1.0, 1.0]), (E.deconvnet, [-2.0, 2.0]), (E.guided_backprop, [0.0, 0.0])],
)
def test_three_rules_by_hand(method, expected, inplace):
    x = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    got = method(tiny_mlp(inplace), x, 0)
    assert got.flatten().tolist() == expected


def test_gradient_x_input_by_hand():
    x = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    assert E.gradient_x_input(tiny_mlp(), x, 0).flatten().tolist() == [-2.0, 1.0]
    # a linear model without bias: the map sums to the score
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    model = Linear()
    with torch.no_grad():
        model.b.zero_()
        score = model(x)[:, 1]
    torch.testing.assert_close(E.gradient_x_input(model, x, 1).sum((1, 2, 3)), score)


# ------------------------------------------------------ the fused ReLU rules equal their masks


@pytest.mark.portable
def test_fast_relu_rules_equal_their_masks():
    # gradients.py computes each ReLU rule's backward R * mask(y, R) with fused kernels; it must
    # equal the readable mask of RULES, including at y = 0 and R = 0 (the ties of the rules).
    from vismap.explain.gradients import _MASKED, RULES

    y = torch.tensor([[-1.0, 0.0, 2.0], [3.0, 0.0, -0.5]]).repeat(2, 1)
    r = torch.tensor([[0.5, -1.0, 0.0], [-2.0, 0.0, 1.5]]).repeat_interleave(2, 0)
    for rule in RULES:
        want = torch.where(RULES[rule](y, r), r, torch.zeros_like(r))
        assert torch.equal(_MASKED[rule](y.clone(), r.clone()), want), rule


# ------------------------------------------------------------------ captum, on real architectures


@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=21)


def course_models(pretrained):
    """The course's classifiers as float64 copies: the comparisons with captum claim the same
    mathematics, which float32 shows only to its rounding (whose last bits depend on the
    CPU's kernels)."""
    return {name: float64(pretrained(name)) for name in vm.models.ARCHITECTURES}


PAIRS = [
    (E.saliency, "Saliency"),
    (E.deconvnet, "Deconvolution"),
    (E.guided_backprop, "GuidedBackprop"),
]


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
def test_matches_captum_on_course_models_with_mixed_targets(ours, theirs, shapes, pretrained):
    for name, model in course_models(pretrained).items():
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
def test_gradient_x_input_equals_captum(reference_case):
    name, model, _, x, target, rel = reference_case
    given = x.clone() if x.dtype == torch.float64 else fast_layout(x).clone()  # as for IG
    want = captum_attr.InputXGradient(model).attribute(given.requires_grad_(True), target=target)
    got = E.gradient_x_input(model, x, target)
    assert_maps_close(got, want, rel, msg=name)


# ------------------------------------------------------------------ reliability


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # touching some torch objects warns of deprecations
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


@pytest.mark.slow
def test_no_growth_over_200_calls(shapes, pretrained):
    model = pretrained("shapes-gap")
    x = shapes.images[:1]
    E.guided_backprop(model, x, 0)
    tensors = live_tensors()
    for _ in range(200):
        E.guided_backprop(model, x, 0)
        E.deconvnet(model, x, 1)
    assert live_tensors() <= tensors + 2
    assert hook_count(model) == 0


def test_dtype_and_device_follow_the_input(shapes, pretrained):
    model = pretrained("shapes-gap").double()
    out = E.guided_backprop(model, shapes.images[:2].double(), 0)
    assert out.dtype == torch.float64 and out.device == shapes.images.device


# ------------------------------------------------------------------ bad input


def test_bad_input_messages(shapes, pretrained):
    model = pretrained("shapes-cnn")
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
