"""Layer-wise relevance propagation (chapter 04): the score handed back layer by layer.

Bach et al. 2015, *On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
Relevance Propagation*; the rules as Montavon, Binder, Lapuschkin, Samek & Müller 2019 give
them, *Layer-Wise Relevance Propagation: An Overview*. The score ``f(x)`` is put on the output
and passed down, layer by layer, to the pixels; at every layer ``z_k = sum_j a_j w_jk + b_k``
(the bias as an input ``a_0 = 1``) a neuron's relevance ``R_k`` is shared among its inputs in
proportion to what they contributed, ``R_j = sum_k (a_j w_jk / z_k) R_k``, so that what a layer
receives it hands on (*conservation*, up to what the biases absorb). The **rules** differ only
in how a contribution is counted (:data:`LRP_RULES`):

* ``"0"`` - LRP-0, ``a_j w_jk`` (on a ReLU network it equals gradient x input);
* ``"epsilon"`` - LRP-epsilon, the same with ``z_k + eps sign(z_k)`` below: weak or
  contradictory contributions absorbed;
* ``"gamma"`` - LRP-gamma, ``a_j (w_jk + gamma w_jk^+)``: positive contributions favoured;
* ``"zplus"`` - LRP-z+, the positive contributions ``(a_j w_jk)^+`` only;
* ``"alphabeta"`` - LRP-alpha-beta, ``alpha (a_j w_jk)^+ / z_k^+ - beta (a_j w_jk)^- / z_k^-``
  with ``alpha - beta = 1``;

and ``first="zbox"`` gives the first layer, whose inputs are pixels in a box ``[low, high]``,
the z^B rule ``x_i w_ij - l_i w_ij^+ - h_i w_ij^-`` (Montavon et al. 2017, *Explaining
nonlinear classification decisions with deep Taylor decomposition*).

Every rule is the **modified gradient**: ``z`` a forward pass of the layer with its weights
modified, ``s = R / (z + eps sign z)``, ``c = (dz/da)^T s`` (one backward pass of ``s``
through the modified layer), ``R_in = a * c`` (:func:`redistribute`).

The model must be a chain of modules relevance can pass through, read by tracing it
(:func:`vismap._chain.layer_chain`): ``Conv2d`` and ``Linear`` get the rule (a ``BatchNorm``
after one folded into copies of its weights); ``ReLU``, ``Dropout`` and ``Identity`` pass
relevance through unchanged (an activation and the next layer's input are the same neuron);
max-pooling hands each output's relevance to the input that won it, flattening reshapes it (as
the gradient does); average pooling, a linear layer with positive weights and no bias, gets
LRP-0. Anything else (a residual addition, a functional ``F.relu``) is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._chain import Affine, Step, layer_chain, negative, positive
from .._checks import baseline_like, check_call, check_nonnegative
from .._running import forward, inference_safe, model_input
from .._targets import Target, target_scores

__all__ = [
    "Affine",
    "LRP_RULES",
    "STABILISER",
    "lrp",
    "lrp_0",
    "lrp_epsilon",
    "lrp_gamma",
    "lrp_zplus",
    "lrp_alphabeta",
    "lrp_zbox",
    "contributions",
    "redistribute",
    "stabilise",
]

#: The rules of :func:`lrp`, by name (Montavon et al. 2019, Sec. 10.2).
LRP_RULES = ("0", "epsilon", "gamma", "zplus", "alphabeta")

#: The stabiliser of every rule but LRP-epsilon: none, ``epsilon = 0`` in :func:`stabilise`,
#: where a ``z`` of exactly 0 (a neuron that received nothing) passes nothing on.
STABILISER = 0.0

Tensor = torch.Tensor


# ------------------------------------------------------------------ the rules, one layer each


def stabilise(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon sign(z)``, with ``sign(0) = +1``: never zero for ``epsilon > 0``. With
    ``epsilon = 0`` a ``z`` of exactly 0 becomes infinite, so that ``R / z = 0`` there: a neuron
    that received nothing passes nothing on (its ``R`` is 0 too, wherever it feeds a ReLU)."""
    if epsilon == 0:
        return torch.where(z == 0, torch.inf, z)
    return torch.where(z >= 0, z + epsilon, z - epsilon)  # in z's dtype: epsilon not rounded


def redistribute(
    z_of: Callable[..., Tensor], parts: tuple[Tensor, ...], relevance: Tensor, epsilon: float
) -> Tensor:
    """The modified gradient: ``R_in = sum_p p * (dz/dp)^T (R / (z + epsilon sign z))`` for
    ``z = z_of(*parts)``, one forward and one backward pass of the layer."""
    leaves = [p.detach().requires_grad_(True) for p in parts]
    z = z_of(*leaves)
    s = relevance / stabilise(z.detach(), epsilon)
    grads = torch.autograd.grad(z, leaves, s)
    r = leaves[0].detach() * grads[0]
    for p, c in zip(leaves[1:], grads[1:], strict=True):
        r = r + p.detach() * c
    return r


def lrp_0(layer: Affine, a: Tensor, relevance: Tensor) -> Tensor:
    """LRP-0: ``R_j = sum_k a_j w_jk / z_k R_k``, ``z_k = sum_{0,j} a_j w_jk``."""
    return redistribute(layer, (a,), relevance, STABILISER)


def lrp_epsilon(layer: Affine, a: Tensor, relevance: Tensor, epsilon: float) -> Tensor:
    """LRP-epsilon: ``R_j = sum_k a_j w_jk / (z_k + epsilon sign z_k) R_k``."""
    return redistribute(layer, (a,), relevance, epsilon)


def lrp_gamma(layer: Affine, a: Tensor, relevance: Tensor, gamma: float) -> Tensor:
    """LRP-gamma: ``R_j = sum_k a_j (w_jk + gamma w_jk^+) / sum_{0,j} a_j (w_jk + gamma w_jk^+)
    R_k`` (the bias too: ``b + gamma b^+``)."""
    return redistribute(
        lambda a: layer(a, lambda w: w + gamma * positive(w)), (a,), relevance, STABILISER
    )


def contributions(layer: Affine, a: Tensor, relevance: Tensor, sign: int) -> Tensor:
    """``R_j = sum_k (a_j w_jk)^+ / sum_{0,j} (a_j w_jk)^+ R_k`` for ``sign = +1`` (the
    positive contributions: ``a^+ w^+ + a^- w^-``, bias ``b^+``), the negative ones
    (``a^+ w^- + a^- w^+``, bias ``b^-``) for ``sign = -1``."""
    same, other = (positive, negative) if sign > 0 else (negative, positive)
    return redistribute(
        lambda up, down: layer(up, same) + layer(down, other, bias=False),
        (positive(a), negative(a)),
        relevance,
        STABILISER,
    )


def lrp_zplus(layer: Affine, a: Tensor, relevance: Tensor) -> Tensor:
    """LRP-z+: ``R_j = sum_k (a_j w_jk)^+ / sum_{0,j} (a_j w_jk)^+ R_k`` (alpha = 1, beta = 0)."""
    return contributions(layer, a, relevance, +1)


def lrp_alphabeta(layer: Affine, a: Tensor, relevance: Tensor, alpha: float, beta: float) -> Tensor:
    """LRP-alpha-beta: ``R_j = sum_k (alpha (a_j w_jk)^+ / z_k^+ - beta (a_j w_jk)^- / z_k^-)
    R_k`` with ``alpha - beta = 1``."""
    kept = alpha * contributions(layer, a, relevance, +1)
    return kept if beta == 0 else kept - beta * contributions(layer, a, relevance, -1)


def lrp_zbox(layer: Affine, x: Tensor, relevance: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The z^B rule for pixels in a box ``l <= x <= h``: ``R_i = sum_j (x_i w_ij - l_i w_ij^+ -
    h_i w_ij^-) / sum_i (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) R_j`` (no bias)."""
    return redistribute(
        lambda x, lo, hi: (
            layer(x, bias=False) - layer(lo, positive, False) - layer(hi, negative, False)
        ),
        (x, low, high),
        relevance,
        STABILISER,
    )


# ------------------------------------------------------------------ the method


@inference_safe
def lrp(
    model: nn.Module,
    x: Tensor,
    target: Target,
    *,
    rule: str = "epsilon",
    epsilon: float = 0.25,
    gamma: float = 0.25,
    alpha: float = 2.0,
    beta: float = 1.0,
    first: str | None = None,
    low: float | Tensor = 0.0,
    high: float | Tensor = 1.0,
) -> Tensor:
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019).

    The relevance put on the output is the score, ``R = f * d score / d f`` (for a class
    target, the class's logit ``f_c`` on its own output neuron); each layer hands it to its
    inputs by the rule, down to the pixels: ``R_i`` per pixel and channel. With a conserving
    rule (``"0"``, ``"gamma"``, ``"zplus"``, and z^B first) on a network without biases,
    ``sum_i R_i = f_c(x)``; biases, and epsilon, absorb the rest. Alpha-beta conserves only
    where a unit has both positive and negative contributions (one without negative ones hands
    down ``alpha R_k``). A ``z`` of exactly 0 passes nothing on (:func:`stabilise`).

    Args:
        model: a chain of supported modules (:func:`layer_chain`): the course's classifiers,
            torchvision's VGG (with or without batch norm). Refused otherwise, by name.
        x: images ``(n, C, H, W)``.
        target: a class (int), one per image, or a callable score.
        rule: ``"0"``, ``"epsilon"``, ``"gamma"``, ``"zplus"`` or ``"alphabeta"``, for every
            convolution and fully connected layer (:data:`LRP_RULES`).
        epsilon: LRP-epsilon's stabiliser, ``> 0`` (in the units of the layers' outputs).
        gamma: LRP-gamma's weight on the positive weights, ``>= 0``.
        alpha, beta: LRP-alpha-beta's weights, ``>= 0`` with ``alpha - beta = 1``
            (``alpha=1, beta=0`` is z+).
        first: ``"zbox"`` gives the first layer the z^B rule for pixels in ``[low, high]``;
            ``None``, the rule of the others.
        low, high: the box of the pixel values (numbers, or tensors broadcastable to ``x``:
            one per channel ``(C, 1, 1)``), ``low < high``; ``[0, 1]`` for the course's images.

    Returns:
        ``(n, C, H, W)`` relevances, signed, in ``x``'s dtype.
    """
    check_call(model, x, target)
    propagate = _rule(rule, epsilon, gamma, alpha, beta)
    box = _box(first, low, high, x)
    steps = layer_chain(model)
    with torch.no_grad():
        activations = forward(model, model_input(x.detach()), run=lambda a: _run(steps, a))
    with torch.enable_grad():
        out = activations[-1].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(target_scores(out, target).sum(), out)
        relevance = out.detach() * grad
        first_layer = next((i for i, s in enumerate(steps) if s.how == "rule"), None)
        for i in reversed(range(len(steps))):
            step, a = steps[i], activations[i]
            if step.how == "rule" and box is not None and i == first_layer:
                low_a, high_a = _box_of(box, a, step.name)
                relevance = lrp_zbox(step.layer, a, relevance, low_a, high_a)  # type: ignore[arg-type]
            elif step.how == "rule":
                relevance = propagate(step.layer, a, relevance)  # type: ignore[arg-type]
            elif step.how == "pool":
                relevance = redistribute(step.run, (a,), relevance, STABILISER)
            elif step.how == "route":
                leaf = a.detach().requires_grad_(True)
                (relevance,) = torch.autograd.grad(step.run(leaf), leaf, relevance)
    return relevance.detach().contiguous()


def _run(steps: list[Step], x: Tensor) -> list[Tensor]:
    """The activations of the chain: ``[x, step_1(x), step_2(step_1(x)), ...]``."""
    activations = [x]
    for step in steps:
        activations.append(step.run(activations[-1]))
    return activations


def _rule(
    rule: object, epsilon: object, gamma: object, alpha: object, beta: object
) -> Callable[[Affine, Tensor, Tensor], Tensor]:
    """The rule named ``rule`` with its parameters checked, as ``(layer, a, R) -> R_in``."""
    if not isinstance(rule, str) or rule not in LRP_RULES:
        raise ValueError(
            f"unknown rule {rule!r}; valid rules: {', '.join(repr(r) for r in LRP_RULES)}"
        )
    eps = check_nonnegative(epsilon, "epsilon")
    if eps == 0:
        raise ValueError(
            "epsilon must be > 0, got 0: it keeps R / (z + epsilon sign z) finite where z = 0; "
            "for the rule without it give rule='0'"
        )
    g = check_nonnegative(gamma, "gamma")
    a, b = check_nonnegative(alpha, "alpha"), check_nonnegative(beta, "beta")
    if abs(a - b - 1) > 1e-9:
        raise ValueError(
            f"alpha - beta must be 1 (only then is relevance conserved), got alpha={alpha!r}, "
            f"beta={beta!r}; e.g. alpha=2, beta=1 or alpha=1, beta=0"
        )
    rules: dict[str, Callable[[Affine, Tensor, Tensor], Tensor]] = {
        "0": lrp_0,
        "epsilon": lambda layer, x, r: lrp_epsilon(layer, x, r, eps),
        "gamma": lambda layer, x, r: lrp_gamma(layer, x, r, g),
        "zplus": lrp_zplus,
        "alphabeta": lambda layer, x, r: lrp_alphabeta(layer, x, r, a, b),
    }
    return rules[rule]


def _box(first: object, low: object, high: object, x: Tensor) -> tuple[Tensor, Tensor] | None:
    """The box ``(low, high)`` of the z^B rule as tensors of ``x``'s shape, checked, or None
    without ``first="zbox"``."""
    if first is not None and first != "zbox":
        raise ValueError(
            f"first must be None (the rule of every layer) or 'zbox' (the z^B rule for the "
            f"first layer), got {first!r}"
        )
    lo = baseline_like(low, x.detach(), what="low")
    hi = baseline_like(high, x.detach(), what="high")
    if not bool((lo < hi).all()):
        raise ValueError(
            f"low must be below high everywhere (the box of the pixel values, e.g. low=0, "
            f"high=1), got low={_value(low)}, high={_value(high)}"
        )
    if first is None:
        return None
    outside = (x.detach() < lo) | (x.detach() > hi)
    if bool(outside.any()):
        raise ValueError(
            f"first='zbox' needs every pixel in the box [low, high]; {int(outside.sum())} "
            f"values of x lie outside (x from {float(x.min()):.3g} to {float(x.max()):.3g}, "
            f"low={_value(low)}, high={_value(high)}): give the box of the data's range"
        )
    return lo, hi


def _box_of(box: tuple[Tensor, Tensor], a: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """The box in the shape of the first layer's input ``a``: the pixels, perhaps flattened."""
    if a.numel() != box[0].numel():
        raise ValueError(
            f"first='zbox' is the rule for a first layer that takes the pixels; the first layer "
            f"of this model, {name!r}, takes a tensor of shape {tuple(a.shape)}"
        )
    return box[0].reshape(a.shape), box[1].reshape(a.shape)


def _value(v: object) -> str:
    return f"{v!r}" if not isinstance(v, Tensor) else f"a tensor of shape {tuple(v.shape)}"
