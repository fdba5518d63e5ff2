"""Shared test helpers.

* :func:`hook_count` - the hooks a model carries; every explanation method must leave it as it
  was (the course's contract: no hook left behind, also after an exception). Import it with
  ``from conftest import hook_count`` (pytest puts ``tests/`` on ``sys.path``).

Test tiers: ``make test`` runs everything, notebooks included (``--nbval-lax``);
``make test-fast`` leaves out the tests marked ``@pytest.mark.slow``.
"""

from __future__ import annotations

import os

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
