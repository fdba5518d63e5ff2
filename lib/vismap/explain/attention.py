"""Maps from a transformer's attention (chapter 11): attention rollout and Chefer et al.'s
gradient-weighted attention.

A vision transformer mixes its tokens only through attention: block ``l`` computes, for every
head, ``A_l = softmax(Q K^T / sqrt(d))`` ``(n, heads, T, T)``, row ``i`` saying how much token
``i`` reads from each token. Both maps chain these matrices from the first block to the last and
read the class token's row over the patch tokens, laid on the patch grid and upsampled:

* :func:`rollout` (Abnar & Zuidema 2020) - the attention alone; the same map for every class;
* :func:`chefer` (Chefer, Gur & Wolf 2021) - each head's attention weighted by the gradient of
  the target score, so the map depends on the class.

They need the attention probabilities computed in modules: every ``nn.Softmax(dim=-1)`` of the
model whose output is ``(n, heads, T, T)`` (``blocks.l.attn.probs`` in :mod:`vismap.vit`), found
by :func:`attention_modules` and recorded with forward hooks; the model is not changed.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_call, check_flag
from .._layers import Tokens, token_layout
from .._running import explaining, forward, inference_safe, model_input
from .._targets import Target, target_scores
from .maps import at_input

__all__ = ["attention_modules", "attention_maps", "rollout", "chefer", "HEAD_FUSIONS"]

#: How :func:`rollout` fuses the heads of a block: their mean (Abnar & Zuidema), max or min (the
#: variants of Gildenblat's vit-explain).
HEAD_FUSIONS = ("mean", "max", "min")


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``nn.Softmax`` over the last dimension of ``model``, in the
    order they were defined (block by block): the modules whose output is the attention
    ``(n, heads, T, T)``. Empty for a model without attention (a CNN)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Softmax) and m.dim in (-1, 3)
    ]


def _attention_needed(model: nn.Module, method: str) -> list[tuple[str, nn.Module]]:
    modules = attention_modules(model)
    if not modules:
        raise ValueError(
            f"{method} needs attention modules: the attention probabilities of each block computed "
            f"by an nn.Softmax(dim=-1) module whose output is (n, heads, T, T), as "
            f"vismap.vit.ShapesViT's blocks.l.attn.probs; {type(model).__name__} has none (a "
            f"CNN has no attention: use gradcam or saliency)"
        )
    return modules


@inference_safe
def attention_maps(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    gradients: bool = True,
    method: str = "attention_maps",
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The attention of every block, ``A_l (n, heads, T, T)`` (first block first), and with
    ``gradients`` the gradient of the target score with respect to each, ``dy/dA_l`` - the total
    derivative, through every later block. The target is checked against the model's output
    also without ``gradients`` (it is then not differentiated). ``method`` names the caller in
    the error for a model without attention modules."""
    check_call(model, x, target)
    modules = _attention_needed(model, method)
    recorded: list[torch.Tensor] = []

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        square = isinstance(output, torch.Tensor) and output.dim() == 4
        if not square or output.shape[-1] != output.shape[-2]:
            name = next(n for n, m in modules if m is module)
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ValueError(
                f"module {name!r} (an nn.Softmax over the last dimension) must output "
                f"attention probabilities (n, heads, T, T); its output is {shape}"
            )
        recorded.append(output)

    with explaining(model) as handles:
        handles += [m.register_forward_hook(record) for _, m in modules]
        if not gradients:
            with torch.no_grad():
                target_scores(forward(model, model_input(x.detach())), target)
            _check_used(recorded, modules)
            return [a.detach() for a in recorded], None
        # the input requires grad, so that every A_l is on one graph to the score: dy/dA_l then
        # includes the paths through the attention of the later blocks
        start = x.detach().requires_grad_(True)
        score = target_scores(forward(model, model_input(start)), target)
        _check_used(recorded, modules)
        grads = torch.autograd.grad(score.sum(), recorded)
    return [a.detach() for a in recorded], [g.detach() for g in grads]


def _check_used(recorded: list, modules: list[tuple[str, nn.Module]]) -> None:
    if not recorded:
        names = ", ".join(repr(n) for n, _ in modules[:8])
        raise ValueError(
            f"the model's attention modules ({names}) were not used by its forward pass: no "
            f"attention to explain"
        )


def _class_row(
    model: nn.Module, r: torch.Tensor, x: torch.Tensor, tokens: Tokens, upsampled: bool
) -> torch.Tensor:
    """The class token's row of ``r (n, T, T)`` over the patch tokens, ``(n, 1, h, w)`` on the
    patch grid (:func:`vismap._layers.token_layout`), upsampled to ``x`` or not."""
    prefix, h, w = token_layout(model, "the attention", r.shape[-1], tokens)
    if prefix < 1:
        raise ValueError(
            f"the attention maps read the class token's row, and tokens={tokens} leaves no "
            f"class token before the {h} x {w} patch tokens; the first token must be the class "
            f"token"
        )
    maps = r[:, 0, prefix:].reshape(len(r), 1, h, w)
    return at_input(maps, x, upsampled)


def rollout(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    head_fusion: str = "mean",
    tokens: Tokens = None,
    upsampled: bool = True,
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020, *Quantifying Attention Flow in Transformers*).

    A block adds its attention to the residual stream, ``z + MSA(z)``: half of what a token
    carries on is itself. So each block's attention, fused over the heads, is mixed with the
    identity and its rows re-normalised to sum to 1, and the blocks are chained from the first
    to the last:

        ``Â_l = norm(1/2 fuse_h(A_l) + 1/2 I)``,   ``R = Â_L ... Â_2 Â_1``

    (``fuse_h``: the mean over the heads, the paper's; ``head_fusion="max"`` or ``"min"``). The
    map is the class token's row of ``R`` over the patch tokens, on the patch grid. It uses no
    gradient and no target: **the same map for every class** (the target is only checked).

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` on the patch grid with ``upsampled=False``.
    """
    check_flag(upsampled, "upsampled")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(
            f"unknown head_fusion {head_fusion!r}; valid ones: {', '.join(HEAD_FUSIONS)}"
        )
    attentions, _ = attention_maps(model, x, target, gradients=False, method="rollout")
    eye = torch.eye(attentions[0].shape[-1], dtype=x.dtype, device=x.device)
    r = eye.expand_as(attentions[0][:, 0])
    for a in attentions:
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[head_fusion]
        a_hat = 0.5 * fused + 0.5 * eye
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)
        r = a_hat @ r
    return _class_row(model, r, x, tokens, upsampled)


def chefer(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    tokens: Tokens = None,
    upsampled: bool = True,
) -> torch.Tensor:
    """Gradient-weighted attention (Chefer, Gur & Wolf 2021, *Generic Attention-model
    Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers*, Eq. 5-6).

    Each head's attention is weighted by the gradient of the target score ``y`` with respect to
    it, and only what raises the score is kept; the relevance of token to token starts as the
    identity (every token is its own) and each block adds what it mixes in:

        ``Ā_l = E_h[(dy/dA_l ⊙ A_l)^+]``,   ``R_0 = I``,   ``R_l = R_{l-1} + Ā_l R_{l-1}``

    The map is the class token's row of ``R_L`` over the patch tokens, on the patch grid: unlike
    :func:`rollout`, it depends on the class through the gradient.

    Returns:
        ``(n, 1, H, W)``, or ``(n, 1, h, w)`` on the patch grid with ``upsampled=False``.
    """
    check_flag(upsampled, "upsampled")
    attentions, grads = attention_maps(model, x, target, method="chefer")
    assert grads is not None
    eye = torch.eye(attentions[0].shape[-1], dtype=x.dtype, device=x.device)
    r = eye.expand_as(attentions[0][:, 0])
    for a, g in zip(attentions, grads, strict=True):
        a_bar = (g * a).clamp(min=0).mean(1)
        r = r + a_bar @ r
    return _class_row(model, r, x, tokens, upsampled)
