"""Images made for a model (chapter 10), not maps of a given image.

* :func:`class_model` - an image the model scores as a class: activation maximisation
  (Simonyan et al. 2014, Sec. 2), with the regularisers of Yosinski et al. 2015;
* :func:`adversarial` - images within ``eps`` of ``x`` that the model no longer scores as the
  target (Goodfellow et al. 2015; Madry et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_call, check_count, check_input, check_model, check_nonnegative
from .._running import explaining, forward, inference_safe, model_input
from .._targets import Target, check_target, is_score, target_classes, target_scores
from ..metrics import blur

__all__ = ["class_model", "adversarial"]


@inference_safe
def class_model(
    model: nn.Module,
    target: Target,
    *,
    shape: tuple[int, ...] = (3, 64, 64),
    steps: int = 200,
    lr: float = 0.05,
    l2: float = 1e-3,
    jitter: int = 4,
    blur_every: int = 4,
    blur_sigma: float = 0.5,
    seed: int = 0,
    objective: str = "score",
) -> torch.Tensor:
    """The class model of Simonyan, Vedaldi & Zisserman 2014 (*Deep Inside Convolutional
    Networks*, Sec. 2): an image the model scores as the class, by gradient ascent on the image.

        ``I* = argmax_I  s^c(I) - l2 ||I - 0.5||^2``,   ``I`` in [0, 1]

    Simonyan et al. ascend the unnormalised score ``s^c = y^c`` (``objective="score"``, the
    default) with an L2 penalty; their zero is the training set's mean image, ours mid-grey.
    Nothing in it stops another class's score from rising faster: a softmax-trained shapes-cnn
    drew a class-0 image that it scored as class 4 (p = 0.86). ``objective="log_probability"``
    ascends ``s^c = log softmax(y)_c = y^c - log sum_k exp y^k`` instead, which also pushes the
    other classes down; it suits a softmax classifier, not a multi-label one, whose classes are
    not exclusive (the multi-label shapes-cnn's class-1 image then ended as class 3). For a
    callable target its own score is ascended. Each step moves by ``lr``
    along the gradient divided by its mean magnitude, then clips to [0, 1]. With the
    regularisers of later work (Yosinski et al. 2015,
    *Understanding Neural Networks Through Deep Visualization*), the image is shifted by a random
    ``jitter`` of up to that many pixels before each step and blurred (``blur_sigma`` pixels)
    every ``blur_every`` steps (0: never): high-frequency patterns that only one alignment
    rewards do not survive. Check the model's score of the result: the tests assert p > 0.5
    for every class of the course's classifiers with the defaults.

    Args:
        target: the class (an int) or a callable score of the model's output.
        shape: ``(C, H, W)`` of the image; every argument but ``target`` has a default.
        steps, lr: the number and size of the ascent steps.
        l2: the weight of the L2 penalty (>= 0).
        jitter: the largest random shift in pixels (>= 0).
        blur_every, blur_sigma: the blur's period in steps (0: no blur) and width in pixels.
        seed: seeds the start (mid-grey plus a little noise) and the jitter: same seed, same image.
        objective: ``"score"`` (default: Simonyan et al.'s ``y^c``) or ``"log_probability"``,
            for a class target.

    Returns:
        ``(1, *shape)`` in [0, 1], on the model's device.
    """
    check_model(model)
    check_target(target, 1)
    if objective not in ("log_probability", "score"):
        raise ValueError(f"objective must be 'log_probability' or 'score', got {objective!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    check_count(steps, "steps")
    check_count(jitter, "jitter", minimum=0)
    check_count(blur_every, "blur_every", minimum=0)
    check_nonnegative(lr, "lr")
    check_nonnegative(l2, "l2")
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise ValueError(f"shape must be (C, H, W), three positive ints; got {shape!r}")
    if blur_every and not (isinstance(blur_sigma, (int, float)) and blur_sigma > 0):
        raise ValueError(f"blur_sigma must be a number > 0, got {blur_sigma!r}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    rng = torch.Generator().manual_seed(seed)
    image = (0.5 + 0.01 * torch.randn((1, *shape), generator=rng)).clamp(0, 1)
    image = image.to(device=device, dtype=dtype or image.dtype)
    what = f"the image of shape={tuple(shape)}"
    check_input(image, model, what)
    with explaining(model):
        for step in range(steps):
            dy, dx = (
                torch.randint(-jitter, jitter + 1, (2,), generator=rng).tolist()
                if jitter
                else (0, 0)
            )
            shifted = torch.roll(image, (dy, dx), (2, 3)).requires_grad_(True)
            out = forward(model, model_input(shifted, fast=False), what)
            if objective == "log_probability" and not is_score(target):
                out = out.log_softmax(1)
            ascent = target_scores(out, target) - l2 * (shifted - 0.5).pow(2).sum()
            (grad,) = torch.autograd.grad(ascent.sum(), shifted)
            grad = torch.roll(grad, (-dy, -dx), (2, 3))
            image = (image + lr * grad / grad.abs().mean().clamp(min=1e-12)).clamp(0, 1)
            if blur_every and (step + 1) % blur_every == 0 and step + 1 < steps:
                image = blur(image, blur_sigma).clamp(0, 1)
    return image.detach()


@inference_safe
def adversarial(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    eps: float = 4 / 255,
    steps: int = 10,
    step_size: float | None = None,
) -> torch.Tensor:
    """Adversarial images: ``x`` changed by at most ``eps`` per pixel so that the model no longer
    scores it as ``target``.

    ``steps=1`` is the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, *Explaining
    and Harnessing Adversarial Examples*): ``x_adv = clip(x + eps sign(d L / d x))`` with ``L``
    the cross-entropy of the target class; more steps are projected gradient ascent (Madry et al.
    2018, *Towards Deep Learning Models Resistant to Adversarial Attacks*):
    ``x_{t+1} = P(x_t + a sign(d L / d x_t))``, ``P`` the projection on
    ``{|x' - x|_inf <= eps} cap [0, 1]^d``, step ``a = 2.5 eps / steps`` by default. A callable
    target's score is lowered instead, ``L = -score``. Not every image flips at a small
    ``eps``: check ``model(x_adv).argmax(1) != target``.

    Args:
        x: images in [0, 1].
        eps: the L-infinity radius (>= 0), in pixel units: 4/255 is four grey levels.
        steps: ascent steps (>= 1).
        step_size: ``a``; default ``eps`` for one step, ``2.5 eps / steps`` otherwise.

    Returns:
        ``(n, C, H, W)`` in [0, 1], with ``|x_adv - x| <= eps`` everywhere.
    """
    check_call(model, x, target)
    eps = check_nonnegative(eps, "eps")
    check_count(steps, "steps")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(
            f"adversarial images are made in [0, 1]; x ranges over "
            f"[{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    a = (
        check_nonnegative(step_size, "step_size")
        if step_size is not None
        else (eps if steps == 1 else 2.5 * eps / steps)
    )
    x = x.detach()
    adv = x.clone()
    with explaining(model):
        for _ in range(steps):
            adv.requires_grad_(True)
            out = forward(model, model_input(adv, fast=False))
            score = target_scores(out, target)  # checks the target
            if is_score(target):
                loss = -score
            else:
                classes = target_classes(target, len(x), out.shape[1], x.device)
                loss = F.cross_entropy(out, classes, reduction="sum")
            (grad,) = torch.autograd.grad(loss.sum(), adv)
            adv = adv.detach() + a * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()
