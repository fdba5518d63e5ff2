"""``python benchmarks/bench.py`` (``make bench``): vismap's methods timed against their
limits, captum, pytorch-grad-cam and zennit.

Every method of the registry ``vismap.explain.METHODS`` that runs on a setting's model is timed
(:data:`PLANS` says how each is compared; a method without a plan is timed against the limit of
its kind with its default options). Four things are timed side by side in one process:
vismap's implementation, captum's equivalent, pytorch-grad-cam's where it has one (zennit's
for layer-wise relevance propagation), and the method's *limit* - the work no implementation
can avoid:

* ``F``      one forward pass (no autograd);
* ``F+dA``   a forward pass and the gradient of the score with respect to the layer ``A``
  (the least Grad-CAM, Grad-CAM++ and LayerCAM must do);
* ``F+dx``   a forward pass and the gradient of the score with respect to the input ``x``
  (the least every input-gradient method must do);
* ``N x F+dx`` the same for the ``N`` noisy copies (SmoothGrad) or path points (Integrated
  Gradients) of every image, pre-built, in batches of the method's ``batch_size``;
* ``P x F``  the forwards of the ``P`` occluded copies (and the original) of every image,
  pre-built, 64 images per forward (the least occlusion must do);
* ``K x F``  the forwards of the ``K`` masked copies of every image (Score-CAM: one per distinct
  mask - a feature map of the layer, all constant maps sharing the all-zero mask), pre-built,
  64 images per forward.

Each limit is timed on the batch in both memory layouts, NCHW and channels-last (``(n, H, W,
C)`` in memory), and the faster is kept: on a CPU oneDNN's convolutions often run much faster
channels-last (shapes-cnn's forward about 2x), and vismap runs every method channels-last on a
CPU. The targets also quote the NCHW limit when channels-last won. (Channels-last is no free
lunch for *input* gradients where an image has perfectly flat regions: activations equal in
exact arithmetic come out a few ulps apart and a max-pool may route a tie to another input. On
the course's anti-aliased Shapes scenes no such ties occur: the maps equal NCHW's to 1e-6.)

Each group (limit, vismap, captum, pytorch-grad-cam) is timed in interleaved rounds - every
round runs each once, in rotating order - after warm-up calls, and each time is the median of
the rounds: a change in the machine's load then hits all of them alike, and the ratios (vismap
divided by the others) compare across machines better than the milliseconds do. Nothing here is
asserted: speed is measured, not tested (``tests/test_bench.py`` only runs the smoke mode).

Two settings: the course's ``shapes-cnn`` on a batch of 64 Shapes images (64x64, layer
``features.9``), and torchvision's ResNet-18 with random weights on 8 random 224x224 images
(layer ``layer4``). ReLUs are made out-of-place in both (pytorch-grad-cam needs it on some
models, so every library gets the same function).

    python benchmarks/bench.py                 # the full benchmark (minutes on 2 cores)
    python benchmarks/bench.py --smoke         # tiny sizes, one round: seconds
    python benchmarks/bench.py --out bench.md  # also write the markdown to a file
    python benchmarks/bench.py --methods gradcam scorecam --only shapes-cnn  # a few groups
    OMP_NUM_THREADS=1 python benchmarks/bench.py --clock cpu  # CPU time: steadier when busy
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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from vismap import data, explain, models

LIBRARIES = ("vismap", "captum", "pytorch-grad-cam", "zennit")
LIMITS = {
    "F": "one forward pass, no autograd",
    "F+dA": "forward + gradient of the score to the layer",
    "F+dx": "forward + gradient of the score to the input",
    "N x F+dx": "forward + gradient to the input of every noisy copy or path point "
    "(pre-built), in the method's batches",
    "P x F": "the forwards of every occluded copy (pre-built), 64 images per forward",
    "K x F": "the forwards of every distinct masked copy (pre-built), 64 images per forward",
}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_together(
    fns: dict[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
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
        for name in names[r % len(names) :] + names[: r % len(names)]:
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


def forward_and_input_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``F+dx``: ``d score / d x`` (give a model whose parameters are frozen)."""
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(_scores(model, x, target), x)[0]


def forward_and_layer_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str
) -> torch.Tensor:
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
            model(batch[start : start + size])


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
    """A model, a batch, the layer for the coarse methods, and the smaller workloads of the
    methods that run the model many times per image (occlusion, SmoothGrad and Integrated
    Gradients, Score-CAM)."""

    name: str
    model: nn.Module
    x: torch.Tensor
    target: torch.Tensor
    layer: str
    occlusion_images: int
    window: int
    stride: int
    sampled_images: int  # SmoothGrad, Integrated Gradients: the first images of the batch
    samples: int  # SmoothGrad's noisy copies
    steps: int  # Integrated Gradients' path points
    score_images: int  # Score-CAM: the first images of the batch ...
    score_size: int  # ... resized to this side (one forward per feature map and image)
    rounds: tuple[int, int] = (3, 1)  # (repeats, warmup) of the many-forward methods

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


def shapes_setting(
    batch: int,
    window: int = 8,
    stride: int = 4,
    occlusion_images: int = 4,
    sampled_images: int = 16,
    samples: int = 25,
    steps: int = 64,
    score_images: int = 8,
) -> Setting:
    """The course's shapes-cnn on ``batch`` Shapes images; occlusion on the first few of them
    (one forward per window and image: on all 64 both libraries would run the same forwards),
    SmoothGrad and IG with their default samples and steps on 16, Score-CAM on 8."""
    shapes = data.make_shapes(batch, seed=0)
    model = _out_of_place(models.load_pretrained("shapes-cnn"))
    return Setting(
        "shapes-cnn",
        model,
        shapes.images,
        shapes.labels,
        "features.9",
        min(occlusion_images, batch),
        window,
        stride,
        min(sampled_images, batch),
        samples,
        steps,
        min(score_images, batch),
        shapes.images.shape[-1],
    )


def resnet_setting(
    batch: int,
    size: int = 224,
    window: int = 56,
    stride: int = 28,
    occlusion_images: int = 2,
    sampled_images: int = 1,
    samples: int = 8,
    steps: int = 16,
    score_images: int = 1,
    score_size: int = 112,
) -> Setting:
    """torchvision's ResNet-18 (random weights: nothing is downloaded) on ``batch`` random
    images; occlusion, which costs one forward per window and image, with a coarse window on
    the first two images only; SmoothGrad (8 samples) and IG (16 steps) on the first image;
    Score-CAM (512 feature maps at ``layer4``: 512 forwards per image) on the first image
    resized to 112x112."""
    import torchvision

    with torch.random.fork_rng():  # the same random weights every run; the caller's RNG kept
        torch.manual_seed(0)
        model = _out_of_place(torchvision.models.resnet18(weights=None).eval())
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = forward(model, x).argmax(1)  # explain the predicted classes
    return Setting(
        "resnet18 (random weights)",
        model,
        x,
        target,
        "layer4",
        min(occlusion_images, batch),
        window,
        stride,
        min(sampled_images, batch),
        samples,
        steps,
        min(score_images, batch),
        score_size,
        rounds=(3, 1),
    )


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


@dataclass
class Group:
    """A method's contenders, timed together: ``(method, what is timed, limit, functions)``;
    ``variants`` are further captum or pytorch-grad-cam settings, each reported as its own row
    ``method (suffix)``: ``{suffix: (contender, function, what is timed)}``."""

    method: str
    timed: str
    limit: str
    fns: dict[str, Callable[[], object]]
    variants: dict[str, tuple[str, Callable[[], object], str]] = field(default_factory=dict)
    rounds: tuple[int, int] | None = None  # (repeats, warmup) instead of the setting's


@dataclass
class Context:
    """What the plans share on one setting."""

    s: Setting
    frozen: nn.Module  # a copy without parameter gradients, for the limits
    module: nn.Module  # the layer
    f_dx: dict[str, Callable]
    f_da: dict[str, Callable]

    def leaf(self) -> torch.Tensor:
        return self.s.x.clone().requires_grad_(True)


def _context(s: Setting) -> Context:
    frozen = copy.deepcopy(s.model).requires_grad_(False)  # the limits skip parameter gradients
    return Context(
        s,
        frozen,
        s.model.get_submodule(s.layer),
        limit(lambda xx: forward_and_input_gradient(frozen, xx, s.target), s.x),
        limit(lambda xx: forward_and_layer_gradient(frozen, xx, s.target, s.layer), s.x),
    )


def _pgc_cam(
    kind, c: Context, x: torch.Tensor | None = None, t: torch.Tensor | None = None, **attributes
):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = c.s.x if x is None else x
    targets = [ClassifierOutputTarget(int(k)) for k in (c.s.target if t is None else t)]

    def run():
        with kind(model=c.s.model, target_layers=[c.module]) as cam:  # hooks removed on exit
            for name, value in attributes.items():
                setattr(cam, name, value)
            return cam(input_tensor=x, targets=targets)

    return run


UPSAMPLED = (
    "bilinear to the input, then min-max normalised per image (pytorch-grad-cam does "
    "both, with OpenCV, and returns numpy; captum's map gets the same two steps)"
)


def _saliency(c: Context) -> Group:
    from captum.attr import Saliency

    s = c.s
    return Group(
        "saliency",
        "d y / d x",
        "F+dx",
        {
            **c.f_dx,
            "vismap": lambda: explain.saliency(s.model, s.x, s.target),
            "captum": lambda: Saliency(s.model).attribute(c.leaf(), target=s.target, abs=False),
        },
    )


def _guided_backprop(c: Context) -> Group:
    from captum.attr import GuidedBackprop
    from pytorch_grad_cam import GuidedBackpropReLUModel

    s = c.s
    gb_model = copy.deepcopy(s.model)  # pytorch-grad-cam swaps the model's ReLUs in place

    def pgc_guided():
        # GuidedBackpropReLUModel explains the first image of its input: one call per image
        gb = GuidedBackpropReLUModel(gb_model, device=s.x.device)
        return [gb(s.x[i : i + 1], int(s.target[i])) for i in range(len(s.x))]

    return Group(
        "guided_backprop",
        "guided backprop to the input; pytorch-grad-cam: one call per image",
        "F+dx",
        {
            **c.f_dx,
            "vismap": lambda: explain.guided_backprop(s.model, s.x, s.target),
            "captum": lambda: GuidedBackprop(s.model).attribute(c.leaf(), target=s.target),
            "pytorch-grad-cam": pgc_guided,
        },
    )


def _deconvnet(c: Context) -> Group:
    from captum.attr import Deconvolution

    s = c.s
    return Group(
        "deconvnet",
        "deconvnet rule to the input",
        "F+dx",
        {
            **c.f_dx,
            "vismap": lambda: explain.deconvnet(s.model, s.x, s.target),
            "captum": lambda: Deconvolution(s.model).attribute(c.leaf(), target=s.target),
        },
    )


def _gradient_x_input(c: Context) -> Group:
    from captum.attr import InputXGradient

    s = c.s
    return Group(
        "gradient_x_input",
        "x * d y / d x",
        "F+dx",
        {
            **c.f_dx,
            "vismap": lambda: explain.gradient_x_input(s.model, s.x, s.target),
            "captum": lambda: InputXGradient(s.model).attribute(c.leaf(), target=s.target),
        },
    )


def _sampled_limit(c: Context, n: int, copies: int, batch_size: int = 64) -> dict:
    """``N x F+dx``: the ``copies`` points of each of the first ``n`` images, pre-built,
    ``batch_size`` per forward and input gradient."""
    s = c.s
    points = s.x[:n].repeat_interleave(copies, 0)
    per_point = s.target[:n].repeat_interleave(copies)

    def run(xx):
        for i in range(0, len(xx), batch_size):
            forward_and_input_gradient(
                c.frozen, xx[i : i + batch_size], per_point[i : i + batch_size]
            )

    return limit(run, points)


def _smoothgrad(c: Context) -> Group:
    from captum.attr import NoiseTunnel, Saliency

    s = c.s
    n, samples = s.sampled_images, s.samples
    x, t = s.x[:n], s.target[:n]
    return Group(
        "smoothgrad",
        f"{n} image(s) x {samples} noisy copies, sigma 0.15, the "
        f"gradient; vismap 64 copies per pass, captum's NoiseTunnel all at once",
        "N x F+dx",
        {
            **_sampled_limit(c, n, samples),
            "vismap": lambda: explain.smoothgrad(s.model, x, t, samples=samples, sigma=0.15),
            "captum": lambda: NoiseTunnel(Saliency(s.model)).attribute(
                x.clone().requires_grad_(True),
                nt_type="smoothgrad",
                nt_samples=samples,
                stdevs=0.15,
                target=t,
                abs=False,
            ),
        },
        rounds=s.rounds,
    )


def _integrated_gradients(c: Context) -> Group:
    from captum.attr import IntegratedGradients

    s = c.s
    n, steps = s.sampled_images, s.steps
    x, t = s.x[:n], s.target[:n]
    return Group(
        "integrated_gradients",
        f"{n} image(s) x {steps} Gauss-Legendre points from "
        f"a black baseline; both 64 points per pass (captum's internal_batch_size)",
        "N x F+dx",
        {
            **_sampled_limit(c, n, steps),
            "vismap": lambda: explain.integrated_gradients(s.model, x, t, steps=steps),
            "captum": lambda: IntegratedGradients(s.model).attribute(
                x,
                baselines=0.0,
                target=t,
                n_steps=steps,
                method="gausslegendre",
                internal_batch_size=64,
            ),
        },
        rounds=s.rounds,
    )


def _occlusion(c: Context) -> Group:
    from captum.attr import Occlusion

    s = c.s
    model, n, w, st = s.model, s.occlusion_images, s.window, s.stride
    x, t = s.x[:n], s.target[:n]
    ch, height, width = x.shape[1:]
    positions = (math.ceil((height - w) / st) + 1) * (math.ceil((width - w) / st) + 1)
    copies = x.repeat(positions + 1, 1, 1, 1)  # as many images as the method must run
    window, stride = (ch, w, w), (ch, st, st)
    captum = Occlusion(model)
    batched = max(1, 64 // n)
    return Group(
        "occlusion",
        f"{n} image(s), {w}x{w} window, stride {st}: {positions} windows; "
        f"captum with its default perturbations_per_eval=1 (one forward of {n} "
        f"image(s) per window)",
        "P x F",
        {
            **limit(lambda xx: forward_in_batches(c.frozen, xx), copies),
            "vismap": lambda: explain.occlusion(model, x, t, window=w, stride=st, baseline=0.0),
            "captum": lambda: captum.attribute(
                x, sliding_window_shapes=window, strides=stride, baselines=0.0, target=t
            ),
        },
        {
            "captum batched": (
                "captum",
                lambda: captum.attribute(
                    x,
                    sliding_window_shapes=window,
                    strides=stride,
                    baselines=0.0,
                    target=t,
                    perturbations_per_eval=batched,
                ),
                f"as above; captum with perturbations_per_eval={batched}",
            )
        },
    )


def _cam(c: Context) -> Group:
    s = c.s
    return Group(
        "cam",
        "the map at the layer's resolution (neither captum nor pytorch-grad-cam has CAM)",
        "F",
        {
            **limit(lambda xx: forward(c.frozen, xx), s.x),
            "vismap": lambda: explain.cam(s.model, s.x, s.target, layer=s.layer, upsampled=False),
        },
    )


def _gradcam(c: Context) -> list[Group]:
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM

    s = c.s
    return [
        Group(
            "gradcam",
            "the map at the layer's resolution (no upsampling)",
            "F+dA",
            {
                **c.f_da,
                "vismap": lambda: explain.gradcam(
                    s.model, s.x, s.target, layer=s.layer, upsampled=False
                ),
                "captum": lambda: LayerGradCam(s.model, c.module).attribute(
                    s.x, target=s.target, relu_attributions=True
                ),
            },
        ),
        Group(
            "gradcam, upsampled",
            UPSAMPLED,
            "F+dA",
            {
                **c.f_da,
                "vismap": lambda: explain.normalize(
                    explain.gradcam(s.model, s.x, s.target, layer=s.layer)
                ),
                "captum": lambda: explain.normalize(
                    LayerAttribution.interpolate(
                        LayerGradCam(s.model, c.module).attribute(
                            s.x, target=s.target, relu_attributions=True
                        ),
                        s.x.shape[-2:],
                        "bilinear",
                    )
                ),
                "pytorch-grad-cam": _pgc_cam(GradCAM, c),
            },
        ),
    ]


def _gradcam_pp(c: Context) -> Group:
    from pytorch_grad_cam import GradCAMPlusPlus

    s = c.s
    return Group(
        "gradcam_pp, upsampled",
        UPSAMPLED + " (captum has no Grad-CAM++)",
        "F+dA",
        {
            **c.f_da,
            "vismap": lambda: explain.normalize(
                explain.gradcam_pp(s.model, s.x, s.target, layer=s.layer)
            ),
            "pytorch-grad-cam": _pgc_cam(GradCAMPlusPlus, c),
        },
    )


def _layercam(c: Context) -> Group:
    from pytorch_grad_cam import LayerCAM

    s = c.s
    return Group(
        "layercam, upsampled",
        UPSAMPLED + " (captum has no LayerCAM)",
        "F+dA",
        {
            **c.f_da,
            "vismap": lambda: explain.normalize(
                explain.layercam(s.model, s.x, s.target, layer=s.layer)
            ),
            "pytorch-grad-cam": _pgc_cam(LayerCAM, c),
        },
    )


def _scorecam(c: Context) -> Group:
    import torch.nn.functional as F
    from pytorch_grad_cam import ScoreCAM

    s = c.s
    n = s.score_images
    x = s.x[:n]
    if s.score_size != x.shape[-1]:
        x = F.interpolate(
            x, size=(s.score_size, s.score_size), mode="bilinear", align_corners=False
        )
    t = s.target[:n]
    a = explain.layer_gradient(s.model, x, t, s.layer)[0]
    masks = explain.normalize(explain.upsample(a.flatten(0, 1)[:, None], x.shape[-2:]))
    masks = masks.view(n, a.shape[1], *x.shape[-2:])
    # The distinct masks: a constant feature map gives the all-zero mask, whichever map it is,
    # so every image's constant maps need one forward between them, not one each.
    constant = masks.flatten(2).amax(2) == 0  # (n, K)
    distinct = [torch.cat([m[~c], m[c][:1]]) for m, c in zip(masks, constant, strict=True)]
    masked = torch.cat([x[i : i + 1] * d[:, None] for i, d in enumerate(distinct)])
    what = (
        f"{n} image(s) of {x.shape[-1]}x{x.shape[-1]}: {a.shape[1]} feature maps, "
        f"{len(masked)} distinct masks ({int(constant.sum())} constant maps give the "
        f"all-zero mask), one masked forward each; pytorch-grad-cam with its default batch "
        f"of 16 (one forward per feature map)"
    )
    return Group(
        "scorecam, upsampled",
        what + "; " + UPSAMPLED,
        "K x F",
        {
            **limit(lambda xx: forward_in_batches(c.frozen, xx), masked),
            "vismap": lambda: explain.normalize(explain.scorecam(s.model, x, t, layer=s.layer)),
            "pytorch-grad-cam": _pgc_cam(ScoreCAM, c, x, t),
        },
        {
            "pytorch-grad-cam batch 64": (
                "pytorch-grad-cam",
                _pgc_cam(ScoreCAM, c, x, t, batch_size=64),
                "as above; pytorch-grad-cam with batch_size=64",
            )
        },
        rounds=s.rounds,
    )


def _guided_gradcam(c: Context) -> Group:
    from captum.attr import GuidedGradCam

    s = c.s
    return Group(
        "guided_gradcam",
        "guided backprop x bilinear Grad-CAM (two backward passes; "
        "pytorch-grad-cam has no single call for it)",
        "F+dx",
        {
            **c.f_dx,
            "vismap": lambda: explain.guided_gradcam(s.model, s.x, s.target, layer=s.layer),
            "captum": lambda: GuidedGradCam(s.model, c.module).attribute(
                s.x, target=s.target, interpolate_mode="bilinear"
            ),
        },
    )


def _lrp(c: Context) -> list[Group]:
    """LRP-epsilon and LRP-z+ on every convolution and linear layer, against zennit (a
    ``LayerMapComposite``: the rule on Convolution and Linear, Pass on activations, Norm on
    average pooling, with a ``Gradient`` attributor; the relevance put on the output is the
    class's logit) and captum's ``LRP`` (its rules set on the layers before each call, since
    ``attribute`` removes them; nn.Flatten needs one too). captum's z+ is Alpha1_Beta0_Rule,
    which keeps the whole bias (the paper and vismap: b+), the same work."""
    import torch.nn.functional as F
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule
    from zennit import rules, types
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite

    s = c.s

    def zennit(rule) -> Callable[[], object]:
        composite = LayerMapComposite(
            [
                (types.Activation, rules.Pass()),
                (types.AvgPool, rules.Norm()),
                (types.Convolution, rule),
                (types.Linear, rule),
            ]
        )

        def run():
            with Gradient(s.model, composite) as attributor:
                return attributor(c.leaf(), lambda out: F.one_hot(s.target, out.shape[1]) * out)

        return run

    def captum(make_rule: Callable[[], object]) -> Callable[[], object]:
        model = copy.deepcopy(s.model)

        def run():
            for m in model.modules():
                if isinstance(m, nn.Flatten):
                    m.rule = EpsilonRule()  # type: ignore[assignment]
                elif isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.rule = make_rule()  # type: ignore[assignment]
            return LRP(model).attribute(c.leaf(), target=s.target)

        return run

    return [
        Group(
            "lrp",
            "LRP-epsilon (epsilon 0.25) to the input, every conv and linear layer",
            "F+dx",
            {
                **c.f_dx,
                "vismap": lambda: explain.lrp(s.model, s.x, s.target, rule="epsilon"),
                "captum": captum(lambda: EpsilonRule(0.25)),
                "zennit": zennit(rules.Epsilon(0.25)),
            },
        ),
        Group(
            "lrp, zplus",
            "LRP-z+ to the input, every conv and linear layer (captum: Alpha1_Beta0_Rule)",
            "F+dx",
            {
                **c.f_dx,
                "vismap": lambda: explain.lrp(s.model, s.x, s.target, rule="zplus"),
                "captum": captum(Alpha1_Beta0_Rule),
                "zennit": zennit(rules.ZPlus()),
            },
        ),
    ]


# How each registry method is compared; a registry method missing here is timed against the
# limit of its kind with its default options (see _default_group).
PLANS: dict[str, Callable[[Context], Group | list[Group]]] = {
    "saliency": _saliency,
    "guided_backprop": _guided_backprop,
    "deconvnet": _deconvnet,
    "gradient_x_input": _gradient_x_input,
    "smoothgrad": _smoothgrad,
    "integrated_gradients": _integrated_gradients,
    "occlusion": _occlusion,
    "cam": _cam,
    "gradcam": _gradcam,
    "gradcam_pp": _gradcam_pp,
    "scorecam": _scorecam,
    "layercam": _layercam,
    "guided_gradcam": _guided_gradcam,
    "lrp": _lrp,
}


def _default_group(c: Context, entry: explain.Method) -> Group:
    s = c.s
    bound, fns = ("F+dA", c.f_da) if entry.layered else ("F+dx", c.f_dx)
    return Group(
        entry.name,
        "with its default options (no plan in the benchmark yet)",
        bound,
        {**fns, "vismap": lambda: entry(s.model, s.x, s.target, layer=s.layer)},
    )


def runs_on(entry: explain.Method, s: Setting) -> bool:
    """Whether the method applies to the setting's model: its needs that the model itself must
    meet (:meth:`vismap.explain.Method.unmet`: factor maps need a VAE, the attention maps a
    transformer, LRP a chain of supported modules, not ResNet's residual additions); CAM needs
    a GAP network, tried once on one image; the others run on any classifier."""
    if entry.unmet(s.model) is not None:
        return False
    if "GAP" in entry.needs:
        try:
            entry(s.model, s.x[:1], s.target[:1], layer=s.layer)
        except ValueError:
            return False
    return True


def _groups(s: Setting, methods: Collection[str] | None = None) -> list[Group]:
    """The groups of every registry method that runs on ``s`` (only those named in ``methods``
    if given), in registry order."""
    c = _context(s)
    groups: list[Group] = []
    for name, entry in explain.METHODS.items():
        if (methods is not None and name not in methods) or not runs_on(entry, s):
            continue
        made = PLANS[name](c) if name in PLANS else _default_group(c, entry)
        groups += made if isinstance(made, list) else [made]
    return groups


def measure(
    s: Setting,
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
    methods: Collection[str] | None = None,
) -> list[Row]:
    """Time every group of :func:`_groups` on the setting ``s`` (of ``methods`` only, if
    given)."""
    rows = []
    for g in _groups(s, methods):
        fns = dict(g.fns)
        for suffix, (_, fn, _) in g.variants.items():
            fns[suffix] = fn
        r, w = (
            (min(repeats, g.rounds[0]), min(warmup, g.rounds[1])) if g.rounds else (repeats, warmup)
        )
        seconds = time_together(fns, r, w, clock)
        seconds["limit, NCHW"] = seconds["limit"]
        last = seconds["limit, channels-last"]
        layout = "channels-last" if last < seconds["limit"] else "NCHW"
        seconds["limit"] = min(seconds["limit"], last)
        extra = {suffix: seconds.pop(suffix) for suffix in g.variants}
        rows.append(Row(g.method, g.timed, g.limit, seconds, layout))
        for suffix, (who, _, timed) in g.variants.items():  # same rounds, another setting
            rows.append(
                Row(
                    f"{g.method} ({suffix})",
                    timed,
                    g.limit,
                    {**seconds, who: extra[suffix]},
                    layout,
                )
            )
    return rows


def one_forward(
    s: Setting, repeats: int, warmup: int, clock: Callable[[], float] = time.perf_counter
) -> str:
    """The scale of everything else: one forward pass of the batch, in both layouts."""
    model = copy.deepcopy(s.model).requires_grad_(False)
    seconds = time_together(limit(lambda xx: forward(model, xx), s.x), repeats, warmup, clock)
    return (
        f"One forward pass `F` of the batch: {_ms(seconds['limit'])} ms (NCHW), "
        f"{_ms(seconds['limit, channels-last'])} ms (channels-last)."
    )


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def machine() -> str:
    """The CPU, thread count, load, torch and Python versions: the context of the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = f" | load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs | torch {torch.__version__} on "
        f"{torch.get_num_threads()} thread(s) | Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}{load}"
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def table(rows: list[Row]) -> str:
    """The markdown table: times in ms, and vismap's time divided by each other's."""
    head = [
        "method",
        "limit",
        "limit (ms)",
        *(f"{lib} (ms)" for lib in LIBRARIES),
        "vs limit",
        "vs captum",
        "vs pytorch-grad-cam",
        "vs zennit",
        "what is timed",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 9 + "---|"]
    for r in rows:
        cells = [
            r.method,
            f"{r.limit} ({r.layout})" if r.layout else r.limit,
            _ms(r.seconds["limit"]),
            *(_ms(r.seconds.get(lib)) for lib in LIBRARIES),
            _x(r.ratio("limit")),
            _x(r.ratio("captum")),
            _x(r.ratio("pytorch-grad-cam")),
            _x(r.ratio("zennit")),
            r.timed,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (name, method row, compared with, bound on vismap's time over the other's, where it applies)
TARGETS = [
    ("Grad-CAM <= 1.1x its limit", "gradcam", "limit", 1.1, None),
    ("Grad-CAM <= 0.7x captum's LayerGradCam", "gradcam", "captum", 0.7, None),
    ("guided backprop <= 1.1x its limit", "guided_backprop", "limit", 1.1, None),
    ("saliency <= 1.1x its limit", "saliency", "limit", 1.1, None),
    ("occlusion <= 1.1x its limit", "occlusion", "limit", 1.1, None),
    ("occlusion >= 2x faster than captum", "occlusion", "captum", 0.5, "shapes-cnn"),
    ("SmoothGrad <= 1.1x its limit", "smoothgrad", "limit", 1.1, None),
    ("SmoothGrad no slower than captum", "smoothgrad", "captum", 1.0, None),
    ("Integrated Gradients <= 1.1x its limit", "integrated_gradients", "limit", 1.1, None),
    ("Integrated Gradients no slower than captum", "integrated_gradients", "captum", 1.0, None),
    ("LRP-epsilon no slower than zennit", "lrp", "zennit", 1.0, None),
    ("LRP-epsilon no slower than captum", "lrp", "captum", 1.0, None),
    ("LRP-z+ no slower than zennit", "lrp, zplus", "zennit", 1.0, None),
    (
        "Score-CAM >= 2x faster than pytorch-grad-cam",
        "scorecam, upsampled",
        "pytorch-grad-cam",
        0.5,
        None,
    ),
]


def targets(rows: list[Row], setting: str = "") -> list[str]:
    """The speed targets of :data:`TARGETS` that apply to ``setting``, checked on the measured
    ratios (lower is faster)."""
    by = {r.method: r for r in rows}
    lines = []
    for name, method, other, bound, where in TARGETS:
        if method not in by or (where and not setting.startswith(where)):
            continue
        row = by[method]
        ratio = row.ratio(other)
        if ratio is None:
            continue
        line = f"- {name}: vismap at {ratio:.2f}x (needs <= {bound:.2f}x): " + (
            "met" if ratio <= bound else f"MISSED by {ratio / bound - 1:.0%}"
        )
        if other == "limit" and row.layout == "channels-last" and "limit, NCHW" in row.seconds:
            line += f" ({row.ratio('limit, NCHW'):.2f}x the limit in NCHW layout)"
        lines.append(line)
    return lines


def report(results: list[tuple[Setting, str, list[Row]]], header: str) -> str:
    """The whole markdown report: ``header``, then per setting its table and the targets."""
    parts = [header, ""]
    for s, scale, rows in results:
        parts += [
            f"### {s.title}",
            "",
            table(rows),
            "",
            scale,
            "",
            "Targets:",
            *targets(rows, s.name),
            "",
        ]
    parts += [
        "Limits: " + "; ".join(f"`{k}` {v}" for k, v in LIMITS.items()) + "; each "
        "timed in both memory layouts (NCHW, channels-last), the faster kept. Every "
        "library gets the same NCHW batch. Ratios are vismap's time over the other's: "
        "below 1x vismap is faster. Each time is the median of interleaved rounds after "
        "warm-up."
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; print the markdown report (and write it to ``--out``); return it."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one round, for the test suite (seconds)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per method (default 7 on shapes-cnn, 5 on resnet18)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed rounds (default 2 on shapes-cnn, 1 on resnet18)",
    )
    parser.add_argument(
        "--only", choices=["shapes-cnn", "resnet18"], default=None, help="time one setting only"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="NAME",
        help="time only these registry methods (e.g. gradcam scorecam; a "
        "method's variants and upsampled rows come with it); default all",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's, from OMP_NUM_THREADS)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time (default), or this process's CPU time: steadier when "
        "other work shares the machine; meaningful with one thread",
    )
    parser.add_argument("--out", default=None, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    if args.methods is not None:
        unknown = [m for m in args.methods if m not in explain.METHODS]
        if unknown:
            parser.error(
                f"unknown method(s) {', '.join(unknown)}; valid names: {', '.join(explain.METHODS)}"
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    warnings.filterwarnings("ignore", message=".*backward hook")  # captum's notices
    warnings.filterwarnings("ignore", message=".*[Ss]etting backward hooks")
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
    os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM progress bars

    if args.smoke:
        tiny = dict(occlusion_images=1, sampled_images=1, samples=2, steps=2, score_images=1)
        plan = [
            (shapes_setting(2, window=16, stride=16, **tiny), 1, 0),
            (resnet_setting(2, size=32, window=16, stride=16, score_size=24, **tiny), 1, 0),
        ]
    else:
        plan = [(shapes_setting(64), 7, 2), (resnet_setting(8), 5, 1)]
    if args.only:
        plan = [p for p in plan if p[0].name.startswith(args.only)]
    header = (
        f"Machine: {machine()} | {args.clock} clock"
        + (" | smoke mode: tiny sizes, one round" if args.smoke else "")
        + (f" | methods: {', '.join(args.methods)}" if args.methods else "")
    )
    results = []
    for s, repeats, warmup in plan:
        repeats = args.repeats or repeats
        warmup = warmup if args.warmup is None else args.warmup
        results.append(
            (
                s,
                one_forward(s, repeats, warmup, clock),
                measure(s, repeats, warmup, clock, args.methods),
            )
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = report(results, header) + f"\nLoad average at the end: {load:.2f}.\n"
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
    return text


if __name__ == "__main__":
    main()
