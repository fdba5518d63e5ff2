"""The contract every method of the registry honours, checked once for all of them.

Every method of ``vm.explain.METHODS`` (a method added to the registry is covered by being
registered, with no change here), called through its registry entry on a setting its needs
allow (:func:`setting`):

* the caller's model is left as it was - its modules' modes, its parameters' ``requires_grad``,
  values and gradients, no hook left behind (also after an error) - and so is ``x`` (values,
  memory layout, ``requires_grad``), also for a model whose first module is an in-place ReLU;
* the map has the input's batch size, resolution, dtype and device; in-place ReLUs change
  nothing; it works inside ``torch.no_grad()`` and ``torch.inference_mode()``;
* every bad input of the table (:data:`CASES`, :data:`OPTIONS`: the portability issue's list)
  gets a ValueError or a TypeError raised by vismap itself whose message names the argument.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import assert_maps_close, float64, hook_count, raises_own
from torch import nn

import vismap as vm
from vismap import explain as E

NAMES = list(E.METHODS)
FAST = {
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 2},
    "occlusion": {"window": 16, "stride": 16},
}


@pytest.fixture(scope="module")
def models(pretrained) -> dict[str, nn.Module]:
    """The module's shared models: a test that changes one changes a copy."""
    return {
        name: pretrained(name) for name in ("shapes-cnn", "shapes-gap", "sprites-vae", "shapes-vit")
    }


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    shapes = vm.data.make_shapes(2, seed=9)
    return {
        "shapes": shapes.images,
        "labels": shapes.labels,
        "sprites": vm.data.make_sprites(2, seed=2).images,
    }


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
        call = {
            "model": self.model,
            "x": self.x,
            "target": self.target,
            "layer": self.layer,
            **FAST.get(self.entry.name, {}),
            **replaced,
        }
        return self.entry(call.pop("model"), call.pop("x"), call.pop("target"), **call)


def setting(name: str, models, images) -> Setting:
    """The model an entry runs on: one whose needs it meets (a VAE, a GAP network, a
    transformer, else shapes-cnn)."""
    entry = E.METHODS[name]
    if "VAE" in entry.needs:
        return Setting(entry, models["sprites-vae"], "encoder.3", images["sprites"], [0, 4])
    if "GAP" in entry.needs:
        return Setting(
            entry, models["shapes-gap"], "features.10", images["shapes"], images["labels"]
        )
    if "attention" in entry.needs:  # a transformer's attention maps
        return Setting(entry, models["shapes-vit"], "blocks.2", images["shapes"], images["labels"])
    return Setting(entry, models["shapes-cnn"], "features.10", images["shapes"], images["labels"])


# ------------------------------------------------------ the model and the input left as they were


@pytest.mark.parametrize("name", NAMES)
def test_every_method_leaves_the_model_as_it_was(name, models, images):
    s = setting(name, models, images)
    model = copy.deepcopy(s.model).train()
    first = next(model.parameters())
    first.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(model.modules())
    with torch.no_grad():  # works inside no_grad too
        maps = s.run(model=model)
    assert maps.shape[0] == len(s.x) and maps.shape[-2:] == s.x.shape[-2:]
    assert maps.dtype == s.x.dtype and maps.device == s.x.device
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert model.training and all(m.training for m in model.modules())
    assert not first.requires_grad and all(
        p.requires_grad for p in model.parameters() if p is not first
    )
    assert list(model.modules()) == modules and hook_count(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_every_method_leaves_no_hook_after_an_error(name, models, images):
    s = setting(name, models, images)
    model = copy.deepcopy(s.model).train()

    def failing_target(out):
        raise RuntimeError("boom")

    if s.vae:  # the target is latent dimensions: the encoder fails instead
        model.encoder[-1].forward = lambda *args: failing_target(None)
        with pytest.raises(RuntimeError, match="boom"):
            s.run(model=model, target=[0])
    elif s.entry.function is E.cam:  # explains a class only: refuses a callable target first
        with pytest.raises(ValueError, match="cam explains a class"):
            s.run(model=model, target=failing_target)
    else:
        with pytest.raises(RuntimeError, match="boom"):
            s.run(model=model, target=failing_target)
    assert hook_count(model) == 0 and model.training


@pytest.mark.portable
@pytest.mark.parametrize("name", NAMES)
def test_every_method_copes_with_in_place_relus_and_float64(name, models, images):
    # in float64 (the claim is that an in-place ReLU changes nothing, an exact one), and the
    # map comes back in the input's dtype
    s = setting(name, models, images)
    model = float64(s.model)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    in_place = copy.deepcopy(model)
    for m in in_place.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True
    with torch.random.fork_rng():
        torch.manual_seed(0)
        want = s.run(model=model, x=s.x.double())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        got = s.run(model=in_place, x=s.x.double())
    assert want.dtype == got.dtype == torch.float64 and got.device == s.x.device
    assert_maps_close(got, want, 1e-12, msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_every_method_rejects_nan_input_and_a_wrong_channel_count(name, models, images):
    s = setting(name, models, images)
    bad = s.x.clone()
    bad[1, 0, 5, 7] = float("nan")
    bad[1, 0, 6, 7] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"x has 1 NaN and 1 infinite values, in image\(s\) "
        r"\[1\]",
    ):
        s.run(x=bad)
    channels = s.x.shape[1]
    wrong = s.x.repeat(1, 2, 1, 1)
    expected = (
        rf"expects images of shape \(n, {channels}, "
        if s.vae
        else f"the model expects images with {channels} channel.* x has {2 * channels}"
    )
    with pytest.raises(ValueError, match=expected):  # the VAE checks its input itself
        s.run(x=wrong)
    assert hook_count(s.model) == 0


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
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        hook_count(model),
        [p.grad is None for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def same_state(a: tuple, b: tuple) -> bool:
    return (
        a[:4] == b[:4]
        and a[4].keys() == b[4].keys()
        and all(torch.equal(a[4][k], b[4][k]) for k in a[4])
    )


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


# ------------------------------------------------------------------ no_grad and inference mode


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


def test_a_model_loaded_inside_inference_mode(images):
    # its parameters are inference tensors: no gradient can go through them - said clearly;
    # the methods that need none work, and leave its flags as they were
    with torch.inference_mode():  # loaded here, not copied: its parameters must be made here
        model = vm.models.load_pretrained("shapes-cnn")
    x = images["shapes"]
    raises_own(ValueError, ("inference mode",), lambda: E.saliency(model, x, 0))
    raises_own(ValueError, ("inference mode",), lambda: E.gradcam(model, x, 0, layer="features.10"))
    assert E.occlusion(model, x, 0, window=32, stride=32).shape == (2, 1, 64, 64)
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------ targets


def test_valid_targets_in_every_form_give_the_same_map(models, images):
    model, x = models["shapes-cnn"], images["shapes"]
    want = E.saliency(model, x, torch.tensor([1, 1]))
    for target in (
        1,
        [1, 1],
        (1, 1),
        np.int64(1),
        np.array([1, 1]),
        torch.tensor(1),
        torch.tensor([1, 1], dtype=torch.int32),
    ):
        assert torch.equal(E.saliency(model, x, target), want), target


ALL = [
    E.saliency,
    E.deconvnet,
    E.guided_backprop,
    lambda m, x, t: E.occlusion(m, x, t, window=16, stride=16),
]


@pytest.mark.parametrize("method", ALL)
def test_callable_target_equals_its_definition(method, models, images):
    model = models["shapes-gap"]
    x = vm.data.make_shapes(6, seed=21).images[:3]
    margin = method(model, x, lambda out: out[:, 2] - out[:, 0])
    if method is ALL[0]:  # gradients are linear in the score
        torch.testing.assert_close(margin, method(model, x, 2) - method(model, x, 0))
    assert margin.shape[0] == 3 and torch.isfinite(margin).all()


def test_all_zero_gradient_gives_zeros_not_nan(models):
    model = models["shapes-gap"]
    x = vm.data.make_shapes(6, seed=21).images[:2]
    for method in ALL:
        maps = method(model, x, lambda out: out[:, 0] * 0)
        assert torch.isfinite(maps).all() and maps.eq(0).all()
        assert E.normalize(maps).eq(0).all()


def test_factor_score_dims(models, images):
    vae, x = models["sprites-vae"], images["sprites"]
    want = E.factor_cam(vae, x, [1, 2])
    for dims in (np.array([1, 2]), torch.tensor([1, 2]), (1, 2), {1, 2}):
        assert torch.equal(E.factor_cam(vae, x, dims), want), dims
    for dims, error, word in [
        (None, TypeError, "dims"),
        (True, TypeError, "dims"),
        ({1: 2}, TypeError, "dims"),
        ([1, True], ValueError, "dims"),
        ([1.0, 2.0], ValueError, "dims"),
        ([1, 1], ValueError, "distinct"),
    ]:
        raises_own(error, (word,), lambda d=dims: E.factor_score(d))


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
    "x float64, model float32": Case(
        lambda s: {"x": s.x.double()}, ValueError, ("x is torch.float64",)
    ),
    "x float16": Case(lambda s: {"x": s.x.half()}, ValueError, ("x is torch.float16",)),
    "x too many channels": Case(
        lambda s: {"x": s.x.repeat(1, 2, 1, 1)},
        ValueError,
        ("x has",),
        vae_words=("expects images of shape (n, 1, 64",),
    ),
    "x a size the model cannot take": Case(
        _too_small, ValueError, ("x:", "x "), vae_words=("expects images of shape (n, 1, 64",)
    ),
    "model None": Case(lambda s: {"model": None}, TypeError, ("model",), vae_words=("vae",)),
    "model a function": Case(
        lambda s: {"model": lambda x: x}, TypeError, ("model",), vae_words=("vae",)
    ),
    "target None": Case(_bad_target(None), TypeError, ("target",), vae_words=("dims",)),
    "target a string": Case(_bad_target("circle"), TypeError, ("target",), vae_words=("dims",)),
    "target a dict": Case(_bad_target({0: 1}), TypeError, ("target",), vae_words=("dims",)),
    "target a float": Case(_bad_target(1.5), ValueError, ("target",), TypeError, ("dims",)),
    "target a bool": Case(_bad_target(True), ValueError, ("target",), TypeError, ("dims",)),
    "target 2-D (n, 1)": Case(
        _bad_target(torch.tensor([[1], [2]])),
        ValueError,
        ("target has shape (2, 1)",),
        vae_words=("dims",),
    ),
    "target one-hot (n, classes)": Case(
        _bad_target(torch.eye(6)[:2]), ValueError, ("target has shape (2, 6)",), vae_words=("dims",)
    ),
    "target float tensor": Case(
        _bad_target(torch.tensor([0.0, 1.0])), ValueError, ("target",), vae_words=("dims",)
    ),
    "target bool tensor": Case(
        _bad_target(torch.tensor([True, False])), ValueError, ("target",), vae_words=("dims",)
    ),
    "target out of range": Case(
        _bad_target(99),
        ValueError,
        ("target class(es) [99] out of range",),
        vae_words=("dims [99] out of range",),
    ),
    "target negative": Case(
        lambda s: None if s.vae else {"target": -1}, ValueError, ("target",)
    ),  # a negative latent dimension counts from the end
    "target one per image, too many": Case(
        lambda s: None if s.vae else {"target": [0, 1, 2]},
        ValueError,
        ("target has 3 classes for a batch of 2",),
    ),
    "target empty": Case(
        _bad_target([]), ValueError, ("target has 0 classes",), vae_words=("dims is empty",)
    ),
    "target callable, wrong shape": Case(
        _bad_target(lambda out: out[:, :2]), ValueError, ("target",), TypeError, ("dims",)
    ),
    "layer unknown": Case(
        lambda s: {"layer": "nope"} if s.entry.layered else None,
        ValueError,
        ("unknown layer 'nope'",),
    ),
    "layer an int": Case(
        lambda s: {"layer": 3} if s.entry.layered else None, TypeError, ("layer",)
    ),
    "layer not the model's": Case(
        lambda s: {"layer": nn.Conv2d(3, 3, 1)} if s.entry.layered else None,
        ValueError,
        ("not a module of this model",),
    ),
    "layer fully connected": Case(
        lambda s: {"layer": "encoder.9" if s.vae else "classifier.1"} if s.entry.layered else None,
        ValueError,
        ("must output feature maps",),
    ),
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


OPTIONS: dict[str, list[tuple[object, type[Exception], str]]] = {
    "samples": [(0, ValueError, "samples"), (2.5, ValueError, "samples")],
    "sigma": [(-1.0, ValueError, "sigma"), (float("nan"), ValueError, "sigma")],
    "steps": [(0, ValueError, "steps"), (True, ValueError, "steps")],
    "batch_size": [(0, ValueError, "batch_size"), (-1, ValueError, "batch_size")],
    "window": [
        (0, ValueError, "window"),
        (2.5, ValueError, "window"),
        (True, ValueError, "window"),
        ((8, 8, 8), ValueError, "window"),
        (65, ValueError, "window 65x65 is larger than the 64x64 image"),
    ],
    "stride": [
        (0, ValueError, "stride"),
        (17, ValueError, "stride 17x17 is larger than"),
        (100, ValueError, "stride 100x100 is larger than"),
    ],
    "baseline": [
        ("black", TypeError, "baseline"),
        (None, TypeError, "baseline"),
        (float("nan"), ValueError, "baseline"),
        (torch.zeros(5), ValueError, "baseline"),
    ],
    "upsampled": [("no", TypeError, "upsampled")],
    "counterfactual": [("no", TypeError, "counterfactual")],
    "eps": [(-1.0, ValueError, "eps")],
    "method": [(42, TypeError, "method"), ("nope", ValueError, "unknown method 'nope'")],
    "rule": [("nope", ValueError, "rule 'nope'")],
    "statistic": [("nope", ValueError, "statistic 'nope'")],
    "mode": [("nope", ValueError, "mode 'nope'")],
    "weights": [
        (np.zeros((6, 64)), TypeError, "weights"),
        (torch.zeros(6, 3), ValueError, "weights must have shape (classes, 64)"),
    ],
    "generator": [(0, TypeError, "generator")],
    "epsilon": [
        (-1.0, ValueError, "epsilon"),
        (0.0, ValueError, "epsilon must be > 0"),
        (float("nan"), ValueError, "epsilon"),
        ("small", ValueError, "epsilon"),
    ],
    "gamma": [(-0.25, ValueError, "gamma"), (float("inf"), ValueError, "gamma")],
    "alpha": [(3.0, ValueError, "alpha - beta must be 1"), (-1.0, ValueError, "alpha")],
    "beta": [(0.5, ValueError, "alpha - beta must be 1"), (-1.0, ValueError, "beta")],
    "first": [("zb", ValueError, "first"), (0, ValueError, "first")],
    "low": [("black", TypeError, "low"), (2.0, ValueError, "low must be below high")],
    "high": [(0.0, ValueError, "low must be below high"), (torch.zeros(5), ValueError, "high")],
    "tokens": [("8x8", TypeError, "tokens"), ((9, 9), ValueError, "tokens")],
    "head_fusion": [("sum", ValueError, "head_fusion 'sum'")],
}


OPTION_CASES = [
    (name, option, i)
    for name in NAMES
    for option in inspect.signature(E.METHODS[name].function).parameters
    if option in OPTIONS
    for i in range(len(OPTIONS[option]))
]


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


def test_a_size_the_model_cannot_take_is_named(models, images):
    x = images["shapes"]
    message = raises_own(
        ValueError,
        ("x",),
        lambda: E.gradcam(models["shapes-cnn"], x[..., :32, :32], 0, layer="features.10"),
    )
    assert "(3, 32, 32)" in message and "(3, 64, 64)" in message  # what x is, what it takes
    assert E.gradcam(models["shapes-gap"], x[..., :32, :32], 0, layer="features.10").shape == (
        2,
        1,
        32,
        32,
    )  # a pooled network takes other sizes
    # a model that declares no input_size: the layer that failed, and what it received
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)
    )
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

    raises_own(
        ValueError, (".reshape()",), lambda: E.saliency(Viewing(), torch.rand(1, 3, 4, 4), 0)
    )


def test_every_method_says_which_models_it_cannot_explain(models):
    # a method whose needs a model cannot meet is skipped by name (leaderboard, widgets), with
    # the reason; and the setting above meets every method's needs
    for name, entry in E.METHODS.items():
        assert (
            entry.unmet(
                setting(name, models, {"shapes": None, "labels": None, "sprites": None}).model
            )
            is None
        ), name
    reason = E.METHODS["rollout"].unmet(models["shapes-cnn"])
    assert reason is not None and reason.startswith("needs attention modules")
    assert E.METHODS["guided_backprop"].unmet(models["shapes-vit"]) is not None  # GELU, no ReLU
    assert E.METHODS["factor_cam"].unmet(models["shapes-cnn"]) is not None
