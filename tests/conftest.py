"""Shared test helpers.

* :func:`hook_count` - the hooks a model carries; every explanation method must leave it as it
  was (the course's contract: no hook left behind, also after an exception). Import it with
  ``from conftest import hook_count`` (``pythonpath = ["tests"]`` in ``pyproject.toml`` puts
  ``tests/`` on ``sys.path``, also for ``tests/explain/``).
* :func:`assert_maps_close` - maps compared on the scale of their own values (the course's rule
  for float comparisons: exactness in float64, float32 to a tolerance relative to the maps'
  magnitude, never an absolute 1e-5); :func:`float64` - a float64 copy of a model.
* ``torchvision_models`` - torchvision's ResNet-18 and VGG-11 (10 classes, random weights),
  built once per session for every test file that compares methods on real architectures;
  each test that uses them is checked, at its teardown, not to have changed them.
* ``pretrained`` - ``pretrained(name)``: a fresh copy of a course model, each read from
  ``data/`` once per session (``vm.models.load_pretrained``), so a test may change its copy.
* ``reference_case`` - one model per parameter (the three course classifiers in float64, and
  the slow torchvision ones) for the comparisons with captum and pytorch-grad-cam.
* tiny models with hand-computable maps: :func:`tiny_mlp`, :class:`Squares`, :class:`Linear`;
  :func:`raises_own` - a call raises vismap's own error, naming the argument.

Test tiers: ``make test`` runs everything, notebooks included (``--nbval-lax``);
``make test-fast`` leaves out the tests marked ``@pytest.mark.slow``. A test is slow when it takes
about a second or more of CPU (a notebook, an ImageNet-size model, a comparison with captum on
many inputs).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

# Keep the library tests light on the 2-core machines they run on.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def hook_count(model: nn.Module) -> int:
    """The number of forward, forward-pre, backward and backward-pre hooks on all of
    ``model``'s modules (``register_forward_hook``, ``register_forward_pre_hook``,
    ``register_full_backward_hook``, ``register_full_backward_pre_hook``)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def assert_maps_close(got: torch.Tensor, want: torch.Tensor, rel: float, msg: str = "") -> None:
    """Every ``|got - want| <= rel * max|want|``, and the shapes equal.

    Float rounding is relative to the magnitude of what is summed, so a map is compared on the
    scale of its own largest value: an absolute 1e-5 is below float32's rounding for maps of
    order 40, and a per-element ``rtol`` fails wherever a value is a near-cancellation. Give
    ``rel`` from the precision: about 1e-12 in float64 for an exactness claim, and for float32
    about ``sqrt(terms) * 6e-8`` per layer summed, a few 1e-6 for the course's networks."""
    got, want = torch.as_tensor(got).detach(), torch.as_tensor(want).detach()
    assert got.shape == want.shape, f"{msg}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = float(want.abs().max())
    worst = float((got.to(want.dtype) - want).abs().max()) if want.numel() else 0.0
    assert torch.isfinite(got).all(), f"{msg}: non-finite values"
    assert worst <= rel * scale, (
        f"{msg}: max |got - want| = {worst:.3g} = {worst / max(scale, 1e-300):.3g} of max|want| "
        f"= {scale:.3g}, allowed {rel:.1g}"
    )


def float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (the caller's model is left as it is): where a test claims
    two computations are the same mathematics, both run in float64, so that the claim does not
    depend on which kernels a CPU runs."""
    return copy.deepcopy(model).double()


def _fingerprint(model: nn.Module) -> tuple:
    """What a test must not change in a shared model: each module's mode, hooks and ReLU
    ``inplace`` flag; each parameter's dtype, device, layout (strides), ``requires_grad``,
    gradient (none) and values (their sum: float32's vectorised sum is 15x faster than a
    float64 one on VGG-11, and any real change, a step or a fill, moves it); each buffer's dtype
    and values (a forward in train mode moves BatchNorm's running statistics)."""
    modules = tuple(
        (
            name,
            m.training,
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            len(m._backward_hooks),
            len(m._backward_pre_hooks),
            getattr(m, "inplace", None),
        )
        for name, m in model.named_modules()
    )
    params = tuple(
        (
            name,
            p.dtype,
            p.device,
            p.stride(),
            p.requires_grad,
            p.grad is None,
            float(p.detach().sum()),
        )
        for name, p in model.named_parameters()
    )
    buffers = tuple((name, b.dtype, float(b.detach().sum())) for name, b in model.named_buffers())
    return modules, params, buffers


@pytest.fixture(scope="session")
def _torchvision_models_built() -> dict[str, tuple[nn.Module, tuple]]:
    """The shared models, built once per session, each with its fingerprint."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = {
            "resnet18": torchvision.models.resnet18(num_classes=10).eval(),
            "vgg11": torchvision.models.vgg11(num_classes=10).eval(),
        }
    return {name: (model, _fingerprint(model)) for name, model in models.items()}


@pytest.fixture
def torchvision_models(
    _torchvision_models_built: dict[str, tuple[nn.Module, tuple]], request: pytest.FixtureRequest
) -> Iterator[dict[str, nn.Module]]:
    """``{"resnet18": ..., "vgg11": ...}``: torchvision's architectures with 10 classes and
    random weights, drawn after ``torch.manual_seed(0)`` (ResNet-18 first; the global random
    state is left alone), in eval mode. VGG-11 alone has 129 M parameters, so they are built once
    per session and shared: a test must not change them (``copy.deepcopy`` one first, e.g.
    before ``.double()`` or flipping its ReLUs' ``inplace``). The fixture is per test so that
    each test that uses them (directly, through a fixture or ``request.getfixturevalue``) is
    checked at its teardown, and the test that changed a model is the one that fails."""
    shared = _torchvision_models_built
    yield {name: model for name, (model, _) in shared.items()}
    changed = [name for name, (model, before) in shared.items() if _fingerprint(model) != before]
    for name in changed:  # later tests are judged on what they themselves change
        shared[name] = (shared[name][0], _fingerprint(shared[name][0]))
    if changed:
        pytest.fail(
            f"{request.node.nodeid} changed the shared torchvision models {changed}: "
            f"copy.deepcopy a shared model before changing it",
            pytrace=False,
        )


# ------------------------------------------------------------------ tiny models, by hand


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


class Squares(nn.Module):
    """y = sum_i x_i^2: the gradient 2x is linear along any path from 0."""

    def forward(self, x):
        return x.pow(2).sum((1, 2, 3))[:, None]


class Linear(nn.Module):
    """y_c = sum_i w_ci x_i + b_c for a (1, 2, 2) image and two classes."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 3.0, -0.5]]))
        self.b = nn.Parameter(torch.tensor([0.3, -0.2]))

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def raises_own(error: type[Exception], words: tuple[str, ...], call: Callable[[], object]) -> str:
    """``call()`` raises exactly ``error``, from vismap's own code, with a message that names
    one of ``words`` (the argument)."""
    with pytest.raises(Exception) as info:
        call()
    assert info.type is error, f"{info.type.__name__}: {info.value}"
    assert "vismap" in str(info.traceback[-1].path), f"raised by {info.traceback[-1].path}"
    message = str(info.value)
    assert any(word in message for word in words), (words, message)
    return message


# ------------------------------------------------------------------ the course's models


@pytest.fixture(scope="session")
def pretrained() -> Callable[[str], nn.Module]:
    """``pretrained(name)``: a fresh copy (``copy.deepcopy``) of the course model ``name``, as
    ``vm.models.load_pretrained(name)`` returns it; each checkpoint is read from the disk once
    per session, and every caller gets its own copy to change (its mode, its flags, its dtype)."""
    import vismap as vm

    loaded: dict[str, nn.Module] = {}

    def copy_of(name: str) -> nn.Module:
        if name not in loaded:
            loaded[name] = vm.models.load_pretrained(name)
        return copy.deepcopy(loaded[name])

    return copy_of


LAYERS = {
    "shapes-cnn": "features.9",
    "shapes-gap": "features.10",
    "shapes-allconv": "features.12",
    "resnet18": "layer4",
    "vgg11": "features.18",
}


@pytest.fixture(
    params=[
        "shapes-cnn",
        "shapes-gap",
        "shapes-allconv",
        pytest.param("resnet18", marks=pytest.mark.slow),
        pytest.param("vgg11", marks=pytest.mark.slow),
    ]
)
def reference_case(request, pretrained):
    """``(name, model, layer, x, target, rel)``, one per model, for the comparisons with captum
    and pytorch-grad-cam. The course's models on Shapes images run in float64 (a copy): the
    claim is that both libraries compute the same mathematics, which float32 cannot show to
    better than its rounding, and whose last bits depend on the CPU's kernels (vector width,
    oneDNN's algorithms, the memory layout). torchvision's (the session's shared models, slow on
    a CPU; a test must not change them) run in float32 on random 64x64 images, their in-place
    ReLUs kept: a float64 VGG-11 costs 30 s a test. ``rel`` is the tolerance, relative to the
    maps' maximum, that the precision allows (float32 through 8-18 layers: measured about 2e-6)."""
    name, targets = request.param, torch.tensor([1, 4, 2])
    if name.startswith("shapes-"):  # each image's own class: a map of an absent class may be empty
        import vismap as vm

        scenes = vm.data.make_shapes(3, seed=41)
        model = float64(pretrained(name))
        return name, model, LAYERS[name], scenes.images.double(), scenes.labels, 1e-12
    noise = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    model = request.getfixturevalue("torchvision_models")[name]
    return name, model, LAYERS[name], noise, targets, 1e-4


def out_of_place(model: nn.Module) -> nn.Module:
    """A copy with out-of-place ReLUs: pytorch-grad-cam keeps a layer's output by reference,
    which a following in-place ReLU would overwrite (the function is the same)."""
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return reference
