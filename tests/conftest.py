"""Shared test helpers.

* :func:`hook_count` - the hooks a model carries; every explanation method must leave it as it
  was (the course's contract: no hook left behind, also after an exception). Import it with
  ``from conftest import hook_count`` (pytest puts ``tests/`` on ``sys.path``).
* :func:`assert_maps_close` - maps compared on the scale of their own values (the course's rule
  for float comparisons: exactness in float64, float32 to a tolerance relative to the maps'
  magnitude, never an absolute 1e-5); :func:`float64` - a float64 copy of a model.
* ``torchvision_models`` - torchvision's ResNet-18 and VGG-11 (10 classes, random weights),
  built once per session for every test file that compares methods on real architectures;
  each test that uses them is checked, at its teardown, not to have changed them.

Test tiers: ``make test`` runs everything, notebooks included (``--nbval-lax``);
``make test-fast`` leaves out the tests marked ``@pytest.mark.slow``. A test is slow when it takes
about a second or more of CPU (a notebook, an ImageNet-size model, a comparison with captum on
many inputs).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

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
    buffers = tuple(
        (name, b.dtype, float(b.detach().sum()))
        for name, b in model.named_buffers()
    )
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

