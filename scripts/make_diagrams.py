"""Draw the source document's diagrams with code: ``docs/figures/diagram_*.svg``.

The source report (``shared/seed``, rendered in English in COURSE.md) explains its methods with
five figures that the course had no counterpart for. This script draws them with matplotlib,
from the course's own architectures, data and checkpoints:

=============================  ===========================================================
file                           what it shows (chapter)
=============================  ===========================================================
diagram_cnn.svg                shapes-cnn from convolution to class score (01)
diagram_deconvnet.svg          a deconvnet layer attached to a convnet layer, Zeiler &
                               Fergus (2014) Fig. 1 (03)
diagram_cam.svg                the CAM pipeline of Zhou et al. (2016) Fig. 2, with the
                               real feature maps and weights of shapes-gap (05)
diagram_vae.svg                the VAE: encoder, posterior, reparameterised sample,
                               decoder, and the ELBO (07)
diagram_factor_map.svg         factor activation maps (the report's figures 7 and 8), with
                               the real maps of sprites-vae (07)
=============================  ===========================================================

The pictures inside the diagrams (a Shapes scene, a sprite, feature maps, gradients, maps) are
computed with fixed seeds from the shipped checkpoints, so the diagrams are reproducible; the
SVG files are written deterministically (fixed ids, no date), text as paths (no font is
needed to view them). ``--png DIR`` also writes PNG previews.

Usage: ``python scripts/make_diagrams.py [--out docs/figures] [--png build/diagrams]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle  # noqa: E402

import vismap as vm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures"
FS = 11  # font size of labels, in points: readable at the book's width
INK = "#222222"
BLUE, ORANGE, GREEN, RED, GREY, PURPLE = (
    "#dbe8f6",
    "#fde3c8",
    "#dcefd8",
    "#c0392b",
    "#eeeeee",
    "#e8ddf3",
)
MAP_CMAP = "jet"  # the course's colour map for explanation maps

plt.rcParams.update(
    {
        "svg.hashsalt": "vismap-diagrams",
        "font.size": FS,
        "font.family": "DejaVu Sans",
        "mathtext.fontset": "dejavusans",
    }
)


# --------------------------------------------------------------------------------------------
# Drawing helpers: a canvas in inches, boxes, arrows, stacks of feature maps, pictures
# --------------------------------------------------------------------------------------------


def canvas(width: float, height: float):
    """A figure whose axes fill it, with data coordinates in inches (0..width, 0..height)."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def fit(fig, ax, width: float) -> None:
    """Crop (or widen) the canvas to ``width`` inches, keeping the scale."""
    fig.set_size_inches(width, fig.get_size_inches()[1])
    ax.set_xlim(0, width)


def box(
    ax,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str = "",
    fc: str = BLUE,
    fs: float = FS,
    ec: str = INK,
    **kw,
) -> None:
    """A rounded box with its lower-left corner at (x, y) and ``text`` centred in it."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08", fc=fc, ec=ec, lw=1.2
        )
    )
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs, **kw)


def arrow(
    ax,
    p: tuple[float, float],
    q: tuple[float, float],
    text: str = "",
    color: str = INK,
    ls: str = "-",
    fs: float = FS - 1,
    offset: tuple = (0, 0.14),
    rad: float = 0.0,
    **kw,
) -> None:
    """An arrow from p to q, with ``text`` above its middle (shifted by ``offset``)."""
    ax.add_patch(
        FancyArrowPatch(
            p,
            q,
            arrowstyle="-|>",
            mutation_scale=14,
            color=color,
            lw=1.5,
            ls=ls,
            shrinkA=0,
            shrinkB=0,
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if text:
        ax.text(
            (p[0] + q[0]) / 2 + offset[0],
            (p[1] + q[1]) / 2 + offset[1],
            text,
            ha="center",
            va="bottom",
            fontsize=fs,
            color=color,
            **kw,
        )


def stack(
    ax, x: float, y: float, side: float, n: int, fc: str = BLUE, step: float = 0.06, shown: int = 5
) -> tuple[float, float, float, float]:
    """``n`` feature maps drawn as a stack of squares (at most ``shown``), front one at (x, y).
    Returns the stack's bounding box (x0, y0, x1, y1)."""
    k = min(n, shown)
    for i in reversed(range(k)):
        ax.add_patch(Rectangle((x + i * step, y + i * step), side, side, fc=fc, ec=INK, lw=1.0))
    return x, y, x + side + (k - 1) * step, y + side + (k - 1) * step


def picture(
    ax,
    array: np.ndarray,
    x: float,
    y: float,
    side: float,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 1.0,
    frame: bool = True,
) -> None:
    """An image (H, W) or (H, W, 3) in the square (x, y, side), nearest-neighbour."""
    ax.imshow(
        array,
        extent=(x, x + side, y, y + side),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        alpha=alpha,
        zorder=3,
    )
    if frame:
        ax.add_patch(Rectangle((x, y), side, side, fill=False, ec=INK, lw=1.0, zorder=4))


def overlay(ax, image: np.ndarray, heat: np.ndarray, x: float, y: float, side: float) -> None:
    """``heat`` (normalised to [0, 1]) laid over ``image``, as the notebooks show maps."""
    gray = image.mean(-1) if image.ndim == 3 else image
    picture(ax, gray, x, y, side, cmap="gray", vmin=0, vmax=1)
    picture(ax, heat, x, y, side, cmap=MAP_CMAP, vmin=0, vmax=1, alpha=0.55)


def norm(a: torch.Tensor) -> np.ndarray:
    a = a.detach().float()
    lo, hi = a.min(), a.max()
    return ((a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)).numpy()


def activation(
    model: torch.nn.Module,
    layer: str,
    x: torch.Tensor,
    grad_of: Callable[[object], torch.Tensor] | None = None,
):
    """The output A of ``layer`` for ``x`` and, if ``grad_of`` is given, the gradient of
    ``grad_of(model(x))`` with respect to it. The hook is removed before returning."""
    module = dict(model.named_modules())[layer]
    saved: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        saved["a"] = out
        if grad_of is not None:
            out.retain_grad()

    handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad_of is not None):
            out = model(x)
            if grad_of is not None:
                grad_of(out).sum().backward()
    finally:
        handle.remove()
    a = saved["a"]
    return a.detach(), (a.grad.detach() if grad_of is not None else None), out


# --------------------------------------------------------------------------------------------
# 1. The CNN, from convolution to class score (chapter 01)
# --------------------------------------------------------------------------------------------


def diagram_cnn():
    shapes = vm.data.make_shapes(1, seed=3)
    model = vm.models.load_pretrained("shapes-cnn")
    with torch.no_grad():
        scores = model(shapes.images)[0]
    image = shapes.images[0].permute(1, 2, 0).numpy()

    fig, ax = canvas(14.0, 4.3)
    base = 1.15  # the baseline the stacks stand on
    ax.text(
        0.2,
        4.05,
        "A convolutional network, from convolution to class score (the course's shapes-cnn)",
        fontsize=FS + 2,
        weight="bold",
        va="center",
    )
    # the input, with one 3x3 window of the first convolution
    side = 1.5
    picture(ax, image, 0.3, base, side)
    ax.text(0.3 + side / 2, base - 0.2, "input x\n3 @ 64×64", ha="center", va="top")
    win = (0.3 + 0.6, base + 0.75, 3 * side / 64 * 2.2)
    ax.add_patch(Rectangle(win[:2], win[2], win[2], fill=False, ec="white", lw=2, zorder=5))

    # conv blocks: (channels, spatial size, side on paper)
    blocks = [(8, 64, 1.3), (16, 32, 0.92), (32, 16, 0.64), (64, 8, 0.44)]
    x = 2.35
    tops = []
    for i, (c, s, sd) in enumerate(blocks):
        x0, y0, x1, y1 = stack(ax, x, base, sd, c, fc=BLUE)
        ax.text((x0 + x1) / 2, base - 0.2, f"{c} @ {s}×{s}", ha="center", va="top")
        tops.append((x0, x1, y1))
        if i == 0:  # one unit = a weighted sum of the window
            unit = (x0 + 0.6 + win[2] / 2, base + 0.75 + win[2] / 2)
            ax.plot(
                [win[0] + win[2], unit[0]], [win[1] + win[2], unit[1]], color=RED, lw=1, zorder=6
            )
            ax.plot([win[0] + win[2], unit[0]], [win[1], unit[1]], color=RED, lw=1, zorder=6)
            ax.plot(*unit, "o", color=RED, ms=4, zorder=7)
        x = x1 + 0.62
        if i < len(blocks) - 1:
            arrow(ax, (x1 + 0.08, base + 0.3), (x - 0.08, base + 0.3))
            ax.text(
                (x1 + x) / 2, base + 0.38, "pool,\nconv", ha="center", va="bottom", fontsize=FS - 2
            )
    # every block: conv 3x3 + ReLU
    arrow(
        ax,
        (0.3 + side + 0.08, base + 0.3),
        (2.35 - 0.08, base + 0.3),
        "conv",
        fs=FS - 2,
        offset=(0, 0.08),
    )
    ax.text(
        3.2,
        3.35,
        "each block: conv 3×3 (a weighted sum of a 3×3\nneighbourhood, slid over the maps) + ReLU",
        ha="center",
        fontsize=FS - 1,
        color=RED,
    )
    # pool -> flatten -> FC -> FC -> scores
    px = x
    arrow(ax, (tops[-1][1] + 0.08, base + 0.3), (px - 0.08, base + 0.3))
    ax.text((tops[-1][1] + px) / 2, base + 0.38, "pool", ha="center", va="bottom", fontsize=FS - 2)
    x0, y0, x1, y1 = stack(ax, px, base, 0.26, 64, fc=BLUE)
    ax.text((x0 + x1) / 2, base - 0.2, "64 @ 4×4", ha="center", va="top")
    vec = [(x1 + 0.6, 1.9, "flatten\n1024"), (x1 + 1.6, 1.1, "FC+ReLU\n64")]  # (x, height)
    prev = x1
    for vx, h, label in vec:
        arrow(ax, (prev + 0.08, base + 0.3), (vx - 0.08, base + 0.3))
        ax.add_patch(Rectangle((vx, base), 0.16, h, fc=GREEN, ec=INK, lw=1.0))
        ax.text(vx + 0.08, base - 0.2, label, ha="center", va="top")
        prev = vx + 0.16
    # class scores as signed bars around zero
    sx = prev + 0.75
    arrow(ax, (prev + 0.08, base + 0.3), (sx - 0.08, base + 0.3))
    ax.text((prev + sx) / 2, base + 0.38, "FC", ha="center", va="bottom", fontsize=FS - 2)
    names = vm.data.SHAPE_CLASSES
    top = int(scores.argmax())
    zero, scale = sx + 1.35, 0.6 / float(scores.abs().max())
    for k, name in enumerate(names):
        yk = base + 2.0 - k * 0.36
        length = float(scores[k]) * scale
        ax.add_patch(
            Rectangle(
                (zero, yk), length, 0.26, fc=ORANGE if k != top else "#e67e22", ec=INK, lw=0.8
            )
        )
        ax.text(
            zero - 0.65,
            yk + 0.13,
            name,
            ha="right",
            va="center",
            fontsize=FS - 1,
            weight="bold" if k == top else "normal",
        )
    ax.plot([zero, zero], [base - 0.05, base + 2.35], color=INK, lw=0.8)
    ax.text(
        zero - 0.3,
        base - 0.2,
        "6 class scores $y^c$\n(logits, 0 at the line)",
        ha="center",
        va="top",
    )
    fit(fig, ax, zero + 0.8)
    # fine to coarse
    arrow(ax, (2.35, 0.38), (x1 + 0.3, 0.38), color="#777777")
    ax.text(
        2.35,
        0.1,
        "fine-grained: small receptive field, full resolution",
        fontsize=FS - 1,
        va="center",
        color="#555555",
    )
    ax.text(
        x1 + 0.3,
        0.1,
        "coarse-grained: whole objects",
        fontsize=FS - 1,
        va="center",
        ha="right",
        color="#555555",
    )
    ax.text(
        5.3,
        3.35,
        "the maps keep the input's layout:\nshift x and every map shifts with it",
        ha="left",
        fontsize=FS - 1,
        color="#1f5f9f",
        va="bottom",
    )
    return fig


# --------------------------------------------------------------------------------------------
# 2. The deconvnet attached to a convnet layer (Zeiler & Fergus 2014, Fig. 1; chapter 03)
# --------------------------------------------------------------------------------------------


def _grid(ax, x: float, y: float, values: np.ndarray, cell: float, marks=None, fc_of=None) -> None:
    """A small grid of numbers; ``marks`` (a boolean grid) are outlined in red."""
    h, w = values.shape
    for i in range(h):
        for j in range(w):
            v = values[i, j]
            fc = fc_of(v) if fc_of else "white"
            ax.add_patch(
                Rectangle((x + j * cell, y + (h - 1 - i) * cell), cell, cell, fc=fc, ec=INK, lw=0.8)
            )
            if v != 0 or fc_of is None:
                ax.text(
                    x + (j + 0.5) * cell,
                    y + (h - 1 - i + 0.5) * cell,
                    f"{v:g}",
                    ha="center",
                    va="center",
                    fontsize=FS - 2,
                )
            if marks is not None and marks[i, j]:
                ax.add_patch(
                    Rectangle(
                        (x + j * cell + 0.02, y + (h - 1 - i) * cell + 0.02),
                        cell - 0.04,
                        cell - 0.04,
                        fill=False,
                        ec=RED,
                        lw=2,
                    )
                )


def diagram_deconvnet():
    fig, ax = canvas(12.2, 6.4)
    ax.text(
        0.2,
        6.15,
        "A deconvnet attached to a convnet layer (after Zeiler & Fergus 2014, Fig. 1)",
        fontsize=FS + 2,
        weight="bold",
        va="center",
    )
    w, h = 2.9, 0.62
    cx, dx = 0.5, 4.6  # the convnet column (going up), the deconvnet column (going down)
    ys = [0.55, 1.75, 2.95, 4.15, 5.1]
    conv = [
        "layer below: pooled maps",
        "convolutional filtering {F}",
        "rectified linear",
        "max pooling",
        "pooled maps",
    ]
    deconv = [
        "reconstruction",
        "filtering with {F}ᵀ\n(transposed filters)",
        "rectified linear",
        "max unpooling",
        "layer above: reconstruction",
    ]
    fcs = [GREY, BLUE, BLUE, BLUE, GREY]
    dfcs = [GREY, ORANGE, ORANGE, ORANGE, GREY]
    for i in range(5):
        box(ax, cx, ys[i], w, h if i in (1, 2, 3) else 0.5, conv[i], fc=fcs[i])
        box(ax, dx, ys[i], w, h if i in (1, 2, 3) else 0.5, deconv[i], fc=dfcs[i])
    for i in range(4):
        top = ys[i] + (h if i in (1, 2, 3) else 0.5)
        arrow(ax, (cx + w / 2, top + 0.04), (cx + w / 2, ys[i + 1] - 0.04))
        arrow(ax, (dx + w / 2, ys[i + 1] - 0.04), (dx + w / 2, top + 0.04))
    ax.text(
        cx + w / 2, 0.22, "convnet: forward, upwards", ha="center", fontsize=FS - 1, color="#1f5f9f"
    )
    ax.text(
        dx + w / 2,
        0.22,
        "deconvnet: backwards, downwards",
        ha="center",
        fontsize=FS - 1,
        color="#b35900",
    )
    # switches: from max pooling to max unpooling
    arrow(
        ax,
        (cx + w + 0.05, ys[3] + h / 2),
        (dx - 0.05, ys[3] + h / 2),
        "switches:\nwhere each\nmax was",
        color=RED,
        ls="--",
        fs=FS - 2,
    )
    arrow(
        ax,
        (cx + w + 0.05, ys[1] + h / 2),
        (dx - 0.05, ys[1] + h / 2),
        "same filters F",
        color="#555555",
        ls=":",
    )
    # the pooling / unpooling example, with real numbers
    a = np.array([[1, 3, 0, 2], [4, 2, 1, 0], [0, 1, 5, 1], [2, 0, 3, 6]], dtype=float)
    pooled = a.reshape(2, 2, 2, 2).max(axis=(1, 3))
    switch = np.zeros_like(a, dtype=bool)
    for i in range(2):
        for j in range(2):
            block = a[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            k = np.unravel_index(block.argmax(), block.shape)
            switch[2 * i + k[0], 2 * j + k[1]] = True
    r = np.array([[0.5, -1.0], [2.0, 0.7]])  # a signal coming down from above
    unpooled = np.zeros_like(a)
    unpooled[switch] = r.flatten()
    ex = 8.25
    ax.text(ex, 5.55, "max pooling and its switches", fontsize=FS, weight="bold")
    cell = 0.36
    _grid(ax, ex, 3.95, a, cell, marks=switch)
    arrow(ax, (ex + 4 * cell + 0.1, 3.95 + 2 * cell), (ex + 4 * cell + 0.55, 3.95 + 2 * cell))
    _grid(ax, ex + 4 * cell + 0.65, 3.95 + cell, pooled, cell)
    ax.text(
        ex,
        3.75,
        "2×2 max pooling keeps each block's maximum;\nthe switches (red) remember where it was",
        fontsize=FS - 2,
        va="top",
    )
    ax.text(ex, 2.75, "max unpooling puts a signal back there", fontsize=FS, weight="bold")
    _grid(ax, ex, 1.45, r, cell * 1.0)
    arrow(ax, (ex + 2 * cell + 0.1, 1.45 + cell), (ex + 2 * cell + 0.55, 1.45 + cell))
    _grid(ax, ex + 2 * cell + 0.65, 0.85, unpooled, cell, marks=switch, fc_of=lambda v: "white")
    ax.text(
        ex,
        0.6,
        "then ReLU, then the transposed filters:\nthe unit's pattern in pixel space",
        fontsize=FS - 2,
        va="top",
    )
    return fig


# --------------------------------------------------------------------------------------------
# 3. The CAM pipeline (Zhou et al. 2016, Fig. 2; chapter 05)
# --------------------------------------------------------------------------------------------


def diagram_cam():
    shapes = vm.data.make_shapes(1, seed=5)
    x = shapes.images
    model = vm.models.load_pretrained("shapes-gap")
    a, _, out = activation(model, "features.10", x)
    c = int(out[0].argmax())
    weights = model.classifier[-1].weight.detach()[c]  # w^c_k
    contribution = weights * a[0].mean((1, 2))
    order = contribution.argsort(descending=True)
    chosen = [int(k) for k in order[:3]]
    cam = vm.explain.cam(model, x, c, layer="features.10")[0, 0]
    image = x[0].permute(1, 2, 0).numpy()
    name = vm.data.SHAPE_CLASSES[c]

    fig, ax = canvas(12.6, 5.6)
    ax.text(
        0.2,
        5.35,
        f"Class activation mapping (after Zhou et al. 2016, Fig. 2): shapes-gap, class '{name}'",
        fontsize=FS + 2,
        weight="bold",
        va="center",
    )
    side = 1.5
    picture(ax, image, 0.2, 3.0, side)
    ax.text(0.2 + side / 2, 2.8, "input x", ha="center", va="top")
    box(ax, 2.05, 3.25, 1.3, 1.0, "conv\nlayers", fc=BLUE)
    arrow(ax, (0.2 + side + 0.07, 3.75), (2.0, 3.75))
    arrow(ax, (3.4, 3.75), (4.05, 3.75))
    # the last feature maps A^k, three real ones shown
    fx = 4.15
    small = 0.8
    for i, k in enumerate(chosen):
        picture(ax, norm(a[0, k]), fx, 4.1 - i * 0.98, small, cmap="viridis")
        ax.text(fx + small + 0.08, 4.1 - i * 0.98 + small / 2, f"$A^{{{k}}}$", va="center")
    ax.text(
        fx + 0.4, 1.95, "⋮  64 maps $A^k$\n(8×8, last conv)", ha="center", va="top", fontsize=FS - 1
    )
    # GAP -> vector -> weights -> score
    arrow(ax, (fx + 1.45, 3.75), (6.35, 3.75), "GAP")
    gx = 6.45
    for i, k in enumerate(chosen):
        yy = 4.4 - i * 0.55
        ax.add_patch(Rectangle((gx, yy), 0.36, 0.4, fc=GREEN, ec=INK, lw=1.0))
        ax.text(gx + 0.18, yy + 0.2, f"$a_{{{k}}}$", ha="center", va="center", fontsize=FS - 1)
        ax.text(
            gx + 0.45,
            yy + 0.2,
            f"× {weights[k]:.2f}",
            fontsize=FS - 1,
            va="center",
            color="#b35900",
        )
        ax.plot([gx + 1.1, 8.3], [yy + 0.2, 3.75], color=INK, lw=1.0)
    ax.text(gx + 0.18, 2.65, "⋮", ha="center", fontsize=FS + 2)
    ax.text(
        gx + 0.18,
        2.35,
        "$a_k = \\mathrm{mean}_{ij} A^k_{ij}$,\nweights $w^c_k$ of the one\nlinear layer",
        ha="left",
        fontsize=FS - 1,
        va="top",
    )
    box(ax, 8.3, 3.35, 1.6, 0.8, f"$y^c = \\sum_k w^c_k a_k$\n'{name}'", fc=ORANGE, fs=FS)
    # bottom row: the map
    ax.text(0.2, 1.55, "the class activation map:", fontsize=FS, weight="bold", va="center")
    mx = 3.0
    for i, k in enumerate(chosen):
        picture(ax, norm(a[0, k]), mx + i * 1.6, 0.45, 0.8, cmap="viridis")
        ax.text(
            mx + i * 1.6 - 0.1,
            0.85,
            f"{weights[k]:+.2f} ×" if i else f"{weights[k]:.2f} ×",
            ha="right",
            va="center",
            fontsize=FS - 1,
        )
    ax.text(mx + 3 * 1.6 - 0.3, 0.85, "+ …  =", ha="center", va="center")
    picture(
        ax,
        norm(vm.explain.cam(model, x, c, layer="features.10", upsampled=False)[0, 0]),
        mx + 3 * 1.6 + 0.2,
        0.45,
        0.8,
        cmap=MAP_CMAP,
    )
    ax.text(
        mx + 3 * 1.6 + 0.6, 0.3, "$M_c=\\sum_k w^c_k A^k$", ha="center", va="top", fontsize=FS - 1
    )
    arrow(ax, (mx + 3 * 1.6 + 1.1, 0.85), (mx + 3 * 1.6 + 1.65, 0.85), "upsample", fs=FS - 2)
    overlay(ax, image, norm(cam), mx + 3 * 1.6 + 1.75, 0.2, 1.3)
    ax.text(mx + 3 * 1.6 + 2.4, 1.6, "on the input", ha="center", va="bottom", fontsize=FS - 1)
    return fig


# --------------------------------------------------------------------------------------------
# 4. The VAE (chapter 07)
# --------------------------------------------------------------------------------------------


def diagram_vae():
    sprites = vm.data.make_sprites(1, seed=4)
    x = sprites.images
    vae = vm.models.load_pretrained("sprites-vae")
    with torch.no_grad():
        mu, logvar = vae(x)
        recon = torch.sigmoid(vae.decode(mu))[0, 0].numpy()

    fig, ax = canvas(12.0, 4.6)
    ax.text(
        0.2,
        4.35,
        "A variational autoencoder (the course's sprites-vae, a β-VAE)",
        fontsize=FS + 2,
        weight="bold",
        va="center",
    )
    side = 1.4
    picture(ax, x[0, 0].numpy(), 0.2, 1.6, side, cmap="gray", vmin=0, vmax=1)
    ax.text(0.2 + side / 2, 1.45, "image x\n1 @ 64×64", ha="center", va="top")
    enc = Polygon(
        [(2.0, 1.25), (2.0, 3.35), (3.9, 2.75), (3.9, 1.85)], closed=True, fc=BLUE, ec=INK, lw=1.2
    )
    ax.add_patch(enc)
    ax.text(
        2.95, 2.3, "encoder\n4 conv 4×4 /2\nFC 256, 256", ha="center", va="center", fontsize=FS - 1
    )
    arrow(ax, (0.2 + side + 0.07, 2.3), (1.95, 2.3))
    # posterior
    box(ax, 4.35, 2.85, 1.25, 0.55, "$\\mu \\in \\mathbb{R}^{10}$", fc=GREEN)
    box(ax, 4.35, 1.2, 1.25, 0.55, "$\\log\\sigma^2 \\in \\mathbb{R}^{10}$", fc=GREEN, fs=FS - 1)
    arrow(ax, (3.95, 2.5), (4.3, 3.05))
    arrow(ax, (3.95, 2.1), (4.3, 1.5))
    ax.text(
        4.97,
        2.3,
        "posterior\n$q_\\phi(z|x)=\\mathcal{N}(\\mu,\\sigma^2)$",
        ha="center",
        va="center",
        fontsize=FS - 1,
    )
    # sample
    box(ax, 6.15, 1.95, 1.7, 0.7, "$z = \\mu + \\sigma \\odot \\varepsilon$", fc=PURPLE)
    ax.text(
        7.1,
        1.85,
        "$\\varepsilon \\sim \\mathcal{N}(0, I)$: the sample stays\n"
        "differentiable in $\\mu, \\sigma$",
        ha="center",
        va="top",
        fontsize=FS - 2,
    )
    arrow(ax, (5.65, 3.1), (6.3, 2.7))
    arrow(ax, (5.65, 1.5), (6.1, 2.05))
    dec = Polygon(
        [(8.3, 1.85), (8.3, 2.75), (10.2, 3.35), (10.2, 1.25)],
        closed=True,
        fc=ORANGE,
        ec=INK,
        lw=1.2,
    )
    ax.add_patch(dec)
    ax.text(
        9.3,
        2.3,
        "decoder\n$p_\\theta(x|z)$\nFC, 4 deconv",
        ha="center",
        va="center",
        fontsize=FS - 1,
    )
    arrow(ax, (7.9, 2.3), (8.25, 2.3))
    picture(ax, recon, 10.45, 1.6, side, cmap="gray", vmin=0, vmax=1)
    ax.text(10.45 + side / 2, 1.45, "reconstruction\n(Bernoulli means)", ha="center", va="top")
    arrow(ax, (10.25, 2.3), (10.4, 2.3))
    # the ELBO
    ax.text(
        6.0,
        0.55,
        "trained by maximising the ELBO:   "
        "$\\mathbb{E}_{q_\\phi(z|x)}[\\log p_\\theta(x|z)]\\;-\\;\\beta\\,"
        "\\sum_i \\mathrm{KL}\\left(q_\\phi(z_i|x)\\,\\|\\,\\mathcal{N}(0,1)\\right)$",
        ha="center",
        va="center",
        fontsize=FS,
    )
    ax.text(
        6.0,
        0.15,
        "reconstruct well  −  keep each latent factor's posterior close to the "
        "prior; $\\mathrm{KL}_i = \\frac{1}{2}(\\mu_i^2 + \\sigma_i^2 - \\log\\sigma_i^2 - 1)$",
        ha="center",
        va="center",
        fontsize=FS - 1,
        color="#555555",
    )
    ax.text(4.97, 3.7, "the factor distribution", ha="center", fontsize=FS - 1, color="#2e7d32")
    return fig


# --------------------------------------------------------------------------------------------
# 5. Factor activation maps (the report's figures 7 and 8; chapter 07)
# --------------------------------------------------------------------------------------------


def diagram_factor_map():
    sprites = vm.data.make_sprites(64, seed=4)
    vae = vm.models.load_pretrained("sprites-vae")
    with torch.no_grad():
        mu, logvar = vae(sprites.images)
    kl = 0.5 * (mu**2 + logvar.exp() - logvar - 1)
    x = sprites.images[:1]
    i = int(kl[0].argmax())  # the factor this image loads most on
    layer = "encoder.3"

    def score(out):
        m, lv = out
        return 0.5 * (m[:, i] ** 2 + lv[:, i].exp() - lv[:, i] - 1)

    a, g, _ = activation(vae, layer, x, score)
    a, g = a[0], g[0]
    contribution = (g.clamp(min=0) * a).sum((1, 2))
    chosen = [int(k) for k in contribution.argsort(descending=True)[:2]]
    small_map = (g.clamp(min=0) * a).sum(0).clamp(min=0)
    fmap = vm.explain.factor_cam(vae, x, [i], layer=layer)[0, 0]
    image = x[0, 0].numpy()

    fig, ax = canvas(12.4, 5.8)
    ax.text(
        0.2,
        5.55,
        f"Factor activation maps: where the image sets latent factor $z_{{{i}}}$ (no label used)",
        fontsize=FS + 2,
        weight="bold",
        va="center",
    )
    side = 1.35
    picture(ax, image, 0.2, 3.2, side, cmap="gray", vmin=0, vmax=1)
    ax.text(0.2 + side / 2, 3.05, "image x", ha="center", va="top")
    box(ax, 1.95, 3.55, 1.3, 0.7, "conv 4×4 /2\n×2", fc=BLUE, fs=FS - 1)
    arrow(ax, (0.2 + side + 0.07, 3.9), (1.9, 3.9))
    # the layer A
    ax_x = 3.7
    for j, k in enumerate(chosen):
        picture(ax, norm(a[k]), ax_x + j * 0.95, 3.5, 0.8, cmap="viridis")
        ax.text(
            ax_x + j * 0.95 + 0.4, 4.38, f"$A^{{{k}}}$", ha="center", va="bottom", fontsize=FS - 1
        )
    ax.text(
        ax_x + 0.85, 3.35, "layer A = encoder.3\n32 @ 16×16", ha="center", va="top", fontsize=FS - 1
    )
    arrow(ax, (3.3, 3.9), (3.65, 3.9))
    box(ax, 6.0, 3.55, 1.45, 0.7, "rest of the\nencoder", fc=BLUE, fs=FS - 1)
    arrow(ax, (ax_x + 1.8, 3.9), (5.95, 3.9))
    box(
        ax,
        7.9,
        3.55,
        1.75,
        0.7,
        f"$\\mu_{{{i}}},\\ \\log\\sigma^2_{{{i}}}$\n$q(z_{{{i}}}|x)$",
        fc=GREEN,
        fs=FS - 1,
    )
    arrow(ax, (7.5, 3.9), (7.85, 3.9))
    box(
        ax,
        10.05,
        3.45,
        2.15,
        0.9,
        f"score $s = \\mathrm{{KL}}_{{{i}}}$\n$= {float(kl[0, i]):.2f}$ nats",
        fc=ORANGE,
        fs=FS - 1,
    )
    arrow(ax, (9.7, 3.9), (10.0, 3.9))
    ax.text(
        11.12,
        4.5,
        "a set of factors: $s=\\sum_{i\\in S}\\mathrm{KL}_i$,\ntheir joint map",
        ha="center",
        va="bottom",
        fontsize=FS - 2,
        color="#555555",
    )
    # the gradient comes back to A
    ax.add_patch(
        FancyArrowPatch(
            (11.1, 3.4),
            (1.25, 1.75),
            arrowstyle="-|>",
            mutation_scale=14,
            color=RED,
            lw=1.5,
            ls="--",
            connectionstyle="arc3,rad=-0.08",
        )
    )
    ax.text(
        9.55,
        2.95,
        "backpropagate the score to layer A: $\\partial s / \\partial A$",
        color=RED,
        fontsize=FS - 1,
        ha="right",
        va="bottom",
    )
    # bottom row: gradients, products, sum, upsample, overlay
    gx = 0.3
    y0 = 0.55
    glim = float(g[chosen].abs().max()) or 1.0
    for j, k in enumerate(chosen):
        picture(ax, g[k].numpy(), gx + j * 0.95, y0, 0.8, cmap="RdBu_r", vmin=-glim, vmax=glim)
        ax.text(
            gx + j * 0.95 + 0.4,
            y0 + 0.85,
            f"$\\partial s/\\partial A^{{{k}}}$",
            ha="center",
            va="bottom",
            fontsize=FS - 2,
        )
    arrow(ax, (gx + 1.85, y0 + 0.4), (gx + 2.4, y0 + 0.4))
    px = gx + 2.5
    for j, k in enumerate(chosen):
        picture(ax, norm(g[k].clamp(min=0) * a[k]), px + j * 0.95, y0, 0.8, cmap="viridis")
        ax.text(
            px + j * 0.95 + 0.4,
            y0 + 0.85,
            f"ReLU(·)⊙$A^{{{k}}}$",
            ha="center",
            va="bottom",
            fontsize=FS - 2,
        )
    ax.text(
        px + 0.9, y0 - 0.12, "element-wise, per channel", ha="center", va="top", fontsize=FS - 2
    )
    arrow(ax, (px + 1.85, y0 + 0.4), (px + 2.55, y0 + 0.4), "sum over k", fs=FS - 2)
    sx = px + 2.65
    picture(ax, norm(small_map), sx, y0, 0.8, cmap=MAP_CMAP)
    ax.text(sx + 0.4, y0 - 0.12, "16×16", ha="center", va="top", fontsize=FS - 2)
    arrow(ax, (sx + 0.9, y0 + 0.4), (sx + 1.6, y0 + 0.4), "upsample", fs=FS - 2)
    overlay(ax, image, norm(fmap), sx + 1.7, y0 - 0.3, 1.35)
    ax.text(
        sx + 1.7 + 0.67,
        y0 + 1.12,
        f"map of $z_{{{i}}}$ on x",
        ha="center",
        va="bottom",
        fontsize=FS - 1,
    )
    ax.text(
        10.55,
        0.95,
        "$M = \\mathrm{ReLU}\\left(\\sum_k \\mathrm{ReLU}\\left("
        "\\frac{\\partial s}{\\partial A^k}\\right) \\odot A^k\\right)$\n"
        "upsampled to the input.\nGrad-CAM would first average\n"
        "$\\partial s/\\partial A^k$ over each channel.",
        ha="center",
        va="center",
        fontsize=FS - 1,
    )
    return fig


DIAGRAMS: dict[str, Callable] = {
    "diagram_cnn": diagram_cnn,
    "diagram_deconvnet": diagram_deconvnet,
    "diagram_cam": diagram_cam,
    "diagram_vae": diagram_vae,
    "diagram_factor_map": diagram_factor_map,
}


def make_diagrams(
    out: Path = OUT, png: Path | None = None, only: list[str] | None = None
) -> list[Path]:
    """Draw the diagrams into ``out`` (SVG; and PNG previews into ``png``). Returns the SVGs."""
    unknown = sorted(set(only or []) - set(DIAGRAMS))
    if unknown:
        raise ValueError(f"unknown diagram(s) {unknown}; valid: {sorted(DIAGRAMS)}")
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in DIAGRAMS.items():
        if only and name not in only:
            continue
        fig = draw()
        path = out / f"{name}.svg"
        fig.savefig(path, format="svg", metadata={"Date": None})
        if png is not None:
            png.mkdir(parents=True, exist_ok=True)
            fig.savefig(png / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"SVG folder (default {OUT})")
    parser.add_argument("--png", type=Path, default=None, help="also write PNG previews here")
    parser.add_argument("--only", action="append", default=None, help="one diagram (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for path in make_diagrams(args.out, args.png, args.only):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
