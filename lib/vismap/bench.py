"""``python -m vismap.bench``: vismap's methods timed side by side with their limits and captum.

Every row is timed in this one process, with warm-up and the median of several repeats; the
ratio column divides by the row's baseline, so the numbers compare across machines better than
the seconds do. Nothing here is asserted: speed is measured, not tested.

Baselines ("limits"): one forward pass; a forward pass plus the gradient of the score with
respect to the input (what every gradient method must at least do).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch

from . import data, explain, models


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _forward(model, x):
    with torch.no_grad():
        return model(x)


def _forward_and_input_gradient(model, x, target):
    x = x.detach().requires_grad_(True)
    frozen = [p.requires_grad_(False) for p in model.parameters()]
    try:
        score = model(x).gather(1, target[:, None]).sum()
        return torch.autograd.grad(score, x)[0]
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _forward_and_layer_gradient(model, x, target, layer):
    """The least Grad-CAM must do: a forward, and the gradient of the score to the layer."""
    store = {}

    def keep(_module, _inputs, output):
        store["a"] = output.detach().requires_grad_(True)
        return store["a"]

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        score = model(x).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    return torch.autograd.grad(score, store["a"])[0]


def rows(model, x, target, repeats: int, layer: str = "features.9"
         ) -> list[tuple[str, float, str]]:
    """``(name, seconds, baseline name)`` rows for every method of :mod:`vismap.explain`."""
    from captum.attr import GuidedBackprop, LayerGradCam, Occlusion, Saliency

    t = lambda fn: median_time(fn, repeats=repeats)  # noqa: E731
    out = [("forward (limit)", t(lambda: _forward(model, x)), ""),
           ("forward + input gradient (limit)",
            t(lambda: _forward_and_input_gradient(model, x, target)), "")]
    grad_limit = "forward + input gradient (limit)"
    out += [
        ("vismap saliency", t(lambda: explain.saliency(model, x, target)), grad_limit),
        ("captum Saliency", t(lambda: Saliency(model).attribute(
            x.clone().requires_grad_(), target=target, abs=False)), grad_limit),
        ("vismap guided_backprop", t(lambda: explain.guided_backprop(model, x, target)),
         grad_limit),
        ("captum GuidedBackprop", t(lambda: GuidedBackprop(model).attribute(
            x.clone().requires_grad_(), target=target)), grad_limit),
    ]
    frozen = [p.requires_grad_(False) for p in model.parameters()]
    layer_limit = t(lambda: _forward_and_layer_gradient(model, x, target, layer))
    for p in frozen:
        p.requires_grad_(True)
    layer_name = f"forward + gradient to {layer} (limit)"
    out += [
        (layer_name, layer_limit, ""),
        ("vismap gradcam", t(lambda: explain.gradcam(model, x, target, layer=layer,
                                                     upsampled=False)), layer_name),
        ("captum LayerGradCam", t(lambda: LayerGradCam(model, model.get_submodule(layer))
                                  .attribute(x, target=target, relu_attributions=True)),
         layer_name),
    ]
    # Occlusion costs one forward per window and image (225 windows here), so it is timed on
    # 4 images, where batching windows into one forward matters (at 64 images per call both
    # libraries run the same number of same-sized forwards).
    xs, ts = x[:4], target[:4]
    mine = t(lambda: explain.occlusion(model, xs, ts, window=8, stride=4, baseline=0.0))
    theirs = t(lambda: Occlusion(model).attribute(
        xs, sliding_window_shapes=(x.shape[1], 8, 8), strides=(x.shape[1], 4, 4),
        baselines=0.0, target=ts))
    name = "Occlusion, 4 images, 8x8 window, stride 4"
    out += [(f"captum {name}", theirs, ""), (f"vismap {name}", mine, f"captum {name}")]
    return out


def table(results: list[tuple[str, float, str]]) -> str:
    seconds = {name: s for name, s, _ in results}
    lines = ["| method | time (ms) | ratio | baseline |", "|---|---:|---:|---|"]
    for name, s, base in results:
        ratio = f"{s / seconds[base]:.2f}x" if base else ""
        lines.append(f"| {name} | {s * 1e3:.1f} | {ratio} | {base} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vismap.bench", description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message="Setting backward hooks")
    shapes = data.make_shapes(args.batch, seed=0)
    model = models.load_pretrained("shapes-cnn")
    print(f"shapes-cnn, batch {args.batch}, 64x64 | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | {platform.processor() or platform.machine()}\n")
    print(table(rows(model, shapes.images, shapes.labels, args.repeats)))


if __name__ == "__main__":
    main()
