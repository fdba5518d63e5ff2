"""Shared test helpers.

* :func:`hook_count` - the hooks a model carries; every explanation method must leave it as it
  was (the course's contract: no hook left behind, also after an exception). Import it with
  ``from conftest import hook_count`` (pytest puts ``tests/`` on ``sys.path``).
* ``torchvision_models`` - torchvision's ResNet-18 and VGG-11 (10 classes, random weights),
  built once per session for every test file that compares methods on real architectures.

Test tiers: ``make test`` runs everything, notebooks included (``--nbval-lax``);
``make test-fast`` leaves out the tests marked ``@pytest.mark.slow``. A test is slow when it takes
about a second or more of CPU (a notebook, an ImageNet-size model, a comparison with captum on
many inputs). :data:`SLOW_ELSEWHERE` marks the slow tests of files whose authors have not yet
marked them themselves.
"""

from __future__ import annotations

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


def _fingerprint(model: nn.Module) -> tuple:
    """What a test must not change in a shared model: mode, dtypes, requires_grad, hooks and
    the parameters' values (their sums)."""
    params = tuple(
        (name, p.dtype, p.requires_grad, float(p.detach().double().sum()))
        for name, p in model.named_parameters()
    )
    return model.training, hook_count(model), params


@pytest.fixture(scope="session")
def torchvision_models() -> Iterator[dict[str, nn.Module]]:
    """``{"resnet18": ..., "vgg11": ...}``: torchvision's architectures with 10 classes and
    random weights, drawn after ``torch.manual_seed(0)`` (ResNet-18 first; the global random
    state is left alone), in eval mode. VGG-11 alone has 129 M parameters, so they are built once
    per session and shared: a test must not change them (``copy.deepcopy`` one first, e.g.
    before ``.double()``); the session fails at teardown if one was changed."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = {
            "resnet18": torchvision.models.resnet18(num_classes=10).eval(),
            "vgg11": torchvision.models.vgg11(num_classes=10).eval(),
        }
    before = {name: _fingerprint(model) for name, model in models.items()}
    yield models
    changed = [name for name, model in models.items() if _fingerprint(model) != before[name]]
    assert not changed, f"a test changed the shared torchvision models {changed}"


# Slow tests (CPU seconds measured one thread, 2026-11) of files that do not mark them yet:
# file -> test function names. Each is marked slow at collection; the file's author should move
# the mark into the file (@pytest.mark.slow) and drop the entry. test_packaging checks that every
# entry names a test that exists.
SLOW_ELSEWHERE: dict[str, set[str]] = {
    "test_explain.py": {
        "test_occlusion_matches_captum",  # 7.7 s
        "test_zeiler_fergus_equals_the_deconvnet_rule",  # 9.8 s in all, VGG-11 in float64
        "test_occlusion_matches_captum_on_torchvision_models",  # 4.3 s
        "test_matches_captum_on_torchvision_models_with_inplace_relus",  # 8.1 s
        "test_no_growth_over_200_calls",  # 3.0 s
    },
    "test_coarse.py": {
        "test_matches_pytorch_grad_cam",  # 6.4 s
        "test_matches_captum_layer_gradcam_and_guided_gradcam",  # 3.0 s
    },
    "test_models.py": {
        "test_fit_reduces_the_loss_and_is_seeded",  # 3.5 s
        "test_shipped_checkpoint_reaches_its_manifest_accuracy",  # 6.1 s
    },
    "test_factors.py": {
        "test_shipped_vae_separates_x_and_y_position",  # 3.0 s
        "test_fit_vae_is_deterministic_and_learns",  # 2.4 s
    },
    "test_bench.py": {"test_smoke_report_has_every_row_with_finite_positive_times"},  # 2.8 s
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = SLOW_ELSEWHERE.get(item.path.name, ())
        if getattr(item, "originalname", None) in names:
            item.add_marker(pytest.mark.slow)
