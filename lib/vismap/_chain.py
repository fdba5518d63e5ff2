"""A model as a chain of layers, read by tracing it (for :func:`vismap.explain.lrp`).

Layer-wise relevance propagation runs a model's layers itself, one at a time, and needs to
know each of them: :func:`layer_chain` traces the model with ``torch.fx`` (a symbolic forward
that records every module call and every functional operation) and returns it as a list of
:class:`Step`, each with its forward and how relevance passes back through it. A convolution or
a fully connected layer is an :class:`Affine` (a batch norm after it folded into copies of its
weights, as zennit's canonizer does: the caller's model is never changed); ``ReLU``,
``Dropout`` and ``Identity`` pass relevance through unchanged; max-pooling and flattening route
it as the gradient does; average pooling is a linear map without parameters. Anything else (a
residual addition, a functional ``F.relu``, another activation, attention) is refused with a
ValueError that names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Affine", "Step", "SUPPORTED", "layer_chain", "positive", "negative"]

Tensor = torch.Tensor
Modifier = Callable[[Tensor], Tensor]


def _same(p: Tensor) -> Tensor:
    return p


def positive(p: Tensor) -> Tensor:
    """``p^+ = max(p, 0)``."""
    return p.clamp(min=0)


def negative(p: Tensor) -> Tensor:
    """``p^- = min(p, 0)``."""
    return p.clamp(max=0)


@dataclass(frozen=True)
class Affine:
    """A layer ``z = a w + b``: a convolution or a fully connected layer (a batch norm after it
    folded in). ``layer(a, modify, bias)`` runs it with ``modify(w)`` and ``modify(b)`` (no
    bias with ``bias=False``)."""

    name: str
    weight: Tensor
    bias: Tensor | None
    apply: Callable[[Tensor, Tensor, Tensor | None], Tensor]

    def __call__(self, a: Tensor, modify: Modifier = _same, bias: bool = True) -> Tensor:
        b = modify(self.bias) if bias and self.bias is not None else None
        return self.apply(a, modify(self.weight), b)


@dataclass(frozen=True)
class Step:
    """One link of the chain: its name, its forward ``run(a)`` and how relevance passes back
    through it: ``"rule"`` (an :class:`Affine`, in ``layer``), ``"pass"`` (unchanged: ReLU,
    Dropout, Identity), ``"route"`` (as the gradient: max-pooling, flattening) or ``"pool"``
    (LRP-0 of a linear map without parameters: average pooling)."""

    name: str
    how: str
    run: Callable[[Tensor], Tensor]
    layer: Affine | None = None


SUPPORTED = (
    "Conv2d, Linear, BatchNorm1d/2d after one of them, ReLU, Dropout, Identity, MaxPool2d, "
    "AvgPool2d, AdaptiveAvgPool2d, Flatten (or torch.flatten)"
)


def _affine(name: str, m: nn.Conv2d | nn.Linear) -> Affine:
    w, b = m.weight.detach(), None if m.bias is None else m.bias.detach()
    if isinstance(m, nn.Conv2d):
        return Affine(name, w, b, m._conv_forward)
    return Affine(name, w, b, F.linear)


def _fold(layer: Affine, name: str, bn: nn.modules.batchnorm._BatchNorm) -> Affine:
    """``layer`` followed by the batch norm ``bn`` (eval mode) as one layer: ``w s`` and
    ``(b - mean) s + beta`` with ``s = gamma / sqrt(var + eps)`` per output channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"lrp folds a batch norm into the layer before it, and {name!r} ({bn}) keeps no "
            f"running statistics (track_running_stats=False)"
        )
    scale = (bn.running_var.detach() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    shift = -bn.running_mean.detach() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach()
    if layer.weight.shape[0] != scale.shape[0]:
        raise ValueError(
            f"batch norm {name!r} ({bn}) does not fit the layer before it, {layer.name!r}"
        )
    weight = layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1))
    bias = shift if layer.bias is None else layer.bias * scale + shift
    return Affine(f"{layer.name}+{name}", weight, bias, layer.apply)


def _step(node: fx.Node, model: nn.Module) -> Step | nn.modules.batchnorm._BatchNorm:
    """The :class:`Step` of one traced operation (a batch norm is returned as its module, to be
    folded); a ValueError for anything relevance cannot pass through."""
    if node.op == "call_module":
        name = str(node.target)
        m = model.get_submodule(name)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            layer = _affine(name, m)
            return Step(name, "rule", layer, layer)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return m
        if isinstance(m, nn.ReLU):
            return Step(name, "pass", torch.relu)
        if isinstance(m, (nn.modules.dropout._DropoutNd, nn.Identity)):
            return Step(name, "pass", _same)
        if isinstance(m, (nn.MaxPool2d, nn.Flatten)):
            return Step(name, "route", m.forward)
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return Step(name, "pool", m.forward)
        what = f"module {name!r} ({m})"
    elif node.op in ("call_function", "call_method") and _is_flatten(node):
        args, kwargs = node.args[1:], node.kwargs
        return Step(node.name, "route", lambda a: torch.flatten(a, *args, **kwargs))  # type: ignore[arg-type]
    else:
        target = node.target
        function = getattr(target, "__name__", str(target))
        functional = "functional" in str(getattr(target, "__module__", ""))
        what = f"operation {node.name!r} ({node.op} {'F.' if functional else ''}{function})"
    raise ValueError(
        f"lrp cannot pass relevance through {what}: it needs a chain of supported modules, "
        f"{SUPPORTED}; a residual addition, a functional op such as F.relu, another "
        f"activation or attention needs a rule of its own (explain such a model with a "
        f"gradient method, e.g. vm.explain.gradient_x_input)"
    )


def _is_flatten(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )


def layer_chain(model: nn.Module) -> list[Step]:
    """``model`` as a chain of :class:`Step`, found by tracing it with ``torch.fx`` (a symbolic
    forward that records every module call and every functional operation). Each operation must
    take the output of the one before and nothing else; batch norms are folded into the layer
    before them. A ValueError names the first operation that is not a supported module (a
    residual ``add``, a functional ``relu``, an unknown activation) or breaks the chain."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # data-dependent control flow, an untraceable call, ...
        raise ValueError(
            f"lrp reads the model's layers by tracing it with torch.fx, which failed: {err}; "
            f"it needs a chain of supported modules, {SUPPORTED}"
        ) from err
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    found = [_step(n, model) for n in nodes]  # refuses any unsupported operation first
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    (output,) = [n for n in graph.nodes if n.op == "output"]
    previous = inputs[0] if len(inputs) == 1 else None
    steps: list[Step] = []
    for node, step in zip(nodes, found, strict=True):
        if previous is None or node.all_input_nodes != [previous] or len(previous.users) != 1:
            raise ValueError(
                f"lrp needs a chain of layers, each taking the output of the one before and "
                f"nothing else; operation {node.name!r} ({node.op} {node.target}) takes "
                f"{[n.name for n in node.all_input_nodes]} (no branches, no skip connections)"
            )
        if not isinstance(step, Step):  # a batch norm: folded into the layer before it
            if not steps or steps[-1].how != "rule" or steps[-1].layer is None:
                raise ValueError(
                    f"lrp folds a batch norm into the convolution or linear layer right "
                    f"before it; {node.target!r} follows "
                    f"{steps[-1].name if steps else 'the input'!r}"
                )
            folded = _fold(steps[-1].layer, str(node.target), step)
            steps[-1] = Step(folded.name, "rule", folded, folded)
        else:
            steps.append(step)
        previous = node
    if output.args[0] is not previous:
        raise ValueError(
            "lrp needs a model that returns the output of its last layer (one tensor); this "
            "one returns something else"
        )
    return steps
