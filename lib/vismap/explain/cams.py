"""The CAM family (chapters 05, 06 and 10): maps at a layer's resolution, laid back over the
image. Each weighs the layer's feature maps ``A^k`` and sums them; they differ in the weights.

* :func:`cam` - the model's own last linear weights ``w^c_k``, for a GAP network (Zhou et al.
  2016);
* :func:`gradcam` - the mean gradient of each feature map (Selvaraju et al. 2017), with
  counterfactual maps; :func:`guided_gradcam`, guided backprop times Grad-CAM;
* :func:`layercam` - each position's own positive gradient, ``ReLU(dy/dA) * A`` (the source
  document's element-wise form; LayerCAM, Jiang et al. 2021);
* :func:`gradcam_pp` - a weighted sum of the positive gradients (Chattopadhay et al. 2018);
* :func:`scorecam` - the score of the input masked by each feature map, no gradient (Wang et
  al. 2020).

The gradient methods read ``A`` and ``dy/dA`` from :func:`layer_gradient`, which
back-propagates only as far as the layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_call, check_count, check_flag, check_nonnegative
from .._layers import Layer, Tokens, capture
from .._running import explaining, fast_empty, fast_layout, forward, inference_safe, model_input
from .._targets import Target, is_score, sample_target, target_classes, target_scores
from .gradients import guided_backprop
from .maps import at_input, upsample

__all__ = [
    "layer_gradient",
    "cam",
    "gradcam",
    "layercam",
    "guided_gradcam",
    "gradcam_pp",
    "scorecam",
]


@inference_safe
def layer_gradient(
    model: nn.Module, x: torch.Tensor, target: Target, layer: Layer, tokens: Tokens = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation ``A (n, K, h, w)`` of ``layer`` and the gradient of the target score with
    respect to it, ``dy/dA`` - back-propagated only as far as the layer, with no parameter
    gradients. On a CPU the forward pass runs channels-last (:func:`vismap._running.fast_layout`):
    both tensors then agree with the NCHW ones to float rounding (a layer's maps need no
    max-pool routing below the layer to be the same). A layer that outputs tokens ``(n, T, D)``
    (a transformer block) gives its patch tokens laid on their grid, ``(n, D, h, w)``, the class
    token dropped (:func:`vismap._layers.capture`; ``tokens=(h, w)`` declares the grid)."""
    check_call(model, x, target)
    with explaining(model) as handles:
        record = capture(model, layer, handles, tokens)
        score = target_scores(forward(model, model_input(x.detach())), target)
        if "activation" not in record:
            raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
        (grad,) = torch.autograd.grad(score.sum(), record["activation"])
    return record["activation"].detach(), grad


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    tokens: Tokens = None,
    counterfactual: bool = False,
    upsampled: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, *Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization*).

    ``alpha_k = 1/Z sum_ij dy/dA^k_ij`` (the mean gradient of each feature map), then
    ``M = ReLU(sum_k alpha_k A^k)``: the feature maps weighted by how much the score wants each,
    keeping what speaks *for* the target. With ``counterfactual=True`` the gradient is negated
    (the paper's counterfactual explanations): the map shows the regions whose features argue
    *against* the target.

    At a transformer block (output ``(n, T, D)``) ``A`` is its patch tokens on their grid: the
    class token dropped, channel ``k`` the embedding dimension ``k``, ``A^k_ij = z[1 + i w + j,
    k]`` (the grid from the model's ``token_grid``, a square after one class token, or
    ``tokens=(h, w)``). A class-token head reads only the class token after the last block, so
    Grad-CAM there is zero: take a block below it (chapter 11).

    Returns:
        ``(n, 1, H, W)`` upsampled bilinearly to the input, or ``(n, 1, h, w)`` at the layer's
        resolution with ``upsampled=False``. Unnormalised (see :func:`normalize`).
    """
    check_flag(counterfactual, "counterfactual")
    check_flag(upsampled, "upsampled")
    a, grad = layer_gradient(model, x, target, layer, tokens)
    if counterfactual:
        grad = -grad
    alpha = grad.mean((2, 3), keepdim=True)  # (n, K, 1, 1)
    maps = F.relu((alpha * a).sum(1, keepdim=True))
    return at_input(maps, x, upsampled)


def layercam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    tokens: Tokens = None,
    upsampled: bool = True,
) -> torch.Tensor:
    """The source document's element-wise form: ``M = ReLU(sum_k ReLU(dy/dA^k) * A^k)``.

    Each position keeps its own gradient instead of the feature map's mean, so the map keeps
    finer detail at early layers. This is LayerCAM (Jiang et al. 2021, *LayerCAM: Exploring
    Hierarchical Class Activation Maps for Localization*). ``(n, 1, H, W)``, or ``(n, 1, h, w)``
    with ``upsampled=False``.
    """
    check_flag(upsampled, "upsampled")
    a, grad = layer_gradient(model, x, target, layer, tokens)
    maps = F.relu((F.relu(grad) * a).sum(1, keepdim=True))
    return at_input(maps, x, upsampled)


def guided_gradcam(
    model: nn.Module, x: torch.Tensor, target: Target, *, layer: Layer, tokens: Tokens = None
) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop's fine detail masked
    by Grad-CAM's class-discriminative map, ``G * upsample(M)``, shape ``(n, C, H, W)``."""
    return guided_backprop(model, x, target) * gradcam(model, x, target, layer=layer, tokens=tokens)


def _gap_linear_weights(model: nn.Module, a: torch.Tensor, out: torch.Tensor) -> tuple:
    """The weights ``(classes, K)`` and bias of the last ``nn.Linear`` of ``model``, checked to
    reproduce ``out`` as ``W mean_ij(A) + b``: the network really ends in GAP + one linear."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hint = (
        "CAM needs a network that ends in global average pooling and one linear layer "
        "(like shapes-gap or ResNet); use gradcam for any other network"
    )
    if not linears or linears[-1].in_features != a.shape[1]:
        raise ValueError(f"{hint}; no final nn.Linear takes the layer's {a.shape[1]} channels")
    weight, bias = linears[-1].weight, linears[-1].bias
    predicted = a.mean((2, 3)) @ weight.T + (0 if bias is None else bias)
    if predicted.shape != out.shape or not torch.allclose(predicted, out, rtol=1e-3, atol=1e-4):
        raise ValueError(f"{hint}; the model's output is not W mean(A) + b of this layer")
    return weight, bias


def cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    tokens: Tokens = None,
    weights: torch.Tensor | None = None,
    upsampled: bool = True,
) -> torch.Tensor:
    """Class activation map (Zhou et al. 2016, *Learning Deep Features for Discriminative
    Localization*).

    For a network whose class scores are ``y^c = sum_k w^c_k mean_ij A^k_ij + b^c`` (global
    average pooling of the last feature maps ``A``, then one linear layer), the map of class
    ``c`` is ``M_c = sum_k w^c_k A^k``: the score before it was averaged over positions. The
    weights are the model's last linear layer (checked to reproduce the output), or ``weights
    (classes, K)`` if given. No ReLU: the map is signed, as in the paper.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` with ``upsampled=False``.
    """
    if is_score(target):
        raise ValueError(
            "cam explains a class (an int or one per image); for any other "
            "score use gradcam with a callable target"
        )
    check_call(model, x, target)
    check_flag(upsampled, "upsampled")
    if weights is not None and not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a tensor (classes, K), got {type(weights).__name__}")
    with explaining(model) as handles:
        record = capture(model, layer, handles, tokens)
        with torch.no_grad():
            out = forward(model, model_input(x))
    if "activation" not in record:
        raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
    a = record["activation"].detach()
    if weights is None:
        weights, _ = _gap_linear_weights(model, a, out)
    if weights.dim() != 2 or weights.shape[1] != a.shape[1]:
        raise ValueError(
            f"weights must have shape (classes, {a.shape[1]}), got {tuple(weights.shape)}"
        )
    classes = target_classes(target, len(x), weights.shape[0], x.device)
    w = weights.detach().to(a)[classes]  # w^c, in the dtype and on the device of A
    maps = torch.einsum("nk,nkhw->nhw", w, a)[:, None]
    return at_input(maps, x, upsampled)


def gradcam_pp(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    tokens: Tokens = None,
    upsampled: bool = True,
    eps: float = 0.0,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay, Sarkar, Howlader & Balasubramanian 2018, *Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional Networks*).

    Grad-CAM weighs each feature map by its mean gradient; Grad-CAM++ by a weighted sum of its
    positive gradients, so that several instances of a class each count in full (their Eq. 19,
    for an exponential of the score and first-order terms, with ``g = dy^c/dA``):

        ``a^k_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)``   (0 where the denominator is 0)
        ``w_k = sum_ij a^k_ij ReLU(g_ij)``,   ``M = ReLU(sum_k w_k A^k)``

    (the weights of ``exp(y^c)`` are ``exp(y^c) w_k``: a positive factor per image, left out,
    as pytorch-grad-cam does). ``eps`` is added to the denominator: 0 is the paper's formula;
    pytorch-grad-cam adds 1e-6, which shrinks the weights of feature maps with small gradients.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` with ``upsampled=False``.
    """
    check_flag(upsampled, "upsampled")
    eps = check_nonnegative(eps, "eps")
    a, g = layer_gradient(model, x, target, layer, tokens)
    denominator = 2 * g.pow(2) + a.sum((2, 3), keepdim=True) * g.pow(3) + eps
    alpha = torch.where(denominator != 0, g.pow(2) / denominator, 0.0)
    w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    maps = F.relu((w * a).sum(1, keepdim=True))
    return at_input(maps, x, upsampled)


def scorecam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: Layer,
    tokens: Tokens = None,
    batch_size: int = 64,
    upsampled: bool = True,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, *Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks*): feature maps weighted by what they show, not by gradients.

    Each feature map ``A^k`` of the layer, upsampled and scaled to [0, 1], masks the input,
    ``H_k = s(Up(A^k))``; the model scores the masked image, ``S_k = y^c(x * H_k)``; the scores
    become weights by a softmax over the maps, and

        ``alpha_k = exp(S_k) / sum_l exp(S_l)``,   ``M = ReLU(sum_k alpha_k A^k)``

    (Algorithm 1 of the paper; its increase of confidence ``S_k - y^c(x_b)`` subtracts the same
    baseline score from every ``S_k``, which the softmax cancels). Costs one forward pass per
    feature map and image (``batch_size`` masked images per pass); feature maps that are constant
    give the all-zero mask, scored once per image.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` with ``upsampled=False``.
    """
    check_call(model, x, target)
    check_count(batch_size, "batch_size")
    check_flag(upsampled, "upsampled")
    with explaining(model) as handles:
        record = capture(model, layer, handles, tokens)
        with torch.no_grad():
            target_scores(forward(model, model_input(x)), target)  # checks the target once
        handles.pop().remove()  # the masked images need no capture
        if "activation" not in record:
            raise ValueError(f"layer {layer!r} was not used by the model's forward pass")
        a = record["activation"].detach()
        scores = torch.empty(a.shape[:2], dtype=x.dtype, device=x.device)  # S_k, (n, K)
        with torch.no_grad():
            for i in range(len(x)):
                target_i = sample_target(target, i, len(x))
                _score_masks(model, x[i : i + 1], a[i], target_i, batch_size, out=scores[i])
    alpha = scores.softmax(1)
    maps = F.relu(torch.einsum("nk,nkhw->nhw", alpha, a))[:, None]
    return at_input(maps, x, upsampled)


def _score_masks(
    model: nn.Module,
    image: torch.Tensor,
    a: torch.Tensor,
    target: Target,
    batch_size: int,
    out: torch.Tensor,
) -> None:
    """Score-CAM's scores of one image ``(1, C, H, W)``, ``out[k] = S_k = y^c(x * H_k)`` for its
    feature maps ``a (K, h, w)``, with ``H_k = (Up(A^k) - min) / (max - min)`` (run in
    ``torch.no_grad()``).

    The masks are scaled in place; each batch of ``batch_size`` masked images is written
    straight into the faster memory layout (once, not converted). A constant map's mask is all
    zeros, the same for every such map: it is scored once."""
    up = upsample(a[None], image.shape[-2:])[0]  # Up(A^k), (K, H, W)
    low, high = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    varies = (high > low).flatten()
    masks = up.sub_(low).div_(torch.where(varies[:, None, None], high - low, 1.0))  # H_k
    live = varies.nonzero()[:, 0]
    dead = (~varies).nonzero()[:, 0]  # a constant map's mask: 0 / 1 = 0 everywhere
    if len(dead):  # every distinct mask once: the live ones, then the all-zero one
        masks = masks[torch.cat([live, dead[:1]])]
    image = fast_layout(image)
    batch = fast_empty((min(batch_size, len(masks)), *image.shape[1:]), image)
    scores = []
    for j in range(0, len(masks), batch_size):
        h = masks[j : j + batch_size]
        masked = torch.mul(image, h[:, None], out=batch[: len(h)])  # x * H_k
        scores.append(target_scores(forward(model, masked), target))  # ours: may be written
    s = torch.cat(scores)
    out[live] = s[: len(live)]
    if len(dead):
        out[dead] = s[-1]
