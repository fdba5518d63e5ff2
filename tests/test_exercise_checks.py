"""The exercise checks accept every correct answer and reject the plausible wrong ones.

Each case takes an exercise's answer cell and its check cell from the notebook as they are
(hidden tests included) and runs them in a small namespace standing in for the cells above them
(the same models, a few fresh images). The notebook's own solution must pass; a correct answer
written another way (another order of the sums, another function of torch) must pass too; and
each mutation, a wrong answer a student plausibly writes, must make the check fail. A check
that compares float32 results to a tolerance below their rounding fails the second kind on
another CPU, and a check that cannot fail passes the third: both are caught here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vismap as vm
from vismap import _core

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [pytest.mark.slow, pytest.mark.portable]


def exercise(notebook: str, grade_id: str) -> tuple[str, str]:
    """``(answer source, check source)`` of the exercise ``grade_id`` of ``notebook``."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
    return by_id[grade_id], by_id[grade_id + "-check"]


def passes(namespace: dict, answer: str, check: str) -> bool:
    """Run the answer, then its check, in a copy of ``namespace``: True when the check passes.
    Any error the check raises is a failed check, as the student sees it, but a ``NameError``,
    which means this file's namespace lacks a name the notebook defines."""
    scope = dict(namespace)
    exec(compile(answer, "<answer>", "exec"), scope)  # noqa: S102 (the course's own cells)
    try:
        exec(compile(check, "<check>", "exec"), scope)  # noqa: S102
    except NameError:
        raise
    except Exception:
        return False
    return True


def mutated(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"the solution no longer contains {old!r}"
    return source.replace(old, new)


BASE = {"copy": copy, "np": np, "torch": torch, "F": F, "nn": nn, "vm": vm, "_core": _core}
CLASSES = vm.data.SHAPE_CLASSES


def _shapes_namespace(n: int) -> dict:
    test = vm.data.make_shapes(n, seed=2016)
    return {**BASE, "CLASSES": CLASSES, "test": test, "x": test.images, "labels": test.labels,
            "masks": test.masks[:, 0], "LAYER": "features.10",
            "cnn": vm.models.load_pretrained("shapes-cnn"),
            "gap": vm.models.load_pretrained("shapes-gap"),
            "allconv": vm.models.load_pretrained("shapes-allconv")}


def ns_03() -> dict:
    model = vm.models.load_pretrained("shapes-cnn")
    return {**BASE, "model": model, "features": model.features, "SEARCH_SEED": 7}


def ns_04() -> dict:
    tiny = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False), nn.ReLU(),
                         nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        tiny[1].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
        tiny[3].weight.copy_(torch.tensor([[-2.0, 3.0]]))
    x_tiny = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).view(2, 2, 1, 1)
    return {**_shapes_namespace(16), "tiny": tiny, "x_tiny": x_tiny}


def ns_06() -> dict:
    return _shapes_namespace(16)


def ns_07() -> dict:
    vae = vm.models.load_pretrained("sprites-vae")
    xs = vm.data.make_sprites(64, seed=707).images
    with torch.no_grad():
        kl = vm.vae.kl_per_dim(*vae(xs)).mean(0)
    x_dim, y_dim, scale_dim = kl.argsort(descending=True)[:3].tolist()  # three active latents
    return {**BASE, "vae": vae, "xs": xs, "X": x_dim, "Y": y_dim, "SCALE": scale_dim}


def ns_10() -> dict:
    namespace = _shapes_namespace(8)
    return {**namespace, "cnn64": copy.deepcopy(namespace["cnn"]).double()}


# (notebook, grade id, namespace, correct answers written another way, mutations)
CASES: list[tuple[str, str, Callable[[], dict], list[tuple[str, str]], list[tuple[str, str]]]] = [
    ("03_zeiler_fergus.ipynb", "unpool", ns_03,
     [("return F.max_unpool2d(signal, switches, 2, output_size=size[-2:])",
       "out = torch.zeros(size, dtype=signal.dtype)\n"
       "    out.flatten(2).scatter_(2, switches.flatten(2), signal.flatten(2))\n"
       "    return out")],
     [("return F.max_unpool2d(signal, switches, 2, output_size=size[-2:])",  # copies, no switches
       "return F.interpolate(signal, size=size[-2:], mode='nearest')"),
      ("output_size=size[-2:]", "output_size=None")]),  # an odd size comes back one short
    ("04_springenberg.ipynb", "guided-relu", ns_04,
     [("score = out.gather(1, torch.as_tensor(target).expand(len(x))[:, None]).sum()",
       "score = (out * F.one_hot(torch.as_tensor(target).expand(len(x)), out.shape[1])).sum()")],
     [("return (y > 0) & (r > 0)", "return r > 0"),  # the deconvnet's rule
      ("return (y > 0) & (r > 0)", "return y > 0")]),  # the gradient's rule
    ("05_cam.ipynb", "cam-by-hand", lambda: _shapes_namespace(16),
     [("runner_up_maps = F.interpolate((w_second[:, :, None, None] * feats).sum(1, keepdim=True),",
       "runner_up_maps = F.interpolate(torch.einsum('nk,nkij->nij', w_second.double(), "
       "feats.double())[:, None].float(),")],
     [(".indices[:, 1]", ".indices[:, 0]"),  # the top class, not the runner-up
      ('mode="bilinear", align_corners=False', 'mode="bilinear", align_corners=True'),
      ('mode="bilinear", align_corners=False', 'mode="nearest"')]),
    ("06_gradcam.ipynb", "gradcam-weights", ns_06,
     [("alpha = grad.mean((2, 3), keepdim=True)",
       "alpha = grad.flatten(2).sum(2)[..., None, None] / grad[0, 0].numel()")],
     [("alpha = grad.mean((2, 3), keepdim=True)", "alpha = grad.sum((2, 3), keepdim=True)"),
      ("return alpha, F.relu((alpha * stored[\"A\"]).sum(1, keepdim=True)).detach()",
       "return alpha, (alpha * stored[\"A\"]).sum(1, keepdim=True).detach()")]),
    ("07_factor_maps.ipynb", "ex07-factor-map", ns_07,
     [("kl_i = 0.5 * (mu_[:, i] ** 2 + logvar_[:, i].exp() - logvar_[:, i] - 1)",
       "kl_i = vm.vae.kl_per_dim(mu_, logvar_)[:, i]")],
     [("kl_i = 0.5 * (mu_[:, i] ** 2 + logvar_[:, i].exp() - logvar_[:, i] - 1)",
       "kl_i = mu_[:, i]"),  # the mean, not the factor's KL
      ("F.relu(grad) * stored[\"A\"]", "grad * stored[\"A\"]"),  # no inner ReLU
      ("F.relu(grad) * stored[\"A\"]", "F.relu(grad).mean((2, 3), keepdim=True) * stored[\"A\"]")]),
    ("08_evaluating_explanations.ipynb", "ex08-relevance-mass", lambda: _shapes_namespace(200),
     [("inside = (positive * masks).sum((1, 2))",
       "inside = torch.where(masks, positive, 0.0).flatten(1).sum(1)")],
     [("positive = maps[:, 0].clamp(min=0)", "positive = maps[:, 0]"),  # negative mass counted
      ("return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))",
       "return inside / total")]),  # 0 / 0 for a map with nothing positive
    ("10_beyond.ipynb", "ex10-riemann-ig", ns_10,
     [("    total = torch.zeros_like(x)\n"
       "    for k in range(1, steps + 1):\n"
       "        point = (baseline + k / steps * (x - baseline)).requires_grad_(True)\n"
       "        score = model(point).gather(1, classes[:, None]).sum()\n"
       "        total += torch.autograd.grad(score, point)[0]\n",
       "    a = torch.arange(steps, 0, -1, dtype=x.dtype).view(-1, 1, 1, 1, 1) / steps\n"
       "    point = (baseline + a * (x - baseline)).flatten(0, 1).requires_grad_(True)\n"
       "    score = model(point).gather(1, classes.repeat(steps)[:, None]).sum()\n"
       "    total = torch.autograd.grad(score, point)[0].view(steps, *x.shape).sum(0)\n")],
     [("for k in range(1, steps + 1):", "for k in range(steps):"),  # the left Riemann sum
      ("return (x - baseline) * total / steps", "return total / steps"),  # no (x - x')
      ("return (x - baseline) * total / steps", "return (x - baseline) * total / (steps + 1)")]),
    ("10_beyond.ipynb", "ex10-fgsm", ns_10,
     [('loss = F.cross_entropy(model(x), classes, reduction="sum")',
       "loss = F.cross_entropy(model(x), classes)")],  # the mean: the same signs
     [("(x + eps * grad.sign())", "(x - eps * grad.sign())"),  # towards the class
      ("(x + eps * grad.sign()).clamp(0, 1)", "(x + eps * grad.sign())"),  # leaves [0, 1]
      ("(x + eps * grad.sign())", "(x + eps * grad / grad.abs().amax())")]),  # not the sign
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0][:2]}-{c[1]}" for c in CASES])
def test_check_accepts_correct_answers_and_rejects_wrong_ones(case):
    notebook, grade_id, namespace_of, correct, wrong = case
    answer, check = exercise(notebook, grade_id)
    solution = re.sub(r"^\s*### (BEGIN|END) SOLUTION\n", "", answer, flags=re.M)
    namespace = namespace_of()
    assert passes(namespace, solution, check), f"{grade_id}: the notebook's solution fails"
    for old, new in correct:
        assert passes(namespace, mutated(solution, old, new), check), \
            f"{grade_id}: a correct answer fails: {new!r}"
    for old, new in wrong:
        assert not passes(namespace, mutated(solution, old, new), check), \
            f"{grade_id}: the check accepts a wrong answer: {new!r}"
