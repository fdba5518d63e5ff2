"""vismap.explain.lrp (explain/relevance.py, _chain.py): layer-wise relevance propagation.

Hand-computed maps of a tiny two-layer network for every rule; equality with zennit's rules
(a ``LayerMapComposite`` and a ``Gradient`` attributor) and captum's ``LRP`` on the course's
networks and torchvision's VGG-11 (with and without batch norm) in float64; where a reference
computes something else by design, the difference is tested. The course's identities: LRP-0 on
a ReLU network is gradient x input; the conserving rules conserve on a network without biases,
and the biases absorb a measured share on the course's. Models that are not a chain of
supported modules are refused by name; bad options get vismap's own errors.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_maps_close, float64, hook_count, raises_own
from torch import nn

import vismap as vm
from vismap import explain as E

zennit_rules = pytest.importorskip("zennit.rules")
zennit_composites = pytest.importorskip("zennit.composites")
zennit_attribution = pytest.importorskip("zennit.attribution")
zennit_types = pytest.importorskip("zennit.types")
zennit_canonizers = pytest.importorskip("zennit.torchvision")
captum_attr = pytest.importorskip("captum.attr")
captum_rules = pytest.importorskip("captum.attr._utils.lrp_rules")
torchvision = pytest.importorskip("torchvision")

COURSE = ["shapes-cnn", "shapes-gap", "shapes-allconv"]


# ------------------------------------------------------------------ a tiny network, by hand


def tiny() -> nn.Sequential:
    """x (1, 2, 1, 1) -> h = W x + b -> ReLU -> y = v . relu(h) + c, with W = [[2, -1], [1, 1]],
    b = (0.5, -1), v = (3, -0.5), c = 0.25. For x = (1, 2): h = (0.5, 2), y = 0.75."""
    first, second = nn.Linear(2, 2), nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[2.0, -1.0], [1.0, 1.0]]))
        first.bias.copy_(torch.tensor([0.5, -1.0]))
        second.weight.copy_(torch.tensor([[3.0, -0.5]]))
        second.bias.copy_(torch.tensor([0.25]))
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), second).double()


X = torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1)

# Worked by hand, layer by layer (R = y = 0.75 on the output; relevance of the hidden layer,
# then of the pixels):
# LRP-0:  R_h = a v / z R = (0.5*3, 2*-0.5) = (1.5, -1); s = R_h / h = (3, -0.5);
#         R_x = x * W^T s = (1*(6 - 0.5), 2*(-3 - 0.5)) = (5.5, -7)
# eps .25: z = 0.75 + 0.25 -> R_h = (1.125, -0.75); s = (1.125 / 0.75, -0.75 / 2.25);
#         R_x = (1*(3 - 1/3), 2*(-1.5 - 1/3)) = (8/3, -11/3)
# gamma .5: v' = (4.5, -0.5), c' = 0.375, z' = 1.625 -> R_h = (27/26, -6/13);
#         W' = [[3, -1], [1.5, 1.5]], b' = (0.75, -1), h' = (1.75, 3.5) -> s = (54/91, -12/91);
#         R_x = (3*54 - 1.5*12, 2*(-54 - 1.5*12)) / 91 = (144/91, -144/91)
# z+:     z+ = 1.5 + 0.25 (b+) -> R_h = (1.5 / 1.75 * 0.75, 0) = (9/14, 0); unit 1: (2, -2) and
#         b+ = 0.5, z+ = 2.5 -> R_x = (2 / 2.5 * 9/14, 0) = (18/35, 0)
# a2b1:   z+ = 1.75, z- = -1 -> R_h = (2 * 9/14, -(-1/-1) * 0.75) = (9/7, -3/4); unit 1: z+ = 2.5,
#         z- = -2; unit 2: (1, 2), b = -1: z+ = 3, z- = -1 (its bias alone);
#         R_x = (2 * 0.8 * 9/7 + 2 * 1/3 * -3/4, -(9/7) + 2 * 2/3 * -3/4) = (109/70, -16/7)
# z^B on [0, 3] below LRP-0: unit 1: x w - l w+ - h w- = (2, -2 + 3) = (2, 1), z = 3; unit 2:
#         (1, 2), z = 3 -> R_x = (2/3 * 1.5 - 1/3, 1/3 * 1.5 - 2/3) = (2/3, -1/6)
BY_HAND = [
    ({"rule": "0"}, (5.5, -7.0)),
    ({"rule": "epsilon", "epsilon": 0.25}, (8 / 3, -11 / 3)),
    ({"rule": "gamma", "gamma": 0.5}, (144 / 91, -144 / 91)),
    ({"rule": "zplus"}, (18 / 35, 0.0)),
    ({"rule": "alphabeta", "alpha": 1.0, "beta": 0.0}, (18 / 35, 0.0)),
    ({"rule": "alphabeta", "alpha": 2.0, "beta": 1.0}, (109 / 70, -16 / 7)),
    ({"rule": "0", "first": "zbox", "low": 0.0, "high": 3.0}, (2 / 3, -1 / 6)),
]


@pytest.mark.portable
@pytest.mark.parametrize("options, want", BY_HAND, ids=[str(o) for o, _ in BY_HAND])
def test_tiny_network_by_hand(options, want):
    got = E.lrp(tiny(), X, 0, **options)
    assert got.dtype == torch.float64 and got.shape == X.shape
    torch.testing.assert_close(got.flatten(), torch.tensor(want, dtype=torch.float64))


@pytest.mark.portable
def test_the_derivation_is_the_library():
    # the epsilon rule written out for the tiny network, layer by layer, equals the library
    net, eps = tiny(), 0.1  # not a power of two: a float32 epsilon would show
    w, b, v, c = net[1].weight, net[1].bias, net[3].weight, net[3].bias
    with torch.no_grad():
        x = X.flatten(1)
        h = x @ w.T + b
        a = h.relu()
        y = a @ v.T + c
        r_a = a * ((y / (y + eps * y.sign())) @ v)  # R_j = a_j sum_k w_jk R_k / (z_k + eps)
        r_x = x * ((r_a / (h + eps * h.sign())) @ w)
    torch.testing.assert_close(E.lrp(net, X, 0, epsilon=eps).flatten(1), r_x)


# ------------------------------------------------------------------ zennit and captum


def zennit_rule(rule: str, epsilon: float = 0.25, gamma: float = 0.25):
    """zennit's rule of the same name, with vismap's stabiliser (a z of exactly 0 passes
    nothing on) where vismap's rule has no epsilon: zennit's default adds 1e-6, which moves
    a small z by up to 1e-6 / |z| relative."""
    same = lambda z: torch.where(z == 0, torch.inf, z)  # noqa: E731
    return {
        "0": zennit_rules.Epsilon(epsilon=same),
        "epsilon": zennit_rules.Epsilon(epsilon=epsilon),
        "gamma": zennit_rules.Gamma(gamma=gamma, stabilizer=same),
        "zplus": zennit_rules.ZPlus(stabilizer=same),
        "alphabeta": zennit_rules.AlphaBeta(alpha=2.0, beta=1.0, stabilizer=same),
    }[rule], same


def zennit_lrp(model, x, target, rule, first=None, canonizers=()):
    """zennit's attribution of the class's logit: its rule on every convolution and linear
    layer, ``Norm`` (LRP-0) on average pooling, activations passed, max-pooling and flattening
    as the gradient; the relevance put on the output is the logit (``one-hot * output``)."""
    layer_rule, same = zennit_rule(rule)
    types = zennit_types
    layer_map = [
        (types.Activation, zennit_rules.Pass()),
        (types.AvgPool, zennit_rules.Norm(stabilizer=same)),
        (types.Convolution, layer_rule),
        (types.Linear, layer_rule),
    ]
    if first is None:
        composite = zennit_composites.LayerMapComposite(layer_map, canonizers=list(canonizers))
    else:
        composite = zennit_composites.SpecialFirstLayerMapComposite(
            layer_map,
            [(types.Linear, zennit_rules.ZBox(0.0, 1.0, stabilizer=same))],
            canonizers=list(canonizers),
        )
    index = torch.as_tensor(target)

    def logit(out):
        return torch.eye(out.shape[1], dtype=out.dtype)[index] * out

    with zennit_attribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), logit)
    return relevance


@pytest.fixture(scope="module")
def course(pretrained) -> dict[str, nn.Module]:
    return {name: float64(pretrained(name)) for name in COURSE}


@pytest.fixture(scope="module")
def scenes():
    s = vm.data.make_shapes(3, seed=41)
    return s.images.double(), s.labels


@pytest.mark.portable
@pytest.mark.parametrize("rule", E.LRP_RULES)
@pytest.mark.parametrize("name", COURSE)
def test_equals_zennit_on_the_course_networks(name, rule, course, scenes):
    model, (x, target) = course[name], scenes
    got = E.lrp(model, x, target, rule=rule)
    want = zennit_lrp(model, x, target, rule)
    if name == "shapes-allconv" and rule == "gamma":
        # By design: zennit's Gamma is the generalised rule (Andeol et al. 2021): where the
        # plain z_k < 0 it favours the *negative* weights, w + gamma w^-. The paper's rule,
        # vismap's, always adds gamma w^+. On a ReLU network the two meet wherever relevance
        # flows (a unit with z_k < 0 is off and receives none), except at a layer without a ReLU
        # after it: shapes-allconv's class maps, averaged into the logit, are negative in
        # places. There they differ; zennit's own machinery with the paper's rule agrees.
        assert float((got - want).abs().max()) > 1e-3 * float(want.abs().max())
        want = zennit_lrp_paper_gamma(model, x, target)
    assert_maps_close(got, want, 1e-10, msg=f"{name} {rule}")
    assert hook_count(model) == 0


def zennit_lrp_paper_gamma(model, x, target, gamma=0.25):
    """zennit's ``BasicHook`` with its ``GammaMod`` (``w + gamma w^+``, the bias too) and no
    input split: Montavon et al. 2019's gamma rule in zennit's machinery."""
    from zennit.core import BasicHook
    from zennit.rules import GammaMod

    same = lambda z: torch.where(z == 0, torch.inf, z)  # noqa: E731
    rule = BasicHook(
        input_modifiers=[lambda a: a],
        param_modifiers=[GammaMod(gamma, min=0.0)],
        output_modifiers=[lambda z: z],
        gradient_mapper=lambda grad, outputs: [grad / same(outputs[0])],
        reducer=lambda inputs, grads: inputs[0] * grads[0],
    )
    composite = zennit_composites.LayerMapComposite(
        [
            (zennit_types.Activation, zennit_rules.Pass()),
            (zennit_types.AvgPool, zennit_rules.Norm(stabilizer=same)),
            (zennit_types.Convolution, rule),
            (zennit_types.Linear, rule),
        ]
    )
    index = torch.as_tensor(target)
    with zennit_attribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(
            x.clone().requires_grad_(True),
            lambda out: torch.eye(out.shape[1], dtype=out.dtype)[index] * out,
        )
    return relevance


@pytest.mark.portable
def test_zbox_first_layer_equals_zennit(course, scenes):
    # zennit's ZBox keeps the bias in its first term and adds b+ and b- to the other two: they
    # cancel (b - b+ - b- = 0), the paper's rule without bias, as vismap's
    model, (x, target) = course["shapes-cnn"], scenes
    for rule in ("epsilon", "zplus"):
        got = E.lrp(model, x, target, rule=rule, first="zbox")
        layer_rule, same = zennit_rule(rule)
        composite = zennit_composites.SpecialFirstLayerMapComposite(
            [
                (zennit_types.Activation, zennit_rules.Pass()),
                (zennit_types.Convolution, layer_rule),
                (zennit_types.Linear, layer_rule),
            ],
            [(zennit_types.Convolution, zennit_rules.ZBox(0.0, 1.0, stabilizer=same))],
        )
        with zennit_attribution.Gradient(model, composite) as attributor:
            _, want = attributor(
                x.clone().requires_grad_(True),
                lambda out: torch.eye(out.shape[1], dtype=out.dtype)[target] * out,
            )
        assert_maps_close(got, want, 1e-10, msg=rule)


def captum_model(model: nn.Module, rule: str, epsilon: float = 0.25, copy_it=True) -> nn.Module:
    """A copy of ``model`` with captum's rules set as vismap's ``rule`` applies them.

    By design, captum differs in three ways: (1) its default rule, EpsilonRule with 1e-9, also
    goes on max- and average-pooling (``R a_w / (z + 1e-9)``, the winner-take-all to 1e-9 /
    |z|); (2) it has no rule for ``nn.Flatten`` (an error), which gets its EpsilonRule, the
    identity to 1e-9 / |a|; (3) its GammaRule and Alpha1_Beta0_Rule keep the bias unmodified
    (the paper: ``b + gamma b^+``, ``b^+``) or zero it (``set_bias_to_zero``): compared here
    on a copy without biases, where all agree."""
    reference = copy.deepcopy(model) if copy_it else model
    for m in reference.modules():
        if isinstance(m, nn.Flatten):
            m.rule = captum_rules.EpsilonRule()  # type: ignore[assignment]
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.rule = {  # type: ignore[assignment]
                "epsilon": lambda: captum_rules.EpsilonRule(epsilon),
                "0": lambda: captum_rules.EpsilonRule(1e-9),
                "gamma": lambda: captum_rules.GammaRule(0.25, set_bias_to_zero=True),
                "zplus": lambda: captum_rules.Alpha1_Beta0_Rule(set_bias_to_zero=True),
            }[rule]()
    return reference


def without_biases(model: nn.Module) -> nn.Module:
    bare = copy.deepcopy(model)
    with torch.no_grad():
        for m in bare.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
    return bare


@pytest.mark.portable
@pytest.mark.parametrize("rule", ["epsilon", "0", "gamma", "zplus"])
@pytest.mark.parametrize("name", COURSE)
def test_equals_captum_lrp(name, rule, course, scenes):
    model, (x, target) = course[name], scenes
    if rule in ("gamma", "zplus"):
        model = without_biases(model)
    got = E.lrp(model, x, target, rule=rule)
    want = captum_attr.LRP(captum_model(model, rule)).attribute(
        x.clone().requires_grad_(True), target=target
    )
    # captum's 1e-9 on every layer (pooling included) moves a small z by 1e-9 / |z|: measured
    # up to 1e-6 of the map's maximum on these networks (vismap's rules but epsilon have no
    # stabiliser), so float64 agreement is to that, not to rounding
    assert_maps_close(got, want.detach(), 1e-5, msg=f"{name} {rule}")


@pytest.mark.portable
def test_captum_keeps_the_bias_in_gamma_and_zplus(course, scenes):
    # the difference by design, shown: with the course's biases, captum's GammaRule (bias kept
    # as it is) and Alpha1_Beta0_Rule (bias kept, not b+) give other maps than the paper's
    model, (x, target) = course["shapes-cnn"], scenes
    for rule, captum_rule in (
        ("gamma", lambda: captum_rules.GammaRule(0.25)),
        ("zplus", lambda: captum_rules.Alpha1_Beta0_Rule()),
    ):
        reference = captum_model(model, rule)
        for m in reference.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.rule = captum_rule()  # type: ignore[assignment]
        want = captum_attr.LRP(reference).attribute(x.clone().requires_grad_(True), target=target)
        got = E.lrp(model, x, target, rule=rule)
        assert float((got - want).abs().max()) > 1e-3 * float(want.abs().max()), rule


# ------------------------------------------------------------------ torchvision's VGG-11


@pytest.fixture(scope="module")
def vggs() -> dict[str, nn.Module]:
    """torchvision's VGG-11 and VGG-11-BN, 10 classes, random weights, built in float64 (no
    float32 copy: 129 M parameters each); the batch norms given random statistics (fresh ones
    are the identity, which would test nothing) and ``eps = 0``: zennit's canonizer leaves each
    batch norm it folds as ``x / sqrt(1 + eps)``, not the identity, so that its model computes
    another function, ``(1 + eps)^(-1/2)`` per batch norm (measured 2e-5 of the logits on
    VGG-11-BN); vismap's folding is exact (its chain's logits equal the model's to 3e-16)."""
    models = {}
    dtype = torch.get_default_dtype()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.set_default_dtype(torch.float64)
        try:
            for name in ("vgg11", "vgg11_bn"):
                model = getattr(torchvision.models, name)(num_classes=10).eval()
                with torch.no_grad():
                    for m in model.modules():
                        if isinstance(m, nn.BatchNorm2d):
                            m.running_mean.uniform_(-0.2, 0.2)
                            m.running_var.uniform_(0.5, 2.0)
                            m.weight.uniform_(0.5, 1.5)
                            m.bias.uniform_(-0.2, 0.2)
                            m.eps = 0.0
                models[name] = model
        finally:
            torch.set_default_dtype(dtype)
    return models


@pytest.mark.slow
@pytest.mark.portable
@pytest.mark.parametrize("rule", ["0", "epsilon", "zplus"])
def test_equals_zennit_on_torchvision_vgg11(rule, vggs):
    # What VGG adds to the course's networks - batch norm folded, adaptive pooling to 7x7,
    # torch.flatten, dropout - is the same for every rule; gamma and alpha-beta (checked on the
    # course's networks) are left out here: zennit copies the 129 M weights for each of their
    # four or five parameter modifiers, 20-30 s a rule on two cores.
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for name, model in vggs.items():
        logits = model(x)
        target = logits.argmax(1)  # a positive logit: the rules' domain
        canonizers = [zennit_canonizers.VGGCanonizer()] if name == "vgg11_bn" else []
        before = {k: v.clone() for k, v in model.state_dict().items()}
        modules = list(model.modules())
        got = E.lrp(model, x, target, rule=rule)
        want = zennit_lrp(model, x, target, rule, canonizers=canonizers)
        assert_maps_close(got, want, 1e-8, msg=f"{name} {rule}")
        # batch norm folded into copies: the caller's model is as it was
        assert list(model.modules()) == modules and hook_count(model) == 0
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
@pytest.mark.portable
def test_equals_captum_on_torchvision_vgg11(vggs):
    model = vggs["vgg11"]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = model(x).argmax(1)
    got = E.lrp(model, x, target, rule="epsilon")
    try:  # the rules set on the shared model (a copy costs 1 GB), removed after
        want = captum_attr.LRP(captum_model(model, "epsilon", copy_it=False)).attribute(
            x.clone().requires_grad_(True), target=target
        )
    finally:
        for m in model.modules():
            if hasattr(m, "rule"):
                del m.rule
    # captum's 1e-9 on max-pooling moves a small z by 1e-9 / |z| (the random VGG's are small)
    assert_maps_close(got, want.detach(), 1e-5, msg="vgg11 epsilon")


# ------------------------------------------------------------------ the course's identities


@pytest.mark.portable
@pytest.mark.parametrize("rule", ["zplus", "alphabeta", "epsilon"])
def test_negative_inputs_equal_zennit(rule, course, scenes):
    # z+ and alpha-beta count the positive contributions (a_j w_jk)^+ = a^+ w^+ + a^- w^-, as
    # zennit does: on inputs below zero (x - 0.5) the sign split of the inputs matters
    model, (x, target) = course["shapes-cnn"], scenes
    got = E.lrp(model, x - 0.5, target, rule=rule)
    assert_maps_close(got, zennit_lrp(model, x - 0.5, target, rule), 1e-10, msg=rule)


@pytest.mark.portable
@pytest.mark.parametrize("name", COURSE)
def test_lrp_0_is_gradient_times_input_on_a_relu_network(name, course, scenes):
    model, (x, target) = course[name], scenes
    assert_maps_close(
        E.lrp(model, x, target, rule="0"), E.gradient_x_input(model, x, target), 1e-12, msg=name
    )


@pytest.mark.portable
def test_batch_norm_is_folded_exactly():
    # a batch norm with a large eps and running statistics, in float64: the folded chain's LRP-0
    # is gradient x input of the model as it is (batch norm included), and the model is left
    # with its modules and buffers
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4, eps=0.1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 5),
            nn.BatchNorm1d(5, eps=0.05),
            nn.ReLU(),
            nn.Linear(5, 3),
        ).double()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.2, 3.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
        x = torch.rand(4, 3, 6, 6, dtype=torch.float64)
    model.eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    got = E.lrp(model, x, [0, 1, 2, 0], rule="0")
    assert_maps_close(got, E.gradient_x_input(model, x, [0, 1, 2, 0]), 1e-12, msg="BN folded")
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 1


@pytest.mark.portable
def test_captum_treats_batch_norm_as_a_layer_of_its_own():
    # By design: captum's LRP gives a batch norm its own epsilon rule; vismap (and zennit's
    # canonizer) fold it into the convolution first. Under LRP-0 the two agree: for two linear
    # layers in a row, a_j w_jk / z_k * (z_k g_k / y_k) R_k = a_j (w_jk g_k) / y_k R_k, the
    # folded layer's share. Under LRP-epsilon they differ: captum adds epsilon at both layers.
    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = (
            nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(4 * 6 * 6, 3),
            )
            .double()
            .eval()
        )
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.3, 0.3)
            model[1].running_var.uniform_(0.5, 2.0)
            model[1].weight.uniform_(0.5, 1.5)
            model[1].bias.uniform_(-0.3, 0.3)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = model(x).argmax(1)
    for rule, epsilon, same in (("0", 1e-9, True), ("epsilon", 0.25, False)):
        got = E.lrp(model, x, target, rule=rule)
        reference = captum_model(model, rule)
        reference[1].rule = captum_rules.EpsilonRule(epsilon)  # type: ignore[assignment]
        want = captum_attr.LRP(reference).attribute(x.clone().requires_grad_(True), target=target)
        close = float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
        assert close == same, rule


CONSERVING = [
    {"rule": "0"},
    {"rule": "gamma"},
    {"rule": "zplus"},
    {"rule": "zplus", "first": "zbox"},
    {"rule": "gamma", "first": "zbox"},
]


@pytest.mark.portable
@pytest.mark.parametrize("options", CONSERVING, ids=str)
@pytest.mark.parametrize("name", COURSE)
def test_conservation_on_a_network_without_biases(name, options, course, scenes):
    # sum_i R_i = f_c(x): what the output holds, the pixels hold; alpha-beta conserves only
    # where a unit has both positive and negative contributions, epsilon absorbs by design
    model, (x, target) = without_biases(course[name]), scenes
    logit = model(x).gather(1, target[:, None])[:, 0]
    total = E.lrp(model, x, target, **options).sum((1, 2, 3))
    torch.testing.assert_close(total, logit, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", COURSE)
def test_biases_absorb_relevance_on_the_course_networks(name, course, scenes):
    # The measurement: the share of the logit that does not reach the pixels, 1 - sum R / f_c,
    # with the course's biases (printed with pytest -s). It is the biases' (and epsilon's):
    # without them the same rules conserve exactly (above).
    model, (x, target) = course[name], scenes
    logit = model(x).gather(1, target[:, None])[:, 0]
    shares = {}
    for rule in ("0", "epsilon", "zplus"):
        share = 1 - E.lrp(model, x, target, rule=rule).sum((1, 2, 3)) / logit
        shares[rule] = share
        print(f"{name} {rule}: absorbed {share.mean():+.2f} (per image {share.tolist()})")
    assert all(share.abs().max() > 0.01 for share in shares.values())


def test_alphabeta_1_0_is_zplus_and_rules_differ(course, scenes):
    model, (x, target) = course["shapes-cnn"], scenes
    zplus = E.lrp(model, x, target, rule="zplus")
    torch.testing.assert_close(E.lrp(model, x, target, rule="alphabeta", alpha=1, beta=0), zplus)
    maps = [E.lrp(model, x, target, rule=r) for r in E.LRP_RULES]
    for i in range(len(maps)):
        for j in range(i):
            assert not torch.allclose(maps[i], maps[j]), (E.LRP_RULES[i], E.LRP_RULES[j])


def test_float32_matches_float64_and_callable_target(course, scenes):
    model, (x, target) = course["shapes-gap"], scenes
    want = E.lrp(model, x, target, rule="epsilon")
    got = E.lrp(copy.deepcopy(model).float(), x.float(), target, rule="epsilon")
    assert got.dtype == torch.float32
    assert_maps_close(got, want, 1e-5, msg="float32")
    # a callable score: the relevance put on the output is f * d score / d f
    margin = E.lrp(model, x, lambda out: out[:, 2] - out[:, 0], rule="0")
    both = E.lrp(model, x, 2, rule="0") - E.lrp(model, x, 0, rule="0")
    assert_maps_close(margin, both, 1e-12, msg="callable")


# ------------------------------------------------------------------ refused models and options


class FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x), self.b(x)], 1)[:, :2].flatten(1))


class Skipping(nn.Module):
    """Only supported modules, but not a chain: the ReLU's output is thrown away, and the
    layer after it reads the convolution's output (relevance through the ReLU would be wrong)."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 2, 3), nn.ReLU()
        self.flat, self.fc = nn.Flatten(), nn.Linear(2 * 6 * 6, 2)

    def forward(self, x):
        a = self.conv(x)
        self.relu(a)
        return self.fc(self.flat(a))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            x = x * 2
        return self.fc(x.flatten(1))


REFUSED = {
    "resnet18 (a residual add)": (
        lambda: torchvision.models.resnet18(num_classes=2),
        ("'add'", "add"),
    ),
    "functional F.relu": (FunctionalReLU, ("F.relu",)),
    "unknown activation": (
        lambda: nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 2)),
        ("Tanh",),
    ),
    "attention": (
        lambda: nn.Sequential(nn.Flatten(2), nn.MultiheadAttention(64, 1)),
        ("MultiheadAttention", "flatten"),
    ),
    "a batch norm after a ReLU": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2)
        ),
        ("batch norm",),
    ),
    "two branches joined by torch.cat": (Branching, ("'cat'",)),
    "a layer whose output is not the next one's input": (Skipping, ("no branches",)),
    "untraceable": (DataDependent, ("torch.fx",)),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_model_that_is_not_a_chain_is_refused_by_name(case):
    build, words = REFUSED[case]
    model = build().eval()
    x = torch.rand(1, 3, 8, 8) if case != "resnet18 (a residual add)" else torch.rand(1, 3, 32, 32)
    message = raises_own(ValueError, words, lambda: E.lrp(model, x, 0))
    if case in ("resnet18 (a residual add)", "functional F.relu", "unknown activation"):
        assert "Conv2d, Linear" in message  # and says what is supported
    assert hook_count(model) == 0


BAD = [
    ({"rule": "lrp"}, ValueError, "unknown rule 'lrp'"),
    ({"rule": 0}, ValueError, "rule"),
    ({"rule": "Epsilon"}, ValueError, "'epsilon'"),
    ({"epsilon": -0.1}, ValueError, "epsilon"),
    ({"epsilon": 0}, ValueError, "rule='0'"),
    ({"gamma": -1}, ValueError, "gamma"),
    ({"rule": "alphabeta", "alpha": 2, "beta": 2}, ValueError, "alpha - beta must be 1"),
    ({"rule": "alphabeta", "alpha": 0, "beta": -1}, ValueError, "beta"),
    ({"first": "box"}, ValueError, "first must be None"),
    ({"first": "zbox", "low": 1.0, "high": 0.0}, ValueError, "low must be below high"),
    ({"first": "zbox", "low": 0.0, "high": 0.0}, ValueError, "low must be below high"),
    ({"first": "zbox", "low": torch.zeros(2, 1, 1)}, ValueError, "low"),
    ({"first": "zbox", "high": 0.5}, ValueError, "first='zbox' needs every pixel"),
    ({"first": "zbox", "low": None}, TypeError, "low"),
]


@pytest.mark.parametrize("options, error, word", BAD, ids=[str(o) for o, _, _ in BAD])
def test_bad_options_get_the_librarys_error(options, error, word, course, scenes):
    model, (x, target) = course["shapes-cnn"], scenes
    raises_own(error, (word,), lambda: E.lrp(model, x, target, **options))


def test_zbox_bounds_per_channel_and_a_first_layer_that_is_not_on_pixels(course, scenes):
    model, (x, target) = course["shapes-cnn"], scenes
    per_channel = E.lrp(model, x, target, first="zbox", low=torch.zeros(3, 1, 1), high=1.0)
    torch.testing.assert_close(per_channel, E.lrp(model, x, target, first="zbox"))
    pooled_first = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()
    raises_own(
        ValueError,
        ("first layer",),
        lambda: E.lrp(pooled_first, x[..., :8, :8].contiguous(), 0, first="zbox"),
    )
