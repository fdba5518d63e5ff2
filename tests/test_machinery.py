"""The shared machinery of the methods and metrics: vismap._targets (the one target
normaliser), vismap._checks (the one baseline parser), vismap._layers and vismap._running
(explaining restores what it changed)."""

import pytest
import torch
from conftest import hook_count
from torch import nn

import vismap as vm
from vismap._checks import baseline_like
from vismap._targets import per_sample, repeat_target, sample_target, slice_target


def test_one_target_normaliser_for_every_form():
    score = lambda out: out[:, 0]  # noqa: E731
    for same in (3, torch.tensor(3), score):  # one target for every sample: kept as it is
        assert per_sample(same) is None
        assert repeat_target(same, 4) is same and repeat_target(same, 4, interleave=True) is same
        assert slice_target(same, 1, 2, 3) is same and sample_target(same, 1, 3) is same
    for each in ([0, 1, 2], (0, 1, 2), torch.tensor([0, 1, 2])):  # one class per sample
        assert per_sample(each).tolist() == [0, 1, 2]
        assert repeat_target(each, 2).tolist() == [0, 1, 2, 0, 1, 2]  # torch.cat([x] * 2)
        assert repeat_target(each, 2, interleave=True).tolist() == [0, 0, 1, 1, 2, 2]
        assert slice_target(each, 1, 3, 3).tolist() == [1, 2]
        assert sample_target(each, 2, 3).dim() == 0 and int(sample_target(each, 2, 3)) == 2
    assert slice_target([0, 1], 0, 1, 3) == [0, 1]  # not one per sample of this batch: kept


def test_one_baseline_parser():
    x = torch.rand(2, 3, 4, 4)
    for baseline in (
        0.5,
        torch.tensor(0.5),
        torch.full((3, 1, 1), 0.5),
        torch.full((3, 4, 4), 0.5),
        torch.full((2, 3, 4, 4), 0.5),
    ):
        assert torch.equal(baseline_like(baseline, x), torch.full_like(x, 0.5)), baseline
    with pytest.raises(ValueError, match=r"broadcastable to x \(2, 3, 4, 4\) \(one colour"):
        baseline_like(torch.zeros(5), x)
    # whole images only (a path's start): a number, one image or one per image
    assert baseline_like(torch.zeros(1, 3, 4, 4), x, whole_images=True).shape == x.shape
    with pytest.raises(ValueError, match=r"a number, one image \(3, 4, 4\) or one per image"):
        baseline_like(torch.zeros(3, 1, 1), x, whole_images=True)
    with pytest.raises(TypeError, match="baseline must be a number or a tensor"):
        baseline_like("black", x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        baseline_like(float("nan"), x)


def test_layer_names_are_checked(pretrained):
    from vismap._layers import resolve_layer

    model = pretrained("shapes-cnn")
    assert resolve_layer(model, "features.9") == ("features.9", model.features[9])
    assert resolve_layer(model, model.features[9]) == ("features.9", model.features[9])
    with pytest.raises(ValueError) as err:
        resolve_layer(model, "features.99")
    assert "'features.9'" in str(err.value) and "'classifier.1'" in str(err.value)
    with pytest.raises(ValueError, match="not a module of this model"):
        resolve_layer(model, nn.Conv2d(1, 1, 1))


def test_explaining_restores_modes_after_a_switch_or_an_exception(pretrained):
    model = pretrained("shapes-cnn")
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
