"""vismap.explain.paths: SmoothGrad and Integrated Gradients. Hand-computed cases, the
quadrature rules, captum's IntegratedGradients and NoiseTunnel, IG's completeness at its
default of 256 steps on held-out scenes, bad input."""

import copy
import inspect
import math

import pytest
import torch
from conftest import Linear, Squares, assert_maps_close, hook_count

import vismap as vm
from vismap import explain as E
from vismap._running import fast_layout

captum_attr = pytest.importorskip("captum.attr")


# ------------------------------------------------------------------ hand-computed expectations


def test_integrated_gradients_by_hand():
    x = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    # f = sum x^2 from the zero baseline: IG = x * int 2 alpha x d alpha = x^2, exactly for a
    # Gauss-Legendre rule of any size (the integrand is linear in alpha)
    for steps in (1, 2, 7):
        torch.testing.assert_close(E.integrated_gradients(Squares(), x, 0, steps=steps), x**2)
    # the left Riemann sum with n points: sum_k k/n * 1/n = (n - 1) / (2n), so IG = x^2 (n-1)/n
    got = E.integrated_gradients(Squares(), x, 0, steps=4, rule="riemann_left")
    torch.testing.assert_close(got, x**2 * 3 / 4)
    # a linear model: IG = (x - x') w for any baseline x', and sums to f(x) - f(x')
    model, baseline = Linear(), torch.full((1, 1, 2, 2), 0.25)
    got = E.integrated_gradients(model, x, 1, baseline=baseline, steps=3)
    torch.testing.assert_close(got, (x - baseline) * model.w[1].view(1, 1, 2, 2).detach())
    with torch.no_grad():
        delta = model(x)[0, 1] - model(baseline)[0, 1]
    torch.testing.assert_close(got.sum(), delta)


def test_path_rules_by_hand():
    nodes, weights = E.path_rule(2)  # Gauss-Legendre: 1/2 -+ 1/(2 sqrt 3), weights 1/2
    torch.testing.assert_close(
        nodes,
        torch.tensor([0.5 - 0.5 / math.sqrt(3), 0.5 + 0.5 / math.sqrt(3)], dtype=torch.float64),
    )
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    for steps in (1, 5, 64):  # exact for polynomials of degree 2 steps - 1
        nodes, weights = E.path_rule(steps)
        for degree in range(2 * steps):
            assert float((weights * nodes**degree).sum()) == pytest.approx(1 / (degree + 1))
    # the trapezoid rule: h (f_0 / 2 + f_1 + f_2 + f_3 / 2), h = 1 / 3; its weights sum to 1
    nodes, weights = E.path_rule(4, "riemann_trapezoid")
    assert nodes.tolist() == [0, 1 / 3, 2 / 3, 1]
    assert weights.tolist() == [1 / 6, 1 / 3, 1 / 3, 1 / 6]
    assert E.path_rule(4, "riemann_middle")[0].tolist() == [1 / 8, 3 / 8, 5 / 8, 7 / 8]


def test_smoothgrad_by_hand():
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    # the gradient of sum x^2 is 2x: SmoothGrad is 2 (x + mean of the noise), with the noise
    # drawn as documented: image i, copy j is draw i * samples + j
    noise = torch.randn(2 * 5, 1, 2, 2, generator=torch.Generator().manual_seed(7)) * 0.3
    want = 2 * (x + noise.view(2, 5, 1, 2, 2).mean(1))
    got = E.smoothgrad(
        Squares(),
        x,
        0,
        samples=5,
        sigma=0.3,
        generator=torch.Generator().manual_seed(7),
        batch_size=3,
    )
    torch.testing.assert_close(got, want)
    # sigma = 0 is the base method itself; a linear model's gradient ignores the noise
    torch.testing.assert_close(E.smoothgrad(Squares(), x, 0, samples=3, sigma=0.0), 2 * x)
    model = Linear()
    torch.testing.assert_close(
        E.smoothgrad(model, x, torch.tensor([0, 1]), samples=4),
        E.saliency(model, x, torch.tensor([0, 1])),
    )
    # any base method, by name or as a function, with its options
    g = torch.Generator().manual_seed(3)
    by_name = E.smoothgrad(Squares(), x, 0, samples=4, generator=g, method="gradient_x_input")
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(8, 1, 2, 2, generator=g) * 0.15
    noisy = x.repeat_interleave(4, 0) + noise
    torch.testing.assert_close(by_name, (2 * noisy * noisy).view(2, 4, 1, 2, 2).mean(1))


# ------------------------------------------------------------------ captum


@pytest.mark.portable
def test_integrated_gradients_equal_captum(reference_case):
    name, model, _, x, target, rel = reference_case
    if x.dtype == torch.float64:
        # A grey baseline with a little noise: a constant image (alpha = 0 of the trapezoid's
        # path from a constant baseline) makes max-pooling windows tie exactly in float64, and
        # which tied input gets the gradient depends on the memory layout (vismap runs
        # channels-last, captum NCHW): both are subgradients, so a tie-free path is compared.
        grey = 0.3 + 0.1 * torch.rand((1, *x.shape[1:]), generator=torch.Generator().manual_seed(3))
        grey, given = grey.double(), x
    else:
        # torchvision's float32 models get x in vismap's layout (channels-last), so that both
        # libraries run the same kernels: in NCHW, VGG-11's float32 gradients (random weights,
        # tiny scores) differ from channels-last ones by 5e-3 of the map's maximum, rounding
        # that flips ReLU and max-pool switches, not a difference of method
        grey, given = 0.3, fast_layout(x)
    # 8 and 7 points: the same quadrature as at any count, and with batch_size=20 (6 points of
    # each of the 3 images per pass) each rule's sum runs over a full and a partial pass; every
    # point is a forward and backward pass of VGG-11 per image and library (15 points: 2 s)
    for steps, rule, baseline in [(8, "gausslegendre", 0.0), (7, "riemann_trapezoid", grey)]:
        want = captum_attr.IntegratedGradients(model).attribute(
            given, baselines=baseline, target=target, n_steps=steps, method=rule
        )
        got = E.integrated_gradients(
            model, x, target, baseline=baseline, steps=steps, rule=rule, batch_size=20
        )
        if rule == "riemann_trapezoid":  # captum's weights 1/m, halved at the ends, sum to
            got = got * (steps - 1) / steps  # (m - 1)/m; vismap's, 1/(m - 1), sum to 1
        # captum rounds its quadrature weights to float32 (``torch.tensor(step_sizes).float()``),
        # so in float64 the two agree to float32's relative rounding of a weight, 6e-8, not 1e-16.
        # In float32, VGG-11 with random weights (scores of 5e-4) is fragile along the path:
        # rounding that differs with the batch size and the CPU's kernels flips ReLU and
        # max-pool switches, measured up to 8.5e-3 of the map's maximum under other dispatch
        # settings; a wrong method (weights, rule, a missing x - x') is off by order 1.
        tolerance = max(rel, 1e-6) if x.dtype == torch.float64 else 2e-2
        assert_maps_close(got, want, tolerance, msg=f"{name} {rule}")
    assert hook_count(model) == 0


@pytest.mark.portable
def test_smoothgrad_equals_captum_noise_tunnel_given_the_same_noise(reference_case):
    name, model, _, x, target, rel = reference_case
    # captum draws its noise in float32 whatever the input's dtype (its standard deviation is a
    # float32 tensor), and a float64 draw from the same seed is another sample: the same noise
    # exists only in float32, so this comparison runs there, to float32's tolerance
    # (and, as for every float32 comparison here, captum gets x in vismap's layout,
    # channels-last on a CPU, so that both run the same kernels)
    # the course's float64 models as a float32 copy; torchvision's are float32 already and are
    # used as they are (this test does not change them; copying VGG-11 costs 0.25 s)
    if x.dtype == torch.float64:
        model = copy.deepcopy(model).float()
    x, rel = x.float(), max(rel, 1e-4)
    # 3 noisy copies of each image: the same average as with any number (each copy is a pass
    # of VGG-11 per image and library)
    with torch.random.fork_rng():
        torch.manual_seed(11)  # captum draws from torch's global generator
        want = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
            fast_layout(x).requires_grad_(True),
            nt_type="smoothgrad",
            nt_samples=3,
            stdevs=0.2,
            target=target,
            abs=False,
        )
    got = E.smoothgrad(
        model, x, target, samples=3, sigma=0.2, generator=torch.Generator().manual_seed(11)
    )
    assert_maps_close(got, want, rel, msg=name)
    assert hook_count(model) == 0


# ------------------------------------------------------------------ completeness and the fast paths


@pytest.fixture(scope="module")
def course(pretrained):
    return {name: pretrained(name) for name in ("shapes-cnn", "shapes-gap", "shapes-allconv")}


def completeness_errors(model, d, steps=None):
    """``|sum IG - (f(x) - f(x'))| / |f(x) - f(x')|`` per image, from a black baseline, at
    ``steps`` points (the library's default when None)."""
    black = torch.zeros_like(d.images)
    options = {} if steps is None else {"steps": steps}
    ig = E.integrated_gradients(model, d.images, d.labels, **options)
    with torch.no_grad():
        delta = (model(d.images) - model(black)).gather(1, d.labels[:, None])[:, 0]
    return (ig.sum((1, 2, 3)) - delta).abs() / delta.abs()


COMPLETENESS = {"shapes-gap": (0.01, 0.05), "shapes-allconv": (0.02, 0.075)}


@pytest.mark.slow
def test_integrated_gradients_completeness_on_held_out_images(course):
    """Sundararajan et al.'s completeness axiom: the attributions sum to f(x) - f(x'), up to
    the quadrature's error, which shrinks as the steps grow. A ReLU network's integrand is
    piecewise constant along the path, so the error falls only about as 1/m: the default is 256
    points (at 64 the medians were 2-7 %)."""
    default = inspect.signature(E.integrated_gradients).parameters["steps"].default
    assert default == 256
    d = vm.data.make_shapes(24, seed=vm.data.HELDOUT_SEED)
    for name, (median, most) in COMPLETENESS.items():
        model = course[name]
        coarse, fine = completeness_errors(model, d, 64), completeness_errors(model, d)
        assert float(fine.median()) <= 0.5 * float(coarse.median()), (name, coarse, fine)
        assert float(fine.median()) <= median and float(fine.max()) <= most, (name, fine)


@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=21)


@pytest.mark.portable
def test_smoothgrad_default_base_equals_the_wrapped_gradient(shapes, pretrained):
    # the default base (the gradient) takes a fast path; any other base the general one
    model = pretrained("shapes-cnn")
    x, t = shapes.images[:3], shapes.labels[:3]
    fast = E.smoothgrad(
        model, x, t, samples=4, sigma=0.1, generator=torch.Generator().manual_seed(3)
    )
    general = E.smoothgrad(
        model,
        x,
        t,
        samples=4,
        sigma=0.1,
        method=lambda m, xx, tt: E.saliency(m, xx, tt),
        generator=torch.Generator().manual_seed(3),
    )
    assert_maps_close(fast, general, 1e-6)  # float32: two kernels for one product


# ------------------------------------------------------------------ bad input


def test_bad_input_messages(course):
    model, x = course["shapes-cnn"], vm.data.make_shapes(2, seed=1).images
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        E.smoothgrad(model, x, 0, samples=0)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0, got -0.1"):
        E.smoothgrad(model, x, 0, sigma=-0.1)
    with pytest.raises(ValueError, match="unknown method 'nope'; valid names: saliency"):
        E.smoothgrad(model, x, 0, method="nope")
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        E.integrated_gradients(model, x, 0, steps=0)
    with pytest.raises(
        ValueError,
        match=r"baseline must be a number, one image \(3, 64, 64\) "
        r"or one per image \(2, 3, 64, 64\); got shape "
        r"\(1, 3, 32, 32\)",
    ):
        E.integrated_gradients(model, x, 0, baseline=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown integration rule 'simpson'"):
        E.integrated_gradients(model, x, 0, rule="simpson")
    assert hook_count(model) == 0
