"""The exercise checks accept every correct answer and reject the plausible wrong ones.

Each case takes an exercise's answer cell and its check cell from the notebook as they are
(hidden tests included) and runs them in a small namespace standing in for the cells above them
(the same models, a few fresh images, the notebook's own helper functions run from its cells).
The notebook's own solution must pass; a correct answer written another way (another order of
the sums, another function of torch) must pass too; and each mutation, a wrong answer a student
plausibly writes, must make the check fail. A check that compares float32 results to a
tolerance below their rounding fails the second kind on another CPU, and a check that cannot
fail passes the third: both are caught here. Every exercise of notebooks 01 to 11 is covered;
chapter 09 runs on ResNet-50 with torchvision's random weights, as the notebook does offline
(its photos are scikit-image's, on the disk). Where a check fixes a costly computation (800
scenes encoded six times, ResNet-50's maps), the library's pure functions are remembered within
a case, so that the variants of one exercise ask each question once.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.filters import gaussian, sobel
from torch import nn

import vismap as vm

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [pytest.mark.slow, pytest.mark.portable]


@functools.cache
def notebook_cells(notebook: str) -> tuple:
    return tuple(nbformat.read(NOTEBOOKS / notebook, as_version=4).cells)


def exercise(notebook: str, grade_id: str) -> tuple[str, str]:
    """``(answer source, check source)`` of the exercise ``grade_id`` of ``notebook``."""
    by_id = {
        c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in notebook_cells(notebook)
    }
    return by_id[grade_id], by_id[grade_id + "-check"]


def run_cell(namespace: dict, notebook: str, marker: str, only_definitions: bool = True) -> dict:
    """Run the code cell of ``notebook`` that contains ``marker`` in ``namespace``: only its
    functions and classes (not its measurements and figures), or all of it."""
    source = next(
        c.source for c in notebook_cells(notebook) if c.cell_type == "code" and marker in c.source
    )
    tree = ast.parse(source)
    if only_definitions:
        tree.body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    exec(compile(tree, notebook, "exec"), namespace)  # noqa: S102 (the course's own cells)
    return namespace


def passes(namespace: dict, answer: str, check: str) -> bool:
    """Run the answer, then its check, in a copy of ``namespace``: True when the check passes.
    Any error the answer or the check raises is a failed check, as the student sees it (a wrong
    answer may fail before its check runs), but a ``NameError``, which means this file's
    namespace lacks a name the notebook defines."""
    scope = dict(namespace)
    try:
        exec(compile(answer, "<answer>", "exec"), scope)  # noqa: S102 (the course's own cells)
        exec(compile(check, "<check>", "exec"), scope)  # noqa: S102
    except NameError:
        raise
    except Exception:
        return False
    return True


def mutated(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"the solution no longer contains {old!r}"
    return source.replace(old, new)


def remembered(function: Callable) -> Callable:
    """``function`` computed once for each value of its arguments (a tensor by its content, a
    model by its identity), then copied: the variants of a case ask the library's pure, costly
    functions the same questions, and answering each once keeps this file cheap."""
    memo: dict = {}

    def key(value):
        if isinstance(value, torch.Tensor):
            data = value.detach().contiguous().numpy().tobytes()
            return str(value.dtype), tuple(value.shape), hashlib.sha1(data).hexdigest()
        if isinstance(value, (tuple, list)):
            return tuple(key(v) for v in value)
        if isinstance(value, dict):
            return tuple((k, key(v)) for k, v in sorted(value.items()))
        return value if isinstance(value, (bool, int, float, str, type(None))) else id(value)

    def fresh(value):
        if isinstance(value, tuple):
            return tuple(fresh(v) for v in value)
        return value.clone() if isinstance(value, torch.Tensor) else value

    def call(*args, **kwargs):
        k = key((args, kwargs))
        if k not in memo:
            memo[k] = function(*args, **kwargs)
        return fresh(memo[k])

    return call


def remember_forward(model: nn.Module) -> nn.Module:
    """``model``, whose forward passes without gradients are remembered (not for a copy of it:
    a copy would share the original's forward)."""
    forward, memo = model.forward, remembered(model.forward)
    model.forward = lambda *args: memo(*args) if not torch.is_grad_enabled() else forward(*args)
    return model


class Standin:
    """``target`` with some of its attributes replaced, e.g. ``vm`` with a remembered method."""

    def __init__(self, target, **replaced):
        self.target, self.replaced = target, replaced

    def __getattr__(self, name):
        return self.replaced[name] if name in self.replaced else getattr(self.target, name)


@functools.cache
def _pretrained(name: str) -> nn.Module:
    return vm.models.load_pretrained(name)


def pretrained(name: str) -> nn.Module:
    """A fresh copy of a course model, read from the disk once per module."""
    return copy.deepcopy(_pretrained(name))


@functools.cache
def resnet50() -> vm.models.ImageNetModel:
    net = vm.models.imagenet("resnet50", weights=None)  # random: chapter 09 offline
    remember_forward(net.model)  # its class, asked for by the answer and again by the check
    return net


BASE = {"copy": copy, "np": np, "torch": torch, "F": F, "nn": nn, "vm": vm}
CLASSES = vm.data.SHAPE_CLASSES


def _shapes_namespace(n: int, seed: int = 2016) -> dict:
    test = vm.data.make_shapes(n, seed=seed)
    return {
        **BASE,
        "CLASSES": CLASSES,
        "test": test,
        "x": test.images,
        "labels": test.labels,
        "masks": test.masks[:, 0],
        "LAYER": "features.10",
        "cnn": pretrained("shapes-cnn"),
        "gap": pretrained("shapes-gap"),
        "allconv": pretrained("shapes-allconv"),
    }


def ns_01() -> dict:
    nb = "01_convolution.ipynb"
    model = pretrained("shapes-cnn")
    shapes = vm.data.make_shapes(8, seed=0)
    namespace = {
        **BASE,
        "sliding_window_view": sliding_window_view,
        "model": model,
        "features": model.features,
        "image": shapes.images[0],
        "allconv": pretrained("shapes-allconv"),
        "x_pos": torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) + 0.1,
    }
    for marker in (
        "def all_outputs",
        "def receptive_fields",
        "def all_paths_open",
        "def equivariance_error",
    ):
        run_cell(namespace, nb, marker)
    obj = shapes.images[0] * shapes.masks[0, 0]  # section 4's object, alone on black
    x0, y0, x1, y1 = shapes.boxes[0, 0].tolist()
    centre = (32 - (y0 + y1) // 2, 24 - (x0 + x1) // 2)
    namespace["obj"] = torch.roll(obj, centre, dims=(1, 2))[None]
    run_cell(namespace, nb, "dilated = copy.deepcopy(allconv)", only_definitions=False)
    return run_cell(namespace, nb, "def allconv_error", only_definitions=False)


def ns_02() -> dict:
    nb = "02_gradient_descent.ipynb"
    lams, turn = np.array([1.0, 10.0]), np.deg2rad(30)
    q = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    namespace = {
        **BASE,
        "lams": lams,
        "A": q @ np.diag(lams) @ q.T,
        "theta_star": np.array([1.0, 0.5]),
        "start": np.array([-3.5, 2.5]),
        "eta_max": 2 / lams.max(),
        "etas": {"best": 2 / lams.sum()},
        "lam": 2.0,
    }
    run_cell(namespace, nb, "def gd(")
    return run_cell(namespace, nb, "def quad_grad")


def ns_03() -> dict:
    model = pretrained("shapes-cnn")
    return {**BASE, "model": model, "features": model.features, "SEARCH_SEED": 7}


def ns_03_occlusion() -> dict:
    heldout = vm.data.make_shapes(50, seed=2015)
    x_occ, y_occ, masks_occ = heldout.images, heldout.labels, heldout.masks[:, 0]
    mean_colour = x_occ.mean((2, 3), keepdim=True)
    occlusion = remembered(vm.explain.occlusion)
    namespace = {
        **BASE,
        "vm": Standin(vm, explain=Standin(vm.explain, occlusion=occlusion)),
        "model": pretrained("shapes-cnn"),
        "WINDOW": 13,
        "x_occ": x_occ,
        "y_occ": y_occ,
        "masks_occ": masks_occ,
        "mean_colour": mean_colour,
        "area": masks_occ.float().mean((1, 2)),
    }
    run_cell(namespace, "03_zeiler_fergus.ipynb", "def occlusion_maps")
    maps = namespace["occlusion_maps"](x_occ, y_occ, mean_colour)  # window 13, stride 13
    namespace["share"] = namespace["on_object"](maps, masks_occ)[0]
    return namespace


def ns_04() -> dict:
    tiny = nn.Sequential(
        nn.Flatten(), nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False)
    )
    with torch.no_grad():
        tiny[1].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
        tiny[3].weight.copy_(torch.tensor([[-2.0, 3.0]]))
    x_tiny = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).view(2, 2, 1, 1)
    return {**_shapes_namespace(16), "tiny": tiny, "x_tiny": x_tiny}


def ns_04_pairs() -> dict:
    nb = "04_springenberg.ipynb"
    pairs = vm.data.make_shapes(64, seed=2017, objects=2)
    namespace = {
        **BASE,
        "RIM": 1,
        "pairs": pairs,
        "A": pairs.labels[:, 0],
        "B": pairs.labels[:, 1],
        "METHODS": {
            "gradient": vm.explain.saliency,
            "deconvnet": vm.explain.deconvnet,
            "guided backprop": vm.explain.guided_backprop,
        },
    }
    for marker in ("def with_rim", "def magnitude", "def pearson"):
        run_cell(namespace, nb, marker)
    with_rim = namespace["with_rim"]
    return {
        **namespace,
        "mask_a": with_rim(pairs.masks[:, 0]),
        "mask_b": with_rim(pairs.masks[:, 1]),
    }


def ns_04_lrp() -> dict:
    from vismap.explain import relevance

    return {**BASE, "relevance": relevance}


def ns_06() -> dict:
    return _shapes_namespace(16)


def ns_06_layers() -> dict:
    test = vm.data.make_shapes(500, seed=2017)  # the notebook's test set; x[:200] is 100 here
    gradcam = remembered(vm.explain.gradcam)  # the check measures the answer's four again
    return {
        **BASE,
        "vm": Standin(vm, explain=Standin(vm.explain, gradcam=gradcam)),
        "cnn": pretrained("shapes-cnn"),
        "x": test.images[:100],
        "labels": test.labels[:100],
        "masks": test.masks[:100, 0],
    }


def ns_07() -> dict:
    vae = pretrained("sprites-vae")
    xs = vm.data.make_sprites(64, seed=707).images
    with torch.no_grad():
        kl = vm.vae.kl_per_dim(*vae(xs)).mean(0)
    x_dim, y_dim, scale_dim = kl.argsort(descending=True)[:3].tolist()  # three active latents
    return {**BASE, "vae": vae, "xs": xs, "X": x_dim, "Y": y_dim, "SCALE": scale_dim}


def ns_07_disputed() -> dict:
    vae = pretrained("sprites-vae")
    held = vm.data.make_sprites(50, seed=vm.data.HELDOUT_SEED + 7)
    with torch.no_grad():
        mu, logvar = vae(held.images)
    kl = vm.vae.kl_per_dim(mu, logvar).mean(0)
    corr = np.abs(vm.disentangle.factor_correlation(mu, held.factors))
    x_dim, y_dim, scale_dim = (int(corr[:, k].argmax()) for k in (3, 4, 1))  # pos_x, y, scale
    return {
        **BASE,
        "vae": vae,
        "xs": held.images,
        "X": x_dim,
        "Y": y_dim,
        "SCALE": scale_dim,
        "active": [i for i in range(vae.latents) if kl[i] > 0.1],
    }


def ns_07_scenes() -> dict:
    vae2 = remember_forward(pretrained("sprites2-vae"))  # the check encodes the scenes 5 times
    scenes = vm.data.make_sprites(400, seed=vm.data.HELDOUT_SEED + 7, objects=2)
    with torch.no_grad():
        mu, logvar = vae2(scenes.images)
    kl = vm.vae.kl_per_dim(mu, logvar).mean(0)
    best = vm.disentangle.best_latents(mu, kl, scenes.factors[:, 1, 3:5])  # B's x and y
    follows = {"B": sorted(set(best))}
    torch.manual_seed(0)
    untrained = vm.vae.BroadcastVAE().eval()
    with torch.no_grad():
        mu0, logvar0 = untrained(scenes.images)
    best0 = vm.disentangle.best_latents(
        mu0, vm.vae.kl_per_dim(mu0, logvar0).mean(0), scenes.factors[:, 1, 3:5], min_kl=0.0
    )

    def hits(model, dims):
        maps = vm.explain.factor_cam(model, scenes.images[:300], dims)
        return torch.stack(
            [vm.metrics.pointing_game(maps, scenes.masks[:300, k]) for k in (1, 0)], 1
        ).float()

    table2 = {
        "B": {"KL": hits(vae2, follows["B"]), "untrained": hits(untrained, sorted(set(best0)))}
    }
    return {**BASE, "vae2": vae2, "scenes": scenes, "follows": follows, "table2": table2}


def ns_08_curves() -> dict:
    cnn, n = pretrained("shapes-cnn"), 64
    test = vm.data.make_shapes(n, seed=vm.train.HELDOUT_SEED + 8)
    x, labels = test.images, test.labels
    maps = {
        "Grad-CAM": vm.explain.METHODS["gradcam"](cnn, x, labels, layer="features.10"),
        "random map": torch.rand(n, 1, 64, 64, generator=torch.Generator().manual_seed(0)),
    }
    maps = {name: m.detach() for name, m in maps.items()}
    deletion = remembered(vm.metrics.deletion_curve)
    curves = {
        name: {"deletion": deletion(cnn, x, labels, m, steps=16, baseline="blur")}
        for name, m in maps.items()
    }
    return {
        **BASE,
        "vm": Standin(vm, metrics=Standin(vm.metrics, deletion_curve=deletion)),
        "cnn": cnn,
        "x": x,
        "labels": labels,
        "N_CURVES": n,
        "STEPS": 16,
        "maps": maps,
        "curves": curves,
        "LEADERBOARD": {name: (cnn,) for name in maps},
    }


def ns_09_own_photo() -> dict:
    folder = tempfile.TemporaryDirectory()  # removed with the namespace
    own_path = Path(folder.name) / "camera.png"
    Image.fromarray(skimage.data.camera()).save(own_path)
    return {**BASE, "resnet": resnet50(), "Image": Image, "own_path": own_path, "_folder": folder}


def ns_09_edges() -> dict:
    resnet = resnet50()
    photos = {name: vm.models.load_photo(name) for name in vm.models.PHOTOS}
    guided = remembered(vm.explain.guided_backprop)  # a second per ResNet-50 map
    namespace = {
        **BASE,
        "vm": Standin(vm, explain=Standin(vm.explain, guided_backprop=guided)),
        "resnet": resnet,
        "photos": photos,
        "x_all": torch.cat([resnet.preprocess(p) for p in photos.values()]),
        "crops": {name: resnet.crop(p) for name, p in photos.items()},
        "TIGER_CAT": resnet.index("tiger cat"),
        "rgb2gray": rgb2gray,
        "gaussian": gaussian,
        "sobel": sobel,
    }
    run_cell(namespace, "09_real_photos.ipynb", "def magnitude")
    run_cell(namespace, "09_real_photos.ipynb", "def edge_correlation")
    x_cat = namespace["x_all"][list(photos).index("chelsea")][None]  # section 5's number
    rho = namespace["edge_correlation"](
        guided(resnet.model, x_cat, namespace["TIGER_CAT"]), namespace["crops"]["chelsea"]
    )
    return {**namespace, "rho": {("resnet50", "edges", "guided backprop"): rho}}


def ns_10() -> dict:
    namespace = _shapes_namespace(8)
    return {**namespace, "cnn64": copy.deepcopy(namespace["cnn"]).double()}


def ns_11() -> dict:
    nb = "11_vit.ipynb"
    vit64 = pretrained("shapes-vit").double()
    seed = vm.data.HELDOUT_SEED + 11
    namespace = {
        **BASE,
        "vit64": vit64,
        "BLOCKS": [f"blocks.{i}" for i in range(len(vit64.blocks))],
        "pairs": vm.data.make_shapes(24, seed=seed, objects=2),
        "single": vm.data.make_shapes(3, seed=seed),
    }
    for marker in ("def tokens_by_hand", "def record_attention"):
        run_cell(namespace, nb, marker)
    return namespace


# (notebook, grade id, namespace, correct answers written another way, mutations)
CASES: list[tuple[str, str, Callable[[], dict], list[tuple[str, str]], list[tuple[str, str]]]] = [
    (
        "01_convolution.ipynb",
        "conv2d-strided",
        ns_01,
        [
            (
                "    windows = sliding_window_view(x, (K, K), axis=(1, 2))[:, ::stride, ::stride]\n"
                '    y = np.einsum("chwuv,ocuv->ohw", windows, w)\n',
                "    rows = range(0, x.shape[1] - K + 1, stride)\n"
                "    cols = range(0, x.shape[2] - K + 1, stride)\n"
                "    y = np.array([[[np.tensordot(w[o], x[:, i:i + K, j:j + K], 3) for j in cols]\n"
                "                   for i in rows] for o in range(len(w))])\n",
            )
        ],
        [
            ("[:, ::stride, ::stride]", ""),  # every window, not every stride-th
            (
                "    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))\n",
                "",
            ),  # no padding
            ("windows, w)", "windows, w[..., ::-1, ::-1])"),
        ],
    ),  # the textbook (flipped) convolution
    (
        "01_convolution.ipynb",
        "receptive-field",
        ns_01,
        [
            (
                "my_rf = [3, 5, 13, 17, 33, 41, 57, 57]\nmy_jump = [1, 2, 2, 4, 4, 8, 8, 8]",
                "r, j, my_rf, my_jump = 1, 1, [], []\n"
                "for layer in (dilated.features[i] for i in convs):\n"
                "    r, j = r + layer.dilation[0] * (layer.kernel_size[0] - 1) * j, j * layer.stride[0]\n"
                "    my_rf.append(r)\n"
                "    my_jump.append(j)",
            )
        ],
        [
            (
                "my_rf = [3, 5, 13, 17, 33, 41, 57, 57]",  # section 3's recursion, without the dilation
                "my_rf = [receptive_fields(dilated.features)[i][0] for i in convs]",
            ),
            (
                "my_rf = [3, 5, 13, 17, 33, 41, 57, 57]",  # a dilated kernel taken to span d k units
                "my_rf = [3, 5, 15, 19, 39, 47, 63, 63]",
            ),
            ("my_jump = [1, 2, 2, 4, 4, 8, 8, 8]", "my_jump = [1, 1, 2, 2, 4, 4, 8, 8]"),
        ],
    ),  # j before
    (
        "01_convolution.ipynb",
        "equivariance-limit",
        ns_01,
        [
            (
                "answer = max(exact_2px)",
                "answer = next(i for i in rf_all if rf_all[i][1] > 2) - 1  # the last layer of jump 2",
            )
        ],
        [
            ("answer = max(exact_2px)", "answer = max(exact_2px) + 1"),  # the first inexact layer
            ("allconv_error(i, 2, out_a2) < 1e-5", "allconv_error(i, 1, out_a1) < 1e-5"),  # 1 px
            (
                "answer = max(exact_2px)",  # the last exact convolution, not the last exact layer
                "answer = max(i for i in exact_2px if isinstance(allconv.features[i], nn.Conv2d))",
            ),
        ],
    ),
    (
        "02_gradient_descent.ipynb",
        "momentum",
        ns_02,
        [
            (
                "    v = np.zeros_like(path[0])\n"
                "    for _ in range(steps):\n"
                "        v = beta * v - eta * grad_fn(path[-1])\n"
                "        path.append(path[-1] + v)\n",
                "    for k in range(steps):  # theta_k+1 = theta_k - eta grad + beta (theta_k - theta_k-1)\n"
                "        previous = path[k - 1] if k else path[0]\n"
                "        path.append(path[k] - eta * grad_fn(path[k]) + beta * (path[k] - previous))\n",
            ),
            (
                "eta_hb = 4 / (np.sqrt(lams.max()) + np.sqrt(lams.min())) ** 2",
                "eta_hb = 4 / lams.min() / (np.sqrt(kappa) + 1) ** 2",
            ),
        ],
        [
            (
                "v = beta * v - eta * grad_fn(path[-1])",  # PyTorch's dampening
                "v = beta * v - (1 - beta) * eta * grad_fn(path[-1])",
            ),
            (
                "beta_hb = ((np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)) ** 2",  # not squared
                "beta_hb = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)",
            ),
            (
                "eta_hb = 4 / (np.sqrt(lams.max()) + np.sqrt(lams.min())) ** 2",  # plain GD's best step
                "eta_hb = 2 / (lams.max() + lams.min())",
            ),
        ],
    ),
    (
        "02_gradient_descent.ipynb",
        "stable-step",
        ns_02,
        [("    for _ in range(40):\n", "    while high - low > 1e-9:\n")],
        [
            (
                "        return np.linalg.norm(theta - theta_star) <= d0\n",  # only "did not explode"
                "        return True\n",
            ),
            (
                "        return np.linalg.norm(theta - theta_star) <= d0\n",  # a looser "stable"
                "        return np.linalg.norm(theta - theta_star) <= 2 * d0\n",
            ),
            (
                "low, high = (mid, high) if stable(mid) else (low, mid)",  # the halves swapped
                "low, high = (low, mid) if stable(mid) else (mid, high)",
            ),
            ("    for _ in range(40):\n", "    for _ in range(6):\n"),
        ],
    ),  # too few halvings
    (
        "02_gradient_descent.ipynb",
        "fixed-radius",
        ns_02,
        [("d * g / np.linalg.norm(g)", "d * g / np.sqrt(np.sum(g * g))")],
        [
            ("d * g / np.linalg.norm(g)", "d * g"),  # plain gradient descent with eta = d
            ("d * g / np.linalg.norm(g)", "d * np.sign(g)"),  # right in 1-D only
            ("    for _ in range(steps):\n", "    for _ in range(steps - 1):\n"),
        ],
    ),  # one step short
    (
        "03_zeiler_fergus.ipynb",
        "unpool",
        ns_03,
        [
            (
                "return F.max_unpool2d(signal, switches, 2, output_size=size[-2:])",
                "out = torch.zeros(size, dtype=signal.dtype)\n"
                "    out.flatten(2).scatter_(2, switches.flatten(2), signal.flatten(2))\n"
                "    return out",
            )
        ],
        [
            (
                "return F.max_unpool2d(signal, switches, 2, output_size=size[-2:])",  # copies, no switches
                "return F.interpolate(signal, size=size[-2:], mode='nearest')",
            ),
            ("output_size=size[-2:]", "output_size=None"),
        ],
    ),  # an odd size comes back one short
    (
        "03_zeiler_fergus.ipynb",
        "occlusion-window",
        ns_03_occlusion,
        [
            (
                "maps_26 = occlusion_maps(x_occ[:50], y_occ[:50], mean_colour[:50], window=26, stride=13)",
                "maps_26 = vm.explain.occlusion(model, x_occ[:50], y_occ[:50], window=26, stride=13,\n"
                "                               baseline=mean_colour[:50])",
            ),
            ("area[:50].mean().item()", "masks_occ[:50].float().mean().item()"),
        ],
        [
            ("window=26, stride=13", "window=13, stride=13"),  # the 13 px window again
            ("window=26, stride=13", "window=26, stride=26"),  # stride = window
            ("mean_colour[:50], window=26", "torch.full((50, 1, 1, 1), 0.5), window=26"),  # grey
            (
                "ratio_26 = share_26.mean().item() / area[:50].mean().item()",  # a mean of ratios
                "ratio_26 = (share_26 / area[:50]).mean().item()",
            ),
        ],
    ),
    (
        "04_springenberg.ipynb",
        "guided-relu",
        ns_04,
        [
            (
                "score = out.gather(1, torch.as_tensor(target).expand(len(x))[:, None]).sum()",
                "score = (out * F.one_hot(torch.as_tensor(target).expand(len(x)), out.shape[1])).sum()",
            )
        ],
        [
            ("return (y > 0) & (r > 0)", "return r > 0"),  # the deconvnet's rule
            ("return (y > 0) & (r > 0)", "return y > 0"),
        ],
    ),  # the gradient's rule
    (
        "04_springenberg.ipynb",
        "gap-insensitive",
        ns_04_pairs,
        [
            (
                "m = METHODS[method_name](gap_net, torch.cat([sub, sub]), torch.cat([a_cls, b_cls]))",
                "m = torch.cat([METHODS[method_name](gap_net, sub, a_cls),\n"
                "               METHODS[method_name](gap_net, sub, b_cls)])",
            )
        ],
        [
            ("pearson(mag_a, mag_b)", "pearson(m[:k], m[k:])"),  # the signed maps
            ("(on_other / on_asked)", "(on_asked / on_other)"),  # the ratio upside down
            ("mask_a[:k], mask_b[:k]", "pairs.masks[:k, 0], pairs.masks[:k, 1]"),
        ],
    ),  # without the rim
    (
        "04_springenberg.ipynb",
        "lrp-epsilon",
        ns_04_lrp,
        [
            (
                "s = r / torch.where(z >= 0, z + eps, z - eps)\n    return a * (s @ w)",
                "s = r / (z + eps * (2 * (z >= 0).to(z.dtype) - 1))\n"
                "    return torch.einsum('nk,kj->nj', s, w) * a",
            ),
            ("z = a @ w.T + b", "z = torch.nn.functional.linear(a, w, b)"),
        ],
        [
            ("torch.where(z >= 0, z + eps, z - eps)", "z"),  # no stabiliser: 0 / 0
            ("torch.where(z >= 0, z + eps, z - eps)", "(z + eps * torch.sign(z))"),  # sign(0) = 0
            ("torch.where(z >= 0, z + eps, z - eps)", "(z + eps)"),  # not signed
            ("z = a @ w.T + b", "z = a @ w.T"),  # the bias forgotten
        ],
    ),
    (
        "04_springenberg.ipynb",
        "lrp-zplus",
        ns_04_lrp,
        [
            ("w.clamp(min=0), b.clamp(min=0)", "torch.relu(w), F.relu(b)"),
            ("torch.where(z == 0, 0.0, r / z)", "r / torch.where(z == 0, torch.inf, z)"),
        ],
        [
            ("w.clamp(min=0), b.clamp(min=0)", "w.clamp(max=0), b.clamp(min=0)"),  # w- not w+
            ("w.clamp(min=0), b.clamp(min=0)", "w.clamp(min=0), b"),  # the whole bias
            ("z = a @ w_plus.T + b_plus", "z = a @ w_plus.T"),  # the bias forgotten
            ("return a * (s @ w_plus)", "return a * (s @ w)"),  # w in the numerator
            ("torch.where(z == 0, 0.0, r / z)", "r / z"),  # 0 / 0 where nothing is positive
        ],
    ),
    (
        "05_cam.ipynb",
        "cam-by-hand",
        lambda: _shapes_namespace(16),
        [
            (
                "runner_up_maps = F.interpolate((w_second[:, :, None, None] * feats).sum(1, keepdim=True),",
                "runner_up_maps = F.interpolate(torch.einsum('nk,nkij->nij', w_second.double(), "
                "feats.double())[:, None].float(),",
            )
        ],
        [
            (".indices[:, 1]", ".indices[:, 0]"),  # the top class, not the runner-up
            ('mode="bilinear", align_corners=False', 'mode="bilinear", align_corners=True'),
            ('mode="bilinear", align_corners=False', 'mode="nearest"'),
        ],
    ),
    (
        "05_cam.ipynb",
        "box-rule",
        lambda: {**_shapes_namespace(50), "ndimage": ndimage},
        [
            (
                "        rows, cols = np.nonzero(labels == largest)\n"
                "        out[k] = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])\n",
                "        rows, cols = ndimage.find_objects(labels)[largest - 1]\n"
                "        out[k] = torch.tensor([cols.start, rows.start, cols.stop, rows.stop])\n",
            )
        ],
        [
            (", structure=np.ones((3, 3))", ""),  # 4-connected components
            (
                "cols.max() + 1, rows.max() + 1",
                "cols.max(), rows.max()",
            ),  # the last pixel, not its edge
            (
                "largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))",
                "largest = 1",
            ),  # first
            ("m >= threshold * m.max()", "m >= threshold"),  # not relative to the map's maximum
            ("m >= threshold * m.max()", "m > threshold * m.max()"),
        ],
    ),  # the threshold itself left out
    (
        "06_gradcam.ipynb",
        "gradcam-weights",
        ns_06,
        [
            (
                "alpha = grad.mean((2, 3), keepdim=True)",
                "alpha = grad.flatten(2).sum(2)[..., None, None] / grad[0, 0].numel()",
            )
        ],
        [
            ("alpha = grad.mean((2, 3), keepdim=True)", "alpha = grad.sum((2, 3), keepdim=True)"),
            (
                'return alpha, F.relu((alpha * stored["A"]).sum(1, keepdim=True)).detach()',
                'return alpha, (alpha * stored["A"]).sum(1, keepdim=True).detach()',
            ),
        ],
    ),
    (
        "06_gradcam.ipynb",
        "gradcam-stops",
        ns_06_layers,
        [
            (
                "    below = [layer for layer in reversed(layers[:layers.index(best)])\n"
                "             if pointing[layer] < pointing[best] / 2]\n"
                "    return best, (below[0] if below else None)",
                "    k = layers.index(best) - 1\n"
                "    while k >= 0 and pointing[layers[k]] >= pointing[best] / 2:\n"
                "        k -= 1\n"
                "    return best, (layers[k] if k >= 0 else None)",
            )
        ],
        [
            (
                "layer=layer), masks[:200])",  # the ReLU after each convolution (section 3's layers)
                'layer=f"features.{int(layer[9:]) + 1}"), masks[:200])',
            ),
            ("masks[:200]).float().mean()", "masks[:200]).float().sum()"),  # hits, not the share
            (
                "pointing[layer] < pointing[best] / 2",  # below best, not below half of it
                "pointing[layer] < pointing[best]",
            ),
            (
                "reversed(layers[:layers.index(best)])",  # searched from the input end
                "layers[:layers.index(best)]",
            ),
            ("    best = max(layers, key=pointing.get)", "    best = layers[-1]"),  # the last layer
        ],
    ),
    (
        "07_factor_maps.ipynb",
        "ex07-factor-map",
        ns_07,
        [
            (
                "kl_i = 0.5 * (mu_[:, i] ** 2 + logvar_[:, i].exp() - logvar_[:, i] - 1)",
                "kl_i = vm.vae.kl_per_dim(mu_, logvar_)[:, i]",
            )
        ],
        [
            (
                "kl_i = 0.5 * (mu_[:, i] ** 2 + logvar_[:, i].exp() - logvar_[:, i] - 1)",
                "kl_i = mu_[:, i]",
            ),  # the mean, not the factor's KL
            ('F.relu(grad) * stored["A"]', 'grad * stored["A"]'),  # no inner ReLU
            ('F.relu(grad) * stored["A"]', 'F.relu(grad).mean((2, 3), keepdim=True) * stored["A"]'),
        ],
    ),
    (
        "07_factor_maps.ipynb",
        "ex07-object-b",
        ns_07_scenes,
        [
            (
                "    corr_ = np.abs(vm.disentangle.factor_correlation(mu_, scenes.factors[:, k]))  # (latents, 5)\n"
                "    corr_[~active_] = -1.0  # a dead latent is never chosen\n"
                "    return sorted({int(corr_[:, 3].argmax()), int(corr_[:, 4].argmax())})",
                "    both = torch.cat([mu_, scenes.factors[:, k, 3:5].to(mu_.dtype)], 1).T  # x, y last\n"
                "    corr_ = torch.corrcoef(both)[-2:, :-2].abs()  # (2 factors, latents)\n"
                "    corr_[:, torch.from_numpy(~active_)] = -1.0\n"
                "    return sorted(set(corr_.argmax(1).tolist()))",
            )
        ],
        [
            ('{"A": 0, "B": 1}[obj]', '{"A": 1, "B": 0}[obj]'),  # the objects swapped
            (
                "corr_[:, 3].argmax()), int(corr_[:, 4]",  # scale and orientation, not x, y
                "corr_[:, 1].argmax()), int(corr_[:, 2]",
            ),
            (
                "    corr_[~active_] = -1.0  # a dead latent is never chosen\n",
                "",
            ),  # dead latents too
            (
                "b_map = vm.explain.factor_cam(vae2, scenes.images[:300], b_latents)",  # the mu statistic
                "b_map = vm.explain.factor_cam(vae2, scenes.images[:300], b_latents, statistic='mu')",
            ),
            (
                "scenes.masks[:300, 1]).float().mean().item(),\n"  # on A first, then on B
                "            vm.metrics.pointing_game(b_map, scenes.masks[:300, 0])",
                "scenes.masks[:300, 0]).float().mean().item(),\n"
                "            vm.metrics.pointing_game(b_map, scenes.masks[:300, 1])",
            ),
        ],
    ),
    (
        "07_factor_maps.ipynb",
        "ex07-disputed",
        ns_07_disputed,
        [
            (
                "    return 1 - joint.sum().item() / total.sum().item()\n",
                "    return ((total.sum() - joint.sum()) / total.sum()).item()\n",
            ),
            (
                "pair = max(pairs, key=lambda p: disputed_share(vae, xs[:100], p))",
                "pair = next(p for p in pairs if disputed_share(vae, xs[:100], p) > 0.05)",
            ),
        ],
        [
            (
                "return 1 - joint.sum().item() / total.sum().item()",  # the share kept, not dropped
                "return joint.sum().item() / total.sum().item()",
            ),
            (
                "return 1 - joint.sum().item() / total.sum().item()",  # a mean of per-image shares
                "return (1 - joint.sum((1, 2, 3)) / total.sum((1, 2, 3))).mean().item()",
            ),
            (
                "joint = vm.explain.factor_cam(model, images, list(dims))",  # the joint map of the means
                "joint = vm.explain.factor_cam(model, images, list(dims), statistic='mu')",
            ),
        ],
    ),
    (
        "08_evaluating_explanations.ipynb",
        "ex08-relevance-mass",
        lambda: _shapes_namespace(200),
        [
            (
                "inside = (positive * masks).sum((1, 2))",
                "inside = torch.where(masks, positive, 0.0).flatten(1).sum(1)",
            )
        ],
        [
            (
                "positive = maps[:, 0].clamp(min=0)",
                "positive = maps[:, 0]",
            ),  # negative mass counted
            (
                "return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))",
                "return inside / total",
            ),
        ],
    ),  # 0 / 0 for a map with nothing positive
    (
        "08_evaluating_explanations.ipynb",
        "ex08-morf-lerf",
        ns_08_curves,
        [
            (
                "abpc[name] = (torch.trapezoid(lerf, dx=1 / STEPS, dim=1)",
                "abpc[name] = ((lerf[:, 1:] + lerf[:, :-1]).sum(1) / (2 * STEPS)",
            )
        ],
        [
            ("-maps[name][:N_CURVES]", "maps[name][:N_CURVES]"),  # most relevant first, twice
            ("lerf = vm.metrics.deletion_curve(", "lerf = vm.metrics.insertion_curve("),
            ('steps=STEPS, baseline="blur")', "steps=STEPS, baseline=0.0)"),
        ],
    ),  # another baseline
    (
        "09_real_photos.ipynb",
        "ex09-own-photo",
        ns_09_own_photo,
        [
            (
                "own = vm.models.load_photo(own_path)",
                "own = np.asarray(Image.open(own_path).convert('RGB'))",
            )
        ],
        [
            (
                "x_own = resnet.preprocess(own)",  # not normalised
                "x_own = torch.from_numpy(resnet.crop(own)).permute(2, 0, 1)[None].float() / 255",
            ),
            ('layer="layer4")', 'layer="layer4", upsampled=False)'),  # the 7 x 7 map
            ('layer="layer4")', 'layer="layer3")'),
        ],
    ),
    (
        "09_real_photos.ipynb",
        "ex09-edges",
        ns_09_edges,
        [
            (
                "edge_corr = {name: edge_correlation(gbp_all[i:i + 1], crops[name])",
                "edge_corr = {name: edge_correlation(vm.explain.guided_backprop(\n"
                "    resnet.model, x_all[i:i + 1], TIGER_CAT), crops[name])",
            )
        ],
        [
            ("least_edgy = min(", "least_edgy = max("),  # the most edgy
            ("crops[name])", 'crops["chelsea"])'),  # every map against chelsea's edges
            (
                "edge_correlation(gbp_all[i:i + 1], crops[name])",  # the map not blurred
                "pearson(magnitude(gbp_all[i:i + 1])[0].numpy(), edges(crops[name]))",
            ),
        ],
    ),
    (
        "10_beyond.ipynb",
        "ex10-riemann-ig",
        ns_10,
        [
            (
                "    total = torch.zeros_like(x)\n"
                "    for k in range(1, steps + 1):\n"
                "        point = (baseline + k / steps * (x - baseline)).requires_grad_(True)\n"
                "        score = model(point).gather(1, classes[:, None]).sum()\n"
                "        total += torch.autograd.grad(score, point)[0]\n",
                "    a = torch.arange(steps, 0, -1, dtype=x.dtype).view(-1, 1, 1, 1, 1) / steps\n"
                "    point = (baseline + a * (x - baseline)).flatten(0, 1).requires_grad_(True)\n"
                "    score = model(point).gather(1, classes.repeat(steps)[:, None]).sum()\n"
                "    total = torch.autograd.grad(score, point)[0].view(steps, *x.shape).sum(0)\n",
            )
        ],
        [
            ("for k in range(1, steps + 1):", "for k in range(steps):"),  # the left Riemann sum
            ("return (x - baseline) * total / steps", "return total / steps"),  # no (x - x')
            (
                "return (x - baseline) * total / steps",
                "return (x - baseline) * total / (steps + 1)",
            ),
        ],
    ),
    (
        "10_beyond.ipynb",
        "ex10-fgsm",
        ns_10,
        [
            (
                'loss = F.cross_entropy(model(x), classes, reduction="sum")',
                "loss = F.cross_entropy(model(x), classes)",
            )
        ],  # the mean: the same signs
        [
            ("(x + eps * grad.sign())", "(x - eps * grad.sign())"),  # towards the class
            ("(x + eps * grad.sign()).clamp(0, 1)", "(x + eps * grad.sign())"),  # leaves [0, 1]
            ("(x + eps * grad.sign())", "(x + eps * grad / grad.abs().amax())"),
        ],
    ),  # not the sign
]


CASES += [
    (
        "11_vit.ipynb",
        "ex11-tokens-grid",
        ns_11,
        [
            (
                "    patches = z[:, 1:]\n"
                "    return patches.reshape(len(z), h, w, z.shape[-1]).permute(0, 3, 1, 2)\n",
                "    return z[:, -h * w:].transpose(1, 2).reshape(len(z), -1, h, w)\n",
            )
        ],
        [
            ("patches = z[:, 1:]", "patches = z"),  # the class token kept
            ("patches = z[:, 1:]", "patches = z[:, :-1]"),  # the last token dropped, not the first
            (".permute(0, 3, 1, 2)", ".permute(0, 3, 2, 1)"),  # the grid transposed
        ],
    ),
    (
        "11_vit.ipynb",
        "ex11-rollout",
        ns_11,
        [
            (
                "A_hat = A_hat / A_hat.sum(-1, keepdim=True)",
                "A_hat = A_hat / A_hat.sum(2)[..., None]",
            ),
            ("R = A_hat @ R", "R = torch.einsum('nij,njk->nik', A_hat, R)"),
        ],
        [
            ("A_hat = 0.5 * fused + 0.5 * eye", "A_hat = fused"),  # no identity
            ("        A_hat = A_hat / A_hat.sum(-1, keepdim=True)\n", ""),  # no re-normalisation
            ("R = A_hat @ R", "R = R @ A_hat"),  # from the last block to the first
            ("R[:, 0, 1:]", "R[:, 1:, 0]"),  # the class token's column, not its row
        ],
    ),
]


def test_every_exercise_is_covered():
    graded = {
        (path.name, c.metadata["nbgrader"]["grade_id"])
        for path in sorted(NOTEBOOKS.glob("[01]*.ipynb"))
        for c in notebook_cells(path.name)
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    assert graded == {(c[0], c[1]) for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0][:2]}-{c[1]}" for c in CASES])
def test_check_accepts_correct_answers_and_rejects_wrong_ones(case):
    notebook, grade_id, namespace_of, correct, wrong = case
    answer, check = exercise(notebook, grade_id)
    solution = re.sub(r"^\s*### (BEGIN|END) SOLUTION\n", "", answer, flags=re.M)
    namespace = namespace_of()
    assert passes(namespace, solution, check), f"{grade_id}: the notebook's solution fails"
    for old, new in correct:
        assert passes(namespace, mutated(solution, old, new), check), (
            f"{grade_id}: a correct answer fails: {new!r}"
        )
    for old, new in wrong:
        assert not passes(namespace, mutated(solution, old, new), check), (
            f"{grade_id}: the check accepts a wrong answer: {new!r}"
        )
