"""Gradient methods (chapters 03, 04 and 10): back-propagate the score to the pixels.

* :func:`saliency` - the gradient ``dy/dx`` (Simonyan et al. 2014);
* :func:`deconvnet` - the deconvnet as a ReLU backward rule (Zeiler & Fergus 2014, in the form
  of Springenberg et al. 2015);
* :func:`guided_backprop` - guided backpropagation (Springenberg et al. 2015);
* :func:`gradient_x_input` - the gradient times the input (Shrikumar et al. 2016).

The first three are one computation that differs only in the mask every ReLU applies to the
signal on its way back, the **ReLU rules** (Springenberg et al. 2015, Fig. 1), chapter 04's
subject:

* forward, every rule is the ReLU, ``y = max(x, 0)``;
* backward, the signal ``R`` arriving from above is multiplied by a mask (:data:`RULES`):

  - ``"gradient"`` (backprop): ``R * [y > 0]``, the forward mask;
  - ``"deconvnet"`` (Zeiler-Fergus): ``R * [R > 0]``, the sign of the signal;
  - ``"guided"`` (guided backprop): ``R * [y > 0] * [R > 0]``, both.

:func:`relu_rule` gives every ``nn.ReLU`` of a model one of them (:class:`RuleReLU`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_call
from .._running import explaining, forward, inference_safe, model_input
from .._targets import Target, slice_target, target_scores

__all__ = [
    "OTHER_ACTIVATIONS",
    "RULES",
    "RuleReLU",
    "relu_rule",
    "saliency",
    "deconvnet",
    "guided_backprop",
    "gradient_x_input",
]

#: The ReLU rules: the backward mask ``mask(y, R)`` of each, from the ReLU's output ``y`` and the
#: signal ``R`` arriving from above (Springenberg et al. 2015, Fig. 1).
RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradient": lambda y, r: y > 0,
    "deconvnet": lambda y, r: r > 0,
    "guided": lambda y, r: (y > 0) & (r > 0),
}


# The same products ``R * mask(y, R)``, each in as few passes over memory as stock operations
# allow, keeping the tensors' memory layout (``torch.where(mask, R, 0.0)`` is 5x slower on a
# CPU): ``threshold_backward(R, y, 0)`` is autograd's own ReLU backward, ``R * [y > 0]``, and
# ``relu(R)`` is ``R * [R > 0]`` (for guided, applied in place to the first product).
_MASKED: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradient": lambda y, r: torch.ops.aten.threshold_backward(r, y, 0),
    "deconvnet": lambda y, r: torch.relu(r),
    "guided": lambda y, r: torch.ops.aten.threshold_backward(r, y, 0).relu_(),
}


#: every activation module of torch but ReLU (GELU, Softmax, attention, Tanh, ...): the ReLU
#: rules change a network's ReLUs only, so a network with one of these is not theirs to explain
OTHER_ACTIVATIONS = tuple(
    c
    for c in vars(nn.modules.activation).values()
    if isinstance(c, type)
    and issubclass(c, nn.Module)
    and c.__module__ == nn.modules.activation.__name__
    and c is not nn.ReLU
)


class RuleReLU(torch.autograd.Function):
    """``y = max(x, 0)`` forward; backward ``R * mask(y, R)`` with a mask of :data:`RULES`
    (computed as :data:`_MASKED`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: str) -> torch.Tensor:
        y = torch.relu(x)
        ctx.save_for_backward(y)
        ctx.rule = rule
        return y

    @staticmethod
    def backward(ctx, r: torch.Tensor):
        (y,) = ctx.saved_tensors
        return _MASKED[ctx.rule](y, r), None  # R * mask(y, R)


def relu_rule(model: nn.Module, rule: str, handles: list) -> int:
    """Give every ``nn.ReLU`` of ``model`` the backward rule ``rule`` (hooks in ``handles``).

    A pre-hook takes the ReLU's input and hands the module an empty tensor instead (so the
    module does no work and cannot overwrite the input in place); the forward hook replaces the
    module's (empty) output by the rule's output, computed from the input, so the gradient
    bypasses the module's own backward. Returns the number of ReLU modules found.
    """
    if rule not in RULES:
        raise ValueError(f"unknown ReLU rule {rule!r}; valid rules: {', '.join(RULES)}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(
            f"the {rule!r} rule needs nn.ReLU modules, and this model has none "
            f"(a functional F.relu cannot be hooked); build it with nn.ReLU"
        )
    others = sorted({type(m).__name__ for m in model.modules() if isinstance(m, OTHER_ACTIVATIONS)})
    if others:
        raise ValueError(
            f"the {rule!r} rule replaces the backward pass of nn.ReLU modules, and this model "
            f"also has other non-linearities ({', '.join(others)}) whose backward would stay "
            f"the gradient's, a map of mixed rules; explain it with a gradient method (e.g. "
            f"vm.explain.saliency or gradient_x_input), or give it ReLUs only"
        )
    pending: list = []

    def before(_module, inputs):
        pending.append(inputs[0])
        return (inputs[0].new_empty(0),)  # the module itself runs on nothing

    def after(_module, _inputs, _output):
        return RuleReLU.apply(pending.pop(), rule)

    for m in relus:
        handles.append(m.register_forward_pre_hook(before))
        handles.append(m.register_forward_hook(after))
    return len(relus)


@inference_safe
def backprop_to_input(model: nn.Module, x: torch.Tensor, target: Target, rule: str) -> torch.Tensor:
    """``d score / d x`` with every ``nn.ReLU`` of ``model`` back-propagating by ``rule``."""
    check_call(model, x, target)
    with explaining(model) as handles:
        if rule != "gradient":  # plain backprop is autograd's own ReLU rule: no hooks needed
            relu_rule(model, rule, handles)
        return input_gradient(model, x, target)


def input_gradient(
    model: nn.Module, x: torch.Tensor, target: Target, keep_layout: bool = False
) -> torch.Tensor:
    """``d score / d x`` (run inside :func:`explaining`), computed channels-last on a CPU
    (:func:`vismap._running.fast_layout`), where a forward and backward pass of the course's models
    run 1.3-2x faster than in NCHW; returned in NCHW, or as computed with ``keep_layout``.

    Channels-last sums a convolution's terms in another order. Activations that are equal in
    exact arithmetic (an image's perfectly flat regions) can then come out a few ulps apart, and
    a max-pool window holding such a tie sends its gradient to another of the tied inputs than
    NCHW would: a different, equally valid, subgradient. On the course's anti-aliased Shapes
    scenes (one and two objects) no such ties occur: the maps of all three course models equal
    the NCHW ones to 1e-6 relative (the tests compare with captum, which runs NCHW, to 1e-5). An
    image with exactly flat regions (a constant image, a synthetic pattern) may route its ties
    differently from NCHW.

    The gradient is taken with respect to a leaf ``x.detach()``; the model is fed its
    differentiable copy in the fast layout (:func:`vismap._running.model_input`), so that an
    in-place first module can neither write into the caller's ``x`` nor into the leaf.
    """
    leaf = x.detach().requires_grad_(True)
    score = target_scores(forward(model, model_input(leaf)), target)
    (grad,) = torch.autograd.grad(score.sum(), leaf)  # samples are independent in eval mode
    return grad if keep_layout else grad.contiguous()


def input_gradient_in_batches(
    model: nn.Module, x: torch.Tensor, target: Target, batch_size: int, keep_layout: bool = False
) -> torch.Tensor:
    """:func:`input_gradient` of a stack of images (SmoothGrad's noisy copies), ``batch_size`` of
    them per forward and backward pass (run inside :func:`explaining`)."""
    return torch.cat(
        [
            input_gradient(
                model,
                x[i : i + batch_size],
                slice_target(target, i, i + batch_size, len(x)),
                keep_layout=keep_layout,
            )
            for i in range(0, len(x), batch_size)
        ]
    )


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The gradient of the target score with respect to the input pixels.

    ``M = dy^c / dx``, shape ``(n, C, H, W)``, signed (Simonyan, Vedaldi & Zisserman 2014,
    *Deep Inside Convolutional Networks*; their map is ``max_c |M|``). Every ReLU passes the
    signal back where its *input* was positive: ``R_l = R_{l+1} * [y_l > 0]``.
    """
    return backprop_to_input(model, x, target, "gradient")


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The deconvnet of Zeiler & Fergus 2014 as a backward rule, ``(n, C, H, W)``.

    Back-propagation in which every ReLU rectifies the *signal coming back* instead of masking
    by the forward activation: ``R_l = R_{l+1} * [R_{l+1} > 0]`` (Springenberg et al. 2015,
    Fig. 1). Max-pooling routes the signal through its switches and convolutions apply their
    transposed filters, as autograd does. :func:`zeiler_fergus` builds the same thing by hand.
    """
    return backprop_to_input(model, x, target, "deconvnet")


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015, *Striving for Simplicity*).

    Both masks at every ReLU: ``R_l = R_{l+1} * [y_l > 0] * [R_{l+1} > 0]``: only the positive
    evidence for the score, only through units that were active. ``(n, C, H, W)``.
    """
    return backprop_to_input(model, x, target, "guided")


def gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The gradient times the input (Shrikumar et al. 2016, *Not Just a Black Box: Learning
    Important Features Through Propagating Activation Differences*).

    ``M = x * dy^c/dx``, shape ``(n, C, H, W)``, signed: a pixel counts when the score is
    sensitive to it *and* it is far from zero. For a linear model ``y = w . x`` the map sums to
    the score, ``sum M = y`` (Integrated Gradients from a zero baseline gives the same map).
    """
    return saliency(model, x, target) * x.detach()
