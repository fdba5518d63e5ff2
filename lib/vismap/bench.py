"""``python -m vismap.bench``: vismap's methods timed against their limits, captum and
pytorch-grad-cam.

For each explanation method, four things are timed side by side in one process: vismap's
implementation, captum's equivalent, pytorch-grad-cam's where it has one, and the method's
*limit* - the work no implementation can avoid:

* ``F``      one forward pass (no autograd);
* ``F+dA``   a forward pass and the gradient of the score with respect to the layer ``A``
  (the least Grad-CAM and LayerCAM must do);
* ``F+dx``   a forward pass and the gradient of the score with respect to the input ``x``
  (the least every input-gradient method must do);
* ``P x F``  the forwards of the ``P`` occluded copies (and the original) of every image,
  pre-built, 64 images per forward (the least occlusion must do).

Each limit is timed on the batch in both memory layouts, NCHW and channels-last (``(n, H, W,
C)`` in memory), and the faster is kept: on a CPU oneDNN's convolutions often run much faster
channels-last (shapes-cnn's forward about 2x). The targets also quote the NCHW limit when
channels-last won, because channels-last is no free lunch for *input* gradients: activations
that are equal in exact arithmetic (a flat region of an image) come out a few ulps apart,
differently in each batch, so a max-pool sends the gradient to a different input and an image's
saliency map changes with the batch it is in (measured on shapes-cnn: up to 100 % of the map's
maximum; NCHW: 3e-7). Maps at a layer (Grad-CAM, LayerCAM) stay within 1e-6.

Each group (limit, vismap, captum, pytorch-grad-cam) is timed in interleaved rounds - every
round runs each once, in rotating order - after warm-up calls, and each time is the median of
the rounds: a change in the machine's load then hits all of them alike, and the ratios (vismap
divided by the others) compare across machines better than the milliseconds do. Nothing here is
asserted: speed is measured, not tested (``tests/test_bench.py`` only runs the smoke mode).

Two settings: the course's ``shapes-cnn`` on a batch of 64 Shapes images (64x64, layer
``features.9``), and torchvision's ResNet-18 with random weights on 8 random 224x224 images
(layer ``layer4``). ReLUs are made out-of-place in both (pytorch-grad-cam needs it on some
models, so every library gets the same function).

    python -m vismap.bench                 # the full benchmark (a few minutes on 2 cores)
    python -m vismap.bench --smoke         # tiny sizes, one round: seconds
    python -m vismap.bench --out bench.md  # also write the markdown to a file
    OMP_NUM_THREADS=1 python -m vismap.bench --clock cpu  # CPU time: steadier on a busy machine
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import data, explain, models

LIBRARIES = ("vismap", "captum", "pytorch-grad-cam")
LIMITS = {
    "F": "one forward pass, no autograd",
    "F+dA": "forward + gradient of the score to the layer",
    "F+dx": "forward + gradient of the score to the input",
    "P x F": "the forwards of every occluded copy (pre-built), 64 images per forward",
}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_together(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 2,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median time in seconds of each of ``fns``, timed in interleaved rounds.

    ``warmup`` untimed rounds first (allocator, oneDNN kernels); then ``repeats`` rounds, each
    calling every function once, in an order rotated by one each round. ``clock`` is wall time;
    ``time.process_time`` (this process's CPU time) is steadier on a machine other work shares,
    but adds up the threads, so use it with one thread.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = clock()
            fns[name]()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# --------------------------------------------------------------------------------------------
# The limits
# --------------------------------------------------------------------------------------------


def _scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return model(x).gather(1, target[:, None]).sum()


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``F``: one forward pass without autograd."""
    with torch.no_grad():
        return model(x)


def forward_and_input_gradient(model: nn.Module, x: torch.Tensor,
                               target: torch.Tensor) -> torch.Tensor:
    """``F+dx``: ``d score / d x`` (give a model whose parameters are frozen)."""
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(_scores(model, x, target), x)[0]


def forward_and_layer_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                               layer: str) -> torch.Tensor:
    """``F+dA``: ``d score / d A`` with ``A`` the output of ``layer``, made a leaf so that the
    backward pass stops there (give a model whose parameters are frozen)."""
    store = {}

    def keep(_module, _inputs, output):
        store["a"] = output.detach().requires_grad_(True)
        return store["a"]

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        score = _scores(model, x, target)
    finally:
        handle.remove()
    return torch.autograd.grad(score, store["a"])[0]


def forward_in_batches(model: nn.Module, batch: torch.Tensor, size: int = 64) -> None:
    """``P x F``: ``batch`` through the model, ``size`` images per forward, no autograd."""
    with torch.no_grad():
        for start in range(0, len(batch), size):
            model(batch[start:start + size])


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` stored as ``(n, H, W, C)`` in memory (same shape and values): oneDNN's CPU
    convolutions are often much faster on it."""
    return x.contiguous(memory_format=torch.channels_last)


def limit(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> dict[str, Callable]:
    """A limit ``fn`` on the NCHW batch ``x`` as it is, and converted to channels-last (the
    conversion is timed: every implementation is given ``x``); :func:`measure` keeps the
    faster, the least time the work takes whichever layout an implementation picks."""
    return {"limit": lambda: fn(x), "limit, channels-last": lambda: fn(channels_last(x))}


# --------------------------------------------------------------------------------------------
# The settings
# --------------------------------------------------------------------------------------------


@dataclass
class Setting:
    """A model, a batch, the layer for the coarse methods and the occlusion to time."""

    name: str
    model: nn.Module
    x: torch.Tensor
    target: torch.Tensor
    layer: str
    occlusion_images: int
    window: int
    stride: int

    @property
    def title(self) -> str:
        n, c, h, w = self.x.shape
        return f"{self.name}: batch {n} of {c}x{h}x{w}, layer {self.layer!r}"


def _out_of_place(model: nn.Module) -> nn.Module:
    """Every ``nn.ReLU`` of ``model`` out-of-place (pytorch-grad-cam keeps the layer's output by
    reference, which a following in-place ReLU would overwrite; the function is the same)."""
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


def shapes_setting(batch: int, window: int = 8, stride: int = 4,
                   occlusion_images: int = 4) -> Setting:
    """The course's shapes-cnn on ``batch`` Shapes images; occlusion on the first few of them
    (one forward per window and image: on all 64 both libraries would run the same forwards)."""
    shapes = data.make_shapes(batch, seed=0)
    model = _out_of_place(models.load_pretrained("shapes-cnn"))
    return Setting("shapes-cnn", model, shapes.images, shapes.labels, "features.9",
                   min(occlusion_images, batch), window, stride)


def resnet_setting(batch: int, size: int = 224, window: int = 56, stride: int = 28,
                   occlusion_images: int = 2) -> Setting:
    """torchvision's ResNet-18 (random weights: nothing is downloaded) on ``batch`` random
    images; occlusion, which costs one forward per window and image, with a coarse window on
    the first two images only."""
    import torchvision

    with torch.random.fork_rng():  # the same random weights every run; the caller's RNG kept
        torch.manual_seed(0)
        model = _out_of_place(torchvision.models.resnet18(weights=None).eval())
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = forward(model, x).argmax(1)  # explain the predicted classes
    return Setting("resnet18 (random weights)", model, x, target, "layer4",
                   min(occlusion_images, batch), window, stride)


# --------------------------------------------------------------------------------------------
# The contenders, method by method
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One method on one setting: what is timed, and the median seconds of each contender."""

    method: str
    timed: str
    limit: str
    seconds: dict[str, float]
    layout: str = ""  # the memory layout of the faster limit

    def ratio(self, other: str) -> float | None:
        if other not in self.seconds:
            return None
        return self.seconds["vismap"] / self.seconds[other]


def _groups(s: Setting) -> list[tuple[str, str, str, dict[str, Callable[[], object]]]]:
    """``(method, what is timed, limit, {contender: function})`` for every method."""
    from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, LayerAttribution,
                             LayerGradCam, Saliency)
    from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, t, layer = s.model, s.x, s.target, s.layer
    module = model.get_submodule(layer)
    size = x.shape[-2:]
    frozen = copy.deepcopy(model).requires_grad_(False)  # the limits skip parameter gradients
    pgc_targets = [ClassifierOutputTarget(int(c)) for c in t]
    f_dx = limit(lambda xx: forward_and_input_gradient(frozen, xx, t), x)
    f_da = limit(lambda xx: forward_and_layer_gradient(frozen, xx, t, layer), x)

    def leaf():
        return x.clone().requires_grad_(True)

    def pgc_cam(kind):
        def run():
            with kind(model=model, target_layers=[module]) as cam:  # hooks removed on exit
                return cam(input_tensor=x, targets=pgc_targets)
        return run

    gb_model = copy.deepcopy(model)  # pytorch-grad-cam swaps the model's ReLUs in place

    def pgc_guided():
        # GuidedBackpropReLUModel explains the first image of its input: one call per image
        gb = GuidedBackpropReLUModel(gb_model, device=x.device)
        return [gb(x[i:i + 1], int(t[i])) for i in range(len(x))]

    groups = [
        ("saliency", "d y / d x", "F+dx",
         {**f_dx, "vismap": lambda: explain.saliency(model, x, t),
          "captum": lambda: Saliency(model).attribute(leaf(), target=t, abs=False)}),
        ("guided_backprop", "guided backprop to the input; pytorch-grad-cam: one call per image",
         "F+dx",
         {**f_dx, "vismap": lambda: explain.guided_backprop(model, x, t),
          "captum": lambda: GuidedBackprop(model).attribute(leaf(), target=t),
          "pytorch-grad-cam": pgc_guided}),
        ("deconvnet", "deconvnet rule to the input", "F+dx",
         {**f_dx, "vismap": lambda: explain.deconvnet(model, x, t),
          "captum": lambda: Deconvolution(model).attribute(leaf(), target=t)}),
        ("gradcam", "the map at the layer's resolution (no upsampling)", "F+dA",
         {**f_da,
          "vismap": lambda: explain.gradcam(model, x, t, layer=layer, upsampled=False),
          "captum": lambda: LayerGradCam(model, module).attribute(
              x, target=t, relu_attributions=True)}),
        ("gradcam, upsampled", "bilinear to the input, then min-max normalised per image "
         "(pytorch-grad-cam does both, with OpenCV, and returns numpy; captum's map gets "
         "the same two steps)", "F+dA",
         {**f_da,
          "vismap": lambda: explain.normalize(explain.gradcam(model, x, t, layer=layer)),
          "captum": lambda: explain.normalize(LayerAttribution.interpolate(
              LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True),
              size, "bilinear")),
          "pytorch-grad-cam": pgc_cam(GradCAM)}),
        ("layercam, upsampled", "bilinear to the input, then min-max normalised per image "
         "(captum has no LayerCAM)", "F+dA",
         {**f_da,
          "vismap": lambda: explain.normalize(explain.layercam(model, x, t, layer=layer)),
          "pytorch-grad-cam": pgc_cam(LayerCAM)}),
        ("guided_gradcam", "guided backprop x bilinear Grad-CAM (two backward passes; "
         "pytorch-grad-cam has no single call for it)", "F+dx",
         {**f_dx,
          "vismap": lambda: explain.guided_gradcam(model, x, t, layer=layer),
          "captum": lambda: GuidedGradCam(model, module).attribute(
              x, target=t, interpolate_mode="bilinear")}),
    ]
    return groups + [_occlusion_group(s, frozen)]


def _occlusion_group(s: Setting, frozen: nn.Module):
    from captum.attr import Occlusion

    model, n, w, st = s.model, s.occlusion_images, s.window, s.stride
    x, t = s.x[:n], s.target[:n]
    c, height, width = x.shape[1:]
    positions = (math.ceil((height - w) / st) + 1) * (math.ceil((width - w) / st) + 1)
    copies = x.repeat(positions + 1, 1, 1, 1)  # as many images as the method must run
    window, stride = (c, w, w), (c, st, st)
    captum = Occlusion(model)
    timed = (f"{n} image(s), {w}x{w} window, stride {st}: {positions} windows; captum with "
             f"its default perturbations_per_eval=1 (one forward of {n} image(s) per window)")
    return ("occlusion", timed, "P x F", {
        **limit(lambda xx: forward_in_batches(frozen, xx), copies),
        "vismap": lambda: explain.occlusion(model, x, t, window=w, stride=st, baseline=0.0),
        "captum": lambda: captum.attribute(x, sliding_window_shapes=window, strides=stride,
                                           baselines=0.0, target=t),
        "captum, batched": lambda: captum.attribute(
            x, sliding_window_shapes=window, strides=stride, baselines=0.0, target=t,
            perturbations_per_eval=max(1, 64 // n)),
    })


def measure(s: Setting, repeats: int, warmup: int,
            clock: Callable[[], float] = time.perf_counter) -> list[Row]:
    """Time every method of :func:`_groups` on the setting ``s``."""
    rows = []
    for method, timed, bound, fns in _groups(s):
        seconds = time_together(fns, repeats, warmup, clock)
        seconds["limit, NCHW"] = seconds["limit"]
        last = seconds["limit, channels-last"]
        layout = "channels-last" if last < seconds["limit"] else "NCHW"
        seconds["limit"] = min(seconds["limit"], last)
        batched = seconds.pop("captum, batched", None)
        rows.append(Row(method, timed, bound, seconds, layout))
        if batched is not None:  # same rounds, captum batching windows as vismap does
            rows.append(Row(f"{method} (captum batched)", f"as above; captum with "
                            f"perturbations_per_eval={max(1, 64 // s.occlusion_images)}",
                            bound, {**seconds, "captum": batched}, layout))
    return rows


def one_forward(s: Setting, repeats: int, warmup: int,
                clock: Callable[[], float] = time.perf_counter) -> str:
    """The scale of everything else: one forward pass of the batch, in both layouts."""
    model = copy.deepcopy(s.model).requires_grad_(False)
    seconds = time_together(limit(lambda xx: forward(model, xx), s.x), repeats, warmup, clock)
    return (f"One forward pass `F` of the batch: {_ms(seconds['limit'])} ms (NCHW), "
            f"{_ms(seconds['limit, channels-last'])} ms (channels-last).")


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def machine() -> str:
    """The CPU, thread count, load, torch and Python versions: the context of the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if
                     line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = " | load average %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} logical CPUs | torch {torch.__version__} on "
            f"{torch.get_num_threads()} thread(s) | Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}{load}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def table(rows: list[Row]) -> str:
    """The markdown table: times in ms, and vismap's time divided by each other's."""
    head = ["method", "limit", "limit (ms)", *(f"{lib} (ms)" for lib in LIBRARIES),
            "vs limit", "vs captum", "vs pytorch-grad-cam", "what is timed"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 7 + "---|"]
    for r in rows:
        cells = [r.method, f"{r.limit} ({r.layout})" if r.layout else r.limit,
                 _ms(r.seconds["limit"]),
                 *(_ms(r.seconds.get(lib)) for lib in LIBRARIES),
                 _x(r.ratio("limit")), _x(r.ratio("captum")), _x(r.ratio("pytorch-grad-cam")),
                 r.timed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's speed targets, checked on the measured ratios (lower is faster)."""
    by = {r.method: r for r in rows}
    checks = [("Grad-CAM <= 1.1x its limit", by["gradcam"], "limit", 1.1),
              ("Grad-CAM <= 1.0x captum", by["gradcam"], "captum", 1.0),
              ("guided backprop <= 1.1x its limit", by["guided_backprop"], "limit", 1.1),
              ("occlusion >= 2x faster than captum", by["occlusion"], "captum", 0.5)]
    lines = []
    for name, row, other, bound in checks:
        ratio = row.ratio(other)
        line = f"- {name}: vismap at {ratio:.2f}x (needs <= {bound:.2f}x): " + (
            "met" if ratio <= bound else f"MISSED by {ratio / bound - 1:.0%}")
        if other == "limit" and row.layout == "channels-last" and "limit, NCHW" in row.seconds:
            line += f" ({row.ratio('limit, NCHW'):.2f}x the limit in NCHW layout)"
        lines.append(line)
    return lines


def report(results: list[tuple[Setting, str, list[Row]]], header: str) -> str:
    """The whole markdown report: ``header``, then per setting its table and the targets."""
    parts = [header, ""]
    for s, scale, rows in results:
        parts += [f"### {s.title}", "", table(rows), "", scale, "", "Targets (issue #5):",
                  *targets(rows), ""]
    parts += ["Limits: " + "; ".join(f"`{k}` {v}" for k, v in LIMITS.items()) + "; each "
              "timed in both memory layouts (NCHW, channels-last), the faster kept. Every "
              "library gets the same NCHW batch. Ratios are vismap's time over the other's: "
              "below 1x vismap is faster. Each time is the median of interleaved rounds after "
              "warm-up."]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; print the markdown report (and write it to ``--out``); return it."""
    parser = argparse.ArgumentParser(prog="python -m vismap.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and one round, for the test suite (seconds)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per method (default 7 on shapes-cnn, 5 on resnet18)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed rounds (default 2 on shapes-cnn, 1 on resnet18)")
    parser.add_argument("--only", choices=["shapes-cnn", "resnet18"], default=None,
                        help="time one setting only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's, from OMP_NUM_THREADS)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time (default), or this process's CPU time: steadier when "
                             "other work shares the machine; meaningful with one thread")
    parser.add_argument("--out", default=None, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    warnings.filterwarnings("ignore", message=".*backward hook")  # captum's notices
    warnings.filterwarnings("ignore", message=".*[Ss]etting backward hooks")
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")

    if args.smoke:
        plan = [(shapes_setting(2, window=16, stride=16, occlusion_images=1), 1, 0),
                (resnet_setting(2, size=64, window=32, stride=32, occlusion_images=1), 1, 0)]
    else:
        plan = [(shapes_setting(64), 7, 2), (resnet_setting(8), 5, 1)]
    if args.only:
        plan = [p for p in plan if p[0].name.startswith(args.only)]
    header = (f"Machine: {machine()} | {args.clock} clock"
              + (" | smoke mode: tiny sizes, one round" if args.smoke else ""))
    results = []
    for s, repeats, warmup in plan:
        repeats = args.repeats or repeats
        warmup = warmup if args.warmup is None else args.warmup
        results.append((s, one_forward(s, repeats, warmup, clock),
                        measure(s, repeats, warmup, clock)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = report(results, header) + f"\nLoad average at the end: {load:.2f}.\n"
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
    return text


if __name__ == "__main__":
    main()
