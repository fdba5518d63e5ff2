"""vismap.explain.deconvnet: the explicit Zeiler-Fergus deconvnet equals the deconvnet ReLU
rule times the unit's activation; positions, names and bad input."""

import copy

import pytest
import torch
from conftest import assert_maps_close, hook_count, raises_own
from torch import nn

import vismap as vm
from vismap import explain as E


@pytest.fixture(scope="module")
def shapes():
    return vm.data.make_shapes(6, seed=21)


@pytest.mark.portable
@pytest.mark.parametrize(
    "name", ["shapes-cnn", "shapes-allconv", pytest.param("vgg11", marks=pytest.mark.slow)]
)
def test_zeiler_fergus_equals_the_deconvnet_rule(name, shapes, request, pretrained):
    if name == "vgg11":  # the session's shared model: changed only in a copy
        model = copy.deepcopy(request.getfixturevalue("torchvision_models")[name])
    else:
        model = pretrained(name)
    model = model.double()  # float64: the claim is an identity
    features = model.features
    x = shapes.images[:3].double()
    layers = [i for i, m in enumerate(features) if isinstance(m, (nn.Conv2d, nn.ReLU))]
    for index in layers[1::2] + [layers[-1]]:
        with torch.no_grad():
            a = features[: index + 1](x.clone())
        channel = int(a.flatten(2).amax(2).mean(0).argmax())  # an active feature map
        unit = a[:, channel].flatten(1).argmax(1)
        value = a[:, channel].flatten(1).gather(1, unit[:, None])[:, 0]
        explicit = E.zeiler_fergus(model, x, index, channel)

        def unit_score(out, unit=unit, channel=channel):
            return out[:, channel].flatten(1).gather(1, unit[:, None])[:, 0]

        rule = E.deconvnet(features[: index + 1], x, unit_score)
        assert_maps_close(
            explicit, value[:, None, None, None] * rule, 1e-12, msg=f"{name} layer {index}"
        )
        assert explicit.abs().sum() > 0


def test_zeiler_fergus_position_and_names(shapes, pretrained):
    model = pretrained("shapes-cnn")
    by_name = E.zeiler_fergus(model, shapes.images[:2], "features.9", 3, position=(4, 4))
    by_index = E.zeiler_fergus(model, shapes.images[:2], 9, 3, position=(4, 4))
    assert torch.equal(by_name, by_index)
    per_image = E.zeiler_fergus(
        model, shapes.images[:2], 9, 3, position=torch.tensor([[4, 4], [1, 6]])
    )
    assert torch.equal(per_image[0], by_index[0]) and not torch.equal(per_image[1], by_index[1])
    torch.testing.assert_close(
        per_image[1:], E.zeiler_fergus(model, shapes.images[1:2], 9, 3, position=(1, 6))
    )
    with pytest.raises(ValueError, match="out of range"):
        E.zeiler_fergus(model, shapes.images[:2], 9, 64)
    with pytest.raises(ValueError, match="outside the 8x8 map"):
        E.zeiler_fergus(model, shapes.images[:2], 9, 3, position=(8, 0))
    with pytest.raises(ValueError, match="direct member"):
        E.zeiler_fergus(model, shapes.images[:2], "classifier.1", 0)
    same = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding="same"), torch.nn.ReLU())
    with pytest.raises(ValueError, match="needs numeric padding to transpose layer 0"):
        E.zeiler_fergus(same, shapes.images[:2], 1, 0)


# ------------------------------------------------------------------ bad input


MAPS3 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


BAD = {
    "zeiler_fergus channel 1.5": (
        lambda m: E.zeiler_fergus(m, MAPS3, 9, 1.5),
        ValueError,
        "channel",
    ),
    "zeiler_fergus channel True": (
        lambda m: E.zeiler_fergus(m, MAPS3, 9, True),
        ValueError,
        "channel",
    ),
    "zeiler_fergus channel -1": (lambda m: E.zeiler_fergus(m, MAPS3, 9, -1), ValueError, "channel"),
    "zeiler_fergus channel 99": (
        lambda m: E.zeiler_fergus(m, MAPS3, 9, 99),
        ValueError,
        "channel 99 out of range",
    ),
    "zeiler_fergus layer True": (lambda m: E.zeiler_fergus(m, MAPS3, True, 0), TypeError, "layer"),
    "zeiler_fergus layer 99": (
        lambda m: E.zeiler_fergus(m, MAPS3, 99, 0),
        ValueError,
        "layer index 99",
    ),
    "zeiler_fergus position (1, 2, 3)": (
        lambda m: E.zeiler_fergus(m, MAPS3, 9, 0, position=(1, 2, 3)),
        ValueError,
        "position",
    ),
    "zeiler_fergus model None": (lambda m: E.zeiler_fergus(None, MAPS3, 9, 0), TypeError, "model"),
    "zeiler_fergus x float64": (
        lambda m: E.zeiler_fergus(m, MAPS3.double(), 9, 0),
        ValueError,
        "x is torch.float64",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, pretrained):
    model = pretrained("shapes-cnn")
    call, error, word = BAD[case]
    raises_own(error, (word,), lambda: call(model))
    assert hook_count(model) == 0
