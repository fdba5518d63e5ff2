"""Bad input, for every method of the registry: the library's own error, and nothing changed.

Every bad input gets a ValueError or a TypeError raised by vismap itself (not torch's text from
deep inside a forward) whose message names the argument; and a good input leaves the caller's
``x`` and model exactly as they were - also for a model whose first module is an in-place ReLU
fed a channels-last ``x``, and inside ``torch.no_grad()`` and ``torch.inference_mode()``.

The table of bad inputs runs against every method of ``vm.explain.METHODS`` (a method added to
the registry is covered without a change here), called through its registry entry with the
options each ``Method`` declares; options are checked for every method whose function takes
them (its signature says which).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import hook_count
from torch import nn

import vismap as vm
from vismap import explain as E

M = vm.metrics
NAMES = list(E.METHODS)
FAST = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2},
        "occlusion": {"window": 16, "stride": 16}}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: vm.models.load_pretrained(name)
            for name in ("shapes-cnn", "shapes-gap", "sprites-vae")}


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    shapes = vm.data.make_shapes(2, seed=9)
    return {"shapes": shapes.images, "labels": shapes.labels,
            "sprites": vm.data.make_sprites(2, seed=2).images}


@dataclass
class Setting:
    """What a registry entry runs on: a model, a layer, two images and their target."""

    entry: E.Method
    model: nn.Module
    layer: str
    x: torch.Tensor
    target: object

    @property
    def vae(self) -> bool:
        return "VAE" in self.entry.needs

    def run(self, **replaced):
        """The entry on this setting, with any of its parts (model, x, target, layer) replaced
        and options added to its fast ones."""
        call = {"model": self.model, "x": self.x, "target": self.target, "layer": self.layer,
                **FAST.get(self.entry.name, {}), **replaced}
        return self.entry(call.pop("model"), call.pop("x"), call.pop("target"), **call)


def setting(name: str, models, images) -> Setting:
    entry = E.METHODS[name]
    if "VAE" in entry.needs:
        return Setting(entry, models["sprites-vae"], "encoder.3", images["sprites"], [0, 4])
    if "GAP" in entry.needs:
        return Setting(entry, models["shapes-gap"], "features.10", images["shapes"],
                       images["labels"])
    return Setting(entry, models["shapes-cnn"], "features.10", images["shapes"],
                   images["labels"])


def raises_own(error: type[Exception], words: tuple[str, ...], call: Callable[[], object]):
    """``call()`` raises exactly ``error``, from vismap's own code, with a message that names
    one of ``words`` (the argument)."""
    with pytest.raises(Exception) as info:
        call()
    assert info.type is error, f"{info.type.__name__}: {info.value}"
    assert "vismap" in str(info.traceback[-1].path), f"raised by {info.traceback[-1].path}"
    message = str(info.value)
    assert any(word in message for word in words), (words, message)
    return message


# ------------------------------------------------------------------ the table of bad inputs

@dataclass
class Case:
    """One bad input: ``make(setting)`` gives the replaced parts (None: not applicable), the
    error and the words one of which the message must contain; ``vae_*`` where a VAE's entry
    (whose target is latent dimensions, ``dims``) answers otherwise."""

    make: Callable[[Setting], dict | None]
    error: type[Exception]
    words: tuple[str, ...]
    vae_error: type[Exception] | None = None
    vae_words: tuple[str, ...] | None = None


def _too_small(s: Setting) -> dict:
    # shapes-cnn's head takes only 64x64; a pooled network takes 32x32 but not 4x4
    side = 4 if "GAP" in s.entry.needs else 32
    return {"x": s.x[..., :side, :side].contiguous()}


def _with_nan(s: Setting) -> dict:
    x = s.x.clone()
    x[1, 0, 3, 4] = float("nan")
    return {"x": x}


def _bad_target(value) -> Callable[[Setting], dict]:
    return lambda s: {"target": value}


CASES: dict[str, Case] = {
    "x numpy": Case(lambda s: {"x": s.x.numpy()}, TypeError, ("x",)),
    "x list": Case(lambda s: {"x": s.x.tolist()}, TypeError, ("x",)),
    "x one image (3-D)": Case(lambda s: {"x": s.x[0]}, ValueError, ("x[None]",)),
    "x empty batch": Case(lambda s: {"x": s.x[:0]}, ValueError, ("x",)),
    "x uint8": Case(lambda s: {"x": (s.x * 255).to(torch.uint8)}, ValueError, ("x",)),
    "x bool": Case(lambda s: {"x": s.x > 0.5}, ValueError, ("x",)),
    "x NaN": Case(_with_nan, ValueError, ("x has 1 NaN",)),
    "x float64, model float32": Case(lambda s: {"x": s.x.double()}, ValueError,
                                     ("x is torch.float64",)),
    "x float16": Case(lambda s: {"x": s.x.half()}, ValueError, ("x is torch.float16",)),
    "x too many channels": Case(lambda s: {"x": s.x.repeat(1, 2, 1, 1)}, ValueError,
                                ("x has",), vae_words=("expects images of shape (n, 1, 64",)),
    "x a size the model cannot take": Case(_too_small, ValueError, ("x:", "x "),
                                           vae_words=("expects images of shape (n, 1, 64",)),
    "model None": Case(lambda s: {"model": None}, TypeError, ("model",), vae_words=("vae",)),
    "model a function": Case(lambda s: {"model": lambda x: x}, TypeError, ("model",),
                             vae_words=("vae",)),
    "target None": Case(_bad_target(None), TypeError, ("target",), vae_words=("dims",)),
    "target a string": Case(_bad_target("circle"), TypeError, ("target",),
                            vae_words=("dims",)),
    "target a dict": Case(_bad_target({0: 1}), TypeError, ("target",), vae_words=("dims",)),
    "target a float": Case(_bad_target(1.5), ValueError, ("target",), TypeError, ("dims",)),
    "target a bool": Case(_bad_target(True), ValueError, ("target",), TypeError, ("dims",)),
    "target 2-D (n, 1)": Case(_bad_target(torch.tensor([[1], [2]])), ValueError,
                              ("target has shape (2, 1)",), vae_words=("dims",)),
    "target one-hot (n, classes)": Case(_bad_target(torch.eye(6)[:2]), ValueError,
                                        ("target has shape (2, 6)",), vae_words=("dims",)),
    "target float tensor": Case(_bad_target(torch.tensor([0.0, 1.0])), ValueError,
                                ("target",), vae_words=("dims",)),
    "target bool tensor": Case(_bad_target(torch.tensor([True, False])), ValueError,
                               ("target",), vae_words=("dims",)),
    "target out of range": Case(_bad_target(99), ValueError,
                                ("target class(es) [99] out of range",),
                                vae_words=("dims [99] out of range",)),
    "target negative": Case(lambda s: None if s.vae else {"target": -1}, ValueError,
                            ("target",)),  # a negative latent dimension counts from the end
    "target one per image, too many": Case(
        lambda s: None if s.vae else {"target": [0, 1, 2]}, ValueError,
        ("target has 3 classes for a batch of 2",)),
    "target empty": Case(_bad_target([]), ValueError, ("target has 0 classes",),
                         vae_words=("dims is empty",)),
    "target callable, wrong shape": Case(
        _bad_target(lambda out: out[:, :2]), ValueError, ("target",), TypeError, ("dims",)),
    "layer unknown": Case(lambda s: {"layer": "nope"} if s.entry.layered else None,
                          ValueError, ("unknown layer 'nope'",)),
    "layer an int": Case(lambda s: {"layer": 3} if s.entry.layered else None, TypeError,
                         ("layer",)),
    "layer not the model's": Case(
        lambda s: {"layer": nn.Conv2d(3, 3, 1)} if s.entry.layered else None, ValueError,
        ("not a module of this model",)),
    "layer fully connected": Case(
        lambda s: ({"layer": "encoder.9" if s.vae else "classifier.1"} if s.entry.layered
                   else None), ValueError, ("must output feature maps",)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_gets_the_librarys_error(name, case, models, images):
    s = setting(name, models, images)
    spec = CASES[case]
    parts = spec.make(s)
    if parts is None:
        pytest.skip(f"{case!r} does not apply to {name}")
    error = spec.vae_error if s.vae and spec.vae_error else spec.error
    words = spec.vae_words if s.vae and spec.vae_words else spec.words
    raises_own(error, words, lambda: s.run(**parts))
    assert hook_count(s.model) == 0 and not s.model.training


# Bad values of an option, for every method whose function takes that option.
OPTIONS: dict[str, list[tuple[object, type[Exception], str]]] = {
    "samples": [(0, ValueError, "samples"), (2.5, ValueError, "samples")],
    "sigma": [(-1.0, ValueError, "sigma"), (float("nan"), ValueError, "sigma")],
    "steps": [(0, ValueError, "steps"), (True, ValueError, "steps")],
    "batch_size": [(0, ValueError, "batch_size"), (-1, ValueError, "batch_size")],
    "window": [(0, ValueError, "window"), (2.5, ValueError, "window"),
               (True, ValueError, "window"), ((8, 8, 8), ValueError, "window"),
               (65, ValueError, "window 65x65 is larger than the 64x64 image")],
    "stride": [(0, ValueError, "stride"), (17, ValueError, "stride 17x17 is larger than"),
               (100, ValueError, "stride 100x100 is larger than")],
    "baseline": [("black", TypeError, "baseline"), (None, TypeError, "baseline"),
                 (float("nan"), ValueError, "baseline"),
                 (torch.zeros(5), ValueError, "baseline")],
    "upsampled": [("no", TypeError, "upsampled")],
    "counterfactual": [("no", TypeError, "counterfactual")],
    "eps": [(-1.0, ValueError, "eps")],
    "method": [(42, TypeError, "method"), ("nope", ValueError, "unknown method 'nope'")],
    "rule": [("nope", ValueError, "rule 'nope'")],
    "statistic": [("nope", ValueError, "statistic 'nope'")],
    "mode": [("nope", ValueError, "mode 'nope'")],
    "weights": [(np.zeros((6, 64)), TypeError, "weights"),
                (torch.zeros(6, 3), ValueError, "weights must have shape (classes, 64)")],
    "generator": [(0, TypeError, "generator")],
}
OPTION_CASES = [(name, option, i) for name in NAMES
                for option in inspect.signature(E.METHODS[name].function).parameters
                if option in OPTIONS for i in range(len(OPTIONS[option]))]


@pytest.mark.parametrize("name, option, i", OPTION_CASES)
def test_bad_option_gets_the_librarys_error(name, option, i, models, images):
    s = setting(name, models, images)
    value, error, word = OPTIONS[option][i]
    raises_own(error, (word,), lambda: s.run(**{option: value}))
    assert hook_count(s.model) == 0


def test_every_option_table_entry_is_used():
    # a typo in OPTIONS would silently test nothing
    used = {option for _, option, _ in OPTION_CASES}
    assert used == set(OPTIONS), set(OPTIONS) - used


def test_occlusion_refuses_a_stride_that_leaves_pixels_uncovered(models, images):
    # the pixels between two windows would have no drop to average: NaN, silently, before
    model, x = models["shapes-cnn"], images["shapes"]
    for window, stride in [(8, 9), (8, 100), (16, 32), ((8, 16), (8, 17)), ((8, 16), (9, 8))]:
        raises_own(ValueError, ("stride",),
                   lambda w=window, t=stride: E.occlusion(model, x, 0, window=w, stride=t))
    # stride == window tiles the image; the last window may be cut off by the edge
    maps = E.occlusion(model, x, 0, window=24, stride=24)
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()


def test_a_size_the_model_cannot_take_is_named(models, images):
    x = images["shapes"]
    message = raises_own(ValueError, ("x",),
                         lambda: E.gradcam(models["shapes-cnn"], x[..., :32, :32], 0,
                                           layer="features.10"))
    assert "(3, 32, 32)" in message and "(3, 64, 64)" in message  # what x is, what it takes
    assert E.gradcam(models["shapes-gap"], x[..., :32, :32], 0, layer="features.10").shape \
        == (2, 1, 32, 32)  # a pooled network takes other sizes
    # a model that declares no input_size: the layer that failed, and what it received
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 2))
    message = raises_own(ValueError, ("x",), lambda: E.saliency(model, torch.rand(2, 3, 16, 16), 0))
    assert "layer '3'" in message and "(1, 1024)" in message
    assert hook_count(model) == 0
    # a model's own error that is not about its input passes through as it is
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        E.saliency(Boom(), x, 0)


def test_a_view_of_a_channels_last_feature_map_is_explained():
    class Viewing(nn.Module):  # old-style code: x.view(n, -1) after the convolutions
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 2, 3, padding=1), nn.Linear(2 * 4 * 4, 2)

        def forward(self, x):
            a = self.conv(x)
            return self.fc(a.view(a.shape[0], -1))

    raises_own(ValueError, (".reshape()",),
               lambda: E.saliency(Viewing(), torch.rand(1, 3, 4, 4), 0))


# ------------------------------------------------------------------ nothing changed


class InPlaceFirst(nn.Module):
    """``model`` behind a first ``nn.ReLU(inplace=True)``: it overwrites what it is fed."""

    def __init__(self, model: nn.Module, inplace: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=inplace)
        self.model = model

    def forward(self, x):
        return self.model(self.relu(x))


def state(model: nn.Module) -> tuple:
    """A model's modes, flags, hooks, parameters and gradients."""
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            hook_count(model), [p.grad is None for p in model.parameters()],
            {k: v.clone() for k, v in model.state_dict().items()})


def same_state(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and a[4].keys() == b[4].keys() and all(
        torch.equal(a[4][k], b[4][k]) for k in a[4])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", NAMES)
def test_x_and_model_left_as_they_were_with_a_first_in_place_relu(name, layout, models, images):
    s = setting(name, models, images)
    base = copy.deepcopy(s.model).train()
    next(base.parameters()).requires_grad_(False)  # a mixed state, to be restored
    model, reference = InPlaceFirst(base), InPlaceFirst(copy.deepcopy(base), inplace=False)
    x = s.x - 0.5  # negative values: the ReLU changes them
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    pixels, strides, before = x.detach().clone(), x.stride(), state(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        maps = s.run(model=model, x=x, layer="model." + s.layer)
    assert torch.equal(x.detach(), pixels) and x.stride() == strides
    assert x.requires_grad and x.grad is None and x.is_leaf
    assert same_state(state(model), before)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0 and not maps.requires_grad
    with torch.random.fork_rng():
        torch.manual_seed(0)
        want = s.run(model=reference, x=x.detach().clone(), layer="model." + s.layer)
    torch.testing.assert_close(maps, want)  # the in-place ReLU changes nothing but memory


@pytest.mark.parametrize("name", NAMES)
def test_every_method_works_inside_inference_mode(name, models, images):
    s = setting(name, models, images)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        want = s.run()
    with torch.inference_mode():
        x = s.x.clone()  # inference tensors
        last = s.x.contiguous(memory_format=torch.channels_last)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            got = s.run(x=x)
    assert torch.equal(got, want) and torch.equal(x, s.x)
    with torch.random.fork_rng():  # an inference tensor outside inference mode, channels-last
        torch.manual_seed(0)
        again = s.run(x=last)
    assert torch.equal(again, want)
    assert hook_count(s.model) == 0


def test_class_models_and_adversarials_work_inside_inference_mode(models, images):
    model, x, labels = models["shapes-cnn"], images["shapes"], images["labels"]
    image, adv = E.class_model(model, 2, steps=2), E.adversarial(model, x, labels, steps=2)
    with torch.inference_mode():
        assert torch.equal(E.class_model(model, 2, steps=2), image)
        assert torch.equal(E.adversarial(model, x.clone(), labels.clone(), steps=2), adv)
        check = M.randomization_check(model, x.clone(), labels, E.saliency,
                                      layers=["classifier.4"])
    assert check.spearman.shape == (1,)


def test_a_model_loaded_inside_inference_mode(images):
    # its parameters are inference tensors: no gradient can go through them - said clearly;
    # the methods that need none work, and leave its flags as they were
    with torch.inference_mode():
        model = vm.models.load_pretrained("shapes-cnn")
    x = images["shapes"]
    raises_own(ValueError, ("inference mode",), lambda: E.saliency(model, x, 0))
    raises_own(ValueError, ("inference mode",),
               lambda: E.gradcam(model, x, 0, layer="features.10"))
    assert E.occlusion(model, x, 0, window=32, stride=32).shape == (2, 1, 64, 64)
    assert all(p.requires_grad for p in model.parameters())


def test_valid_targets_in_every_form_give_the_same_map(models, images):
    model, x = models["shapes-cnn"], images["shapes"]
    want = E.saliency(model, x, torch.tensor([1, 1]))
    for target in (1, [1, 1], (1, 1), np.int64(1), np.array([1, 1]), torch.tensor(1),
                   torch.tensor([1, 1], dtype=torch.int32)):
        assert torch.equal(E.saliency(model, x, target), want), target


# ------------------------------------------------------------------ metrics


# What a perturbation curve's call replaces: a function of (x, labels, maps), the error, a word.
PERTURBATION = {
    "x wrong channels": (lambda x, t, m: dict(x=x[:, :1]), ValueError, "x has 1"),
    "x a size the model cannot take": (lambda x, t, m: dict(x=x[..., :32, :32],
                                                            maps=m[..., :32, :32]),
                                       ValueError, "(3, 64, 64)"),
    "x float64": (lambda x, t, m: dict(x=x.double()), ValueError, "x is torch.float64"),
    "x 3-D": (lambda x, t, m: dict(x=x[0]), ValueError, "x[None]"),
    "model None": (lambda x, t, m: dict(model=None), TypeError, "model"),
    "target None": (lambda x, t, m: dict(target=None), TypeError, "target"),
    "target a string": (lambda x, t, m: dict(target="circle"), TypeError, "target"),
    "target 2-D": (lambda x, t, m: dict(target=t[:, None]), ValueError, "target has shape"),
    "target callable": (lambda x, t, m: dict(target=lambda out: out[:, 0]), ValueError,
                        "not a callable target"),
    "target out of range": (lambda x, t, m: dict(target=6), ValueError, "out of range"),
    "maps numpy": (lambda x, t, m: dict(maps=m.numpy()), TypeError, "maps"),
    "maps NaN": (lambda x, t, m: dict(maps=m * float("nan")), ValueError, "maps"),
    "maps size": (lambda x, t, m: dict(maps=m[..., :32, :32]), ValueError, "maps"),
    "maps one too few": (lambda x, t, m: dict(maps=m[:1]), ValueError, "maps"),
    "baseline NaN": (lambda x, t, m: dict(baseline=float("nan")), ValueError, "baseline"),
    "baseline a string": (lambda x, t, m: dict(baseline="black"), ValueError, "baseline"),
    "baseline shape": (lambda x, t, m: dict(baseline=torch.zeros(5)), ValueError, "baseline"),
    "steps 0": (lambda x, t, m: dict(steps=0), ValueError, "steps"),
    "batch_size 0": (lambda x, t, m: dict(batch_size=0), ValueError, "batch_size"),
    "probability": (lambda x, t, m: dict(probability="logit"), ValueError, "probability"),
}


@pytest.mark.parametrize("case", list(PERTURBATION))
@pytest.mark.parametrize("function", ["deletion_auc", "insertion_auc", "deletion_curve",
                                      "insertion_curve"])
def test_perturbation_metrics_bad_input(function, case, models, images):
    model, x, labels = models["shapes-cnn"], images["shapes"], images["labels"]
    maps = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    make, error, word = PERTURBATION[case]
    call = {"model": model, "x": x, "target": labels, "maps": maps, "steps": 2,
            "baseline": 0.0, **make(x, labels, maps)}
    raises_own(error, (word,), lambda: getattr(M, function)(**call))
    assert hook_count(model) == 0


# Calls of the metrics of maps alone, with the error and a word its message must contain.
MAPS = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
MASKS = torch.zeros(2, 64, 64, dtype=torch.bool)
MASKS[:, 20:30, 10:40] = True
BOXES = torch.tensor([[10, 20, 40, 30]] * 2)
MAP_METRICS = {
    "pointing_game maps numpy": (lambda: M.pointing_game(MAPS.numpy(), MASKS), TypeError, "maps"),
    "pointing_game masks numpy": (lambda: M.pointing_game(MAPS, MASKS.numpy()), TypeError,
                                  "masks"),
    "pointing_game masks size": (lambda: M.pointing_game(MAPS, MASKS[:, :32]), ValueError,
                                 "masks"),
    "pointing_game masks one too few": (lambda: M.pointing_game(MAPS, MASKS[:1]), ValueError,
                                        "masks"),
    "pointing_game maps NaN": (lambda: M.pointing_game(MAPS * float("nan"), MASKS), ValueError,
                               "maps"),
    "pointing_game tolerance -1": (lambda: M.pointing_game(MAPS, MASKS, tolerance=-1),
                                   ValueError, "tolerance"),
    "pointing_game tolerance 1.5": (lambda: M.pointing_game(MAPS, MASKS, tolerance=1.5),
                                    ValueError, "tolerance"),
    "relevance_mass maps numpy": (lambda: M.relevance_mass(MAPS.numpy(), MASKS), TypeError,
                                  "maps"),
    "relevance_mass maps NaN": (lambda: M.relevance_mass(MAPS * float("nan"), MASKS),
                                ValueError, "maps"),
    "relevance_mass masks size": (lambda: M.relevance_mass(MAPS, MASKS[:, :32]), ValueError,
                                  "masks"),
    "box_from_map threshold 2": (lambda: M.box_from_map(MAPS, threshold=2), ValueError,
                                 "threshold"),
    "box_from_map threshold -1": (lambda: M.box_from_map(MAPS, threshold=-1), ValueError,
                                  "threshold"),
    "box_from_map one map": (lambda: M.box_from_map(MAPS[0, 0]), ValueError, "maps"),
    "box_from_map maps numpy": (lambda: M.box_from_map(MAPS.numpy()), TypeError, "maps"),
    "localization_accuracy boxes (n, 3)": (lambda: M.localization_accuracy(MAPS, BOXES[:, :3]),
                                           ValueError, "boxes"),
    "localization_accuracy boxes numpy": (lambda: M.localization_accuracy(MAPS, BOXES.numpy()),
                                          TypeError, "boxes"),
    "localization_accuracy boxes one too few": (
        lambda: M.localization_accuracy(MAPS, BOXES[:1]), ValueError, "boxes"),
    "localization_accuracy iou 2": (lambda: M.localization_accuracy(MAPS, BOXES, iou=2),
                                    ValueError, "iou"),
    "box_iou (n, 3)": (lambda: M.box_iou(BOXES, BOXES[:, :3]), ValueError, "boxes"),
    "importance numpy": (lambda: M.importance(MAPS.numpy()), TypeError, "maps"),
    "importance one map": (lambda: M.importance(MAPS[0, 0]), ValueError, "maps"),
    "spearman numpy": (lambda: M.spearman(MAPS.numpy(), MAPS), TypeError, "must be a torch"),
    "spearman one too few": (lambda: M.spearman(MAPS, MAPS[:1]), ValueError, "same shape"),
    "ssim one too few": (lambda: M.ssim(MAPS, MAPS[:1]), ValueError, "same shape"),
    "ssim numpy": (lambda: M.ssim(MAPS.numpy(), MAPS), TypeError, "must be a torch"),
    "pixel_auroc maps numpy": (lambda: M.pixel_auroc(MAPS.numpy(), MASKS), TypeError, "maps"),
    "pixel_auroc masks one too few": (lambda: M.pixel_auroc(MAPS, MASKS[:1]), ValueError,
                                      "masks"),
    "blur sigma a string": (lambda: M.blur(MAPS, sigma="a"), ValueError, "sigma"),
    "blur sigma 0": (lambda: M.blur(MAPS, sigma=0), ValueError, "sigma"),
}


@pytest.mark.parametrize("case", list(MAP_METRICS))
def test_map_metrics_bad_input(case):
    call, error, word = MAP_METRICS[case]
    raises_own(error, (word,), call)


RANDOMIZATION = {
    "layers a bare int": (dict(layers=3), TypeError, "layers"),  # an index, not a name
    "layers an index out of range": (dict(layers=[99]), TypeError, "layers"),
    "layers a group with an index": (dict(layers=[["classifier.4", 2]]), TypeError, "layers"),
    "layers an unknown name": (dict(layers=["99"]), ValueError, "unknown layer '99'"),
    "method a name": (dict(method="saliency"), TypeError, "method"),
    "method None": (dict(method=None), TypeError, "method"),
    "seed a string": (dict(seed="a"), TypeError, "seed"),
    "target None": (dict(target=None), TypeError, "target"),
    "model None": (dict(model=None), TypeError, "model"),
    "x one image": (dict(x=torch.rand(3, 64, 64)), ValueError, "x[None]"),
}


@pytest.mark.parametrize("case", list(RANDOMIZATION))
def test_randomization_check_bad_input(case, models, images):
    model = models["shapes-cnn"]
    parts, error, word = RANDOMIZATION[case]
    call = {"model": model, "x": images["shapes"], "target": images["labels"],
            "method": E.saliency, **parts}
    message = raises_own(error, (word,), lambda: M.randomization_check(**call))
    if error is TypeError and word == "layers":
        assert "'classifier.4'" in message  # the names it could have given
    assert hook_count(model) == 0


# ------------------------------------------------------------------ the other functions

OTHERS = {
    "normalize one number": (lambda m: E.normalize(torch.tensor(3.0)), ValueError, "maps[None]"),
    "normalize one row": (lambda m: E.normalize(torch.arange(5.0)), ValueError, "maps[None]"),
    "normalize numpy": (lambda m: E.normalize(np.zeros((2, 1, 4, 4))), TypeError, "maps"),
    "normalize a list": (lambda m: E.normalize([[0.0, 1.0]]), TypeError, "maps"),
    "normalize NaN": (lambda m: E.normalize(torch.tensor([[0.0, float("nan"), 1.0]] * 2)),
                      ValueError, "maps [0, 1] have NaN"),
    "normalize infinite": (lambda m: E.normalize(torch.tensor([[0.0, 1.0], [0.0, float("inf")]])),
                           ValueError, "maps [1] have NaN or infinite"),
    "normalize eps -1": (lambda m: E.normalize(torch.zeros(2, 4), eps=-1.0), ValueError, "eps"),
    "upsample size 0": (lambda m: E.upsample(MAPS, (0, 4)), ValueError, "size"),
    "upsample size an int": (lambda m: E.upsample(MAPS, 64), ValueError, "size"),
    "upsample size three": (lambda m: E.upsample(MAPS, (64, 64, 64)), ValueError, "size"),
    "upsample size a float": (lambda m: E.upsample(MAPS, (6.5, 4)), ValueError, "size"),
    "upsample maps numpy": (lambda m: E.upsample(MAPS.numpy(), (8, 8)), ValueError, "maps"),
    "zeiler_fergus channel 1.5": (lambda m: E.zeiler_fergus(m, MAPS3, 9, 1.5), ValueError,
                                  "channel"),
    "zeiler_fergus channel True": (lambda m: E.zeiler_fergus(m, MAPS3, 9, True), ValueError,
                                   "channel"),
    "zeiler_fergus channel -1": (lambda m: E.zeiler_fergus(m, MAPS3, 9, -1), ValueError,
                                 "channel"),
    "zeiler_fergus channel 99": (lambda m: E.zeiler_fergus(m, MAPS3, 9, 99), ValueError,
                                 "channel 99 out of range"),
    "zeiler_fergus layer True": (lambda m: E.zeiler_fergus(m, MAPS3, True, 0), TypeError,
                                 "layer"),
    "zeiler_fergus layer 99": (lambda m: E.zeiler_fergus(m, MAPS3, 99, 0), ValueError,
                               "layer index 99"),
    "zeiler_fergus position (1, 2, 3)": (
        lambda m: E.zeiler_fergus(m, MAPS3, 9, 0, position=(1, 2, 3)), ValueError, "position"),
    "zeiler_fergus model None": (lambda m: E.zeiler_fergus(None, MAPS3, 9, 0), TypeError,
                                 "model"),
    "zeiler_fergus x float64": (lambda m: E.zeiler_fergus(m, MAPS3.double(), 9, 0), ValueError,
                                "x is torch.float64"),
    "class_model target None": (lambda m: E.class_model(m, None, steps=1), TypeError, "target"),
    "class_model target a string": (lambda m: E.class_model(m, "circle", steps=1), TypeError,
                                    "target"),
    "class_model target out of range": (lambda m: E.class_model(m, 9, steps=1), ValueError,
                                        "target class(es) [9] out of range"),
    "class_model seed a string": (lambda m: E.class_model(m, 1, steps=1, seed="a"), TypeError,
                                  "seed"),
    "class_model shape the model cannot take": (
        lambda m: E.class_model(m, 1, steps=1, shape=(3, 32, 32)), ValueError, "shape"),
    "class_model shape with a bool": (
        lambda m: E.class_model(m, 1, steps=1, shape=(True, 64, 64)), ValueError, "shape"),
    "class_model model None": (lambda m: E.class_model(None, 1, steps=1), TypeError, "model"),
    "adversarial target None": (lambda m: E.adversarial(m, MAPS3, None), TypeError, "target"),
    "adversarial target one-hot": (lambda m: E.adversarial(m, MAPS3, torch.eye(6)[:2]),
                                   ValueError, "target has shape"),
    "adversarial x outside [0, 1]": (lambda m: E.adversarial(m, MAPS3 * 2, 0), ValueError,
                                     "x ranges over"),
}
MAPS3 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("case", list(OTHERS))
def test_other_functions_bad_input(case, models):
    call, error, word = OTHERS[case]
    raises_own(error, (word,), lambda: call(models["shapes-cnn"]))
    assert hook_count(models["shapes-cnn"]) == 0


def test_good_calls_of_the_other_functions(models):
    assert E.normalize(torch.zeros(2, 4)).eq(0).all()  # all-zero stays zero
    assert E.upsample(MAPS, (np.int64(8), torch.tensor(8))).shape == (2, 1, 8, 8)
    # a float64 model draws its class model in float64, as it explains float64 images
    model = copy.deepcopy(models["shapes-cnn"]).double()
    assert E.class_model(model, 1, steps=1).dtype == torch.float64


def test_factor_score_dims(models, images):
    vae, x = models["sprites-vae"], images["sprites"]
    want = E.factor_cam(vae, x, [1, 2])
    for dims in (np.array([1, 2]), torch.tensor([1, 2]), (1, 2), {1, 2}):
        assert torch.equal(E.factor_cam(vae, x, dims), want), dims
    for dims, error, word in [(None, TypeError, "dims"), (True, TypeError, "dims"),
                              ({1: 2}, TypeError, "dims"), ([1, True], ValueError, "dims"),
                              ([1.0, 2.0], ValueError, "dims"), ([1, 1], ValueError, "distinct")]:
        raises_own(error, (word,), lambda d=dims: E.factor_score(d))
