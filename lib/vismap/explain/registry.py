"""The registry of map methods: name -> :class:`Method` (the function, whether it needs a
layer, fine or coarse, its paper). The widgets, the benchmark, notebook 08's leaderboard and the
tests read it; :func:`get_method` looks a name (or a title) up.

This module sits on top of the method families: it imports them (and
:mod:`vismap.explain.factors`), and none of them imports it at import time (a method that takes
another by name, as ``smoothgrad(method="saliency")``, looks it up here inside the call). Adding a
method is its function in its family module and one entry below; the registry-wide contract
test (``tests/explain/test_contract.py``) then covers it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._chain import layer_chain
from .._layers import Layer
from .._targets import Target
from .attention import attention_modules, chefer, rollout
from .cams import cam, gradcam, gradcam_pp, guided_gradcam, layercam, scorecam
from .factors import factor_cam
from .gradients import OTHER_ACTIVATIONS, deconvnet, gradient_x_input, guided_backprop, saliency
from .occlusion import occlusion
from .paths import integrated_gradients, smoothgrad
from .relevance import lrp

__all__ = ["NEEDS", "Method", "METHODS", "get_method"]

NEEDS = {
    "layer": "a layer: a convolutional module of the model or its dotted name (layer=...)",
    "nn.ReLU": (
        "ReLUs as nn.ReLU modules (their backward rule is replaced) and no other non-linearity"
    ),
    "GAP": "a network that ends in global average pooling and one linear layer",
    "VAE": "a VAE encoder that returns (mu, logvar); the target is latent dimensions",
    "chain": (
        "a chain of supported modules (Conv2d, Linear, BatchNorm after one, ReLU, pooling, "
        "Flatten, Dropout): no residual addition, no functional op"
    ),
    "attention": (
        "attention modules: a transformer whose attention probabilities (n, heads, T, T) are "
        "the output of nn.Softmax(dim=-1) modules, as vismap.vit's blocks.l.attn.probs"
    ),
}


def _meets(need: str, model: nn.Module) -> bool:
    """Whether ``model`` meets one of :data:`NEEDS` that can be read off the model itself (a
    layer is the call's; a GAP head is checked by the method)."""
    if need == "nn.ReLU":  # the ReLU rules explain a network whose only non-linearity is ReLU
        modules = list(model.modules())
        others = [m for m in modules if isinstance(m, OTHER_ACTIVATIONS)]
        return any(isinstance(m, nn.ReLU) for m in modules) and not others
    if need == "VAE":
        return hasattr(model, "latents") and callable(getattr(model, "decode", None))
    if need == "attention":
        return bool(attention_modules(model))
    if need == "chain":
        try:
            layer_chain(model)
        except ValueError:
            return False
    return True


@dataclass(frozen=True)
class Method:
    """One map method of :data:`METHODS`.

    Attributes:
        name: its key in :data:`METHODS`, the function's name.
        function: ``(model, x, target, **options) -> maps``.
        title: the name the course shows (widgets, tables, figures).
        grain: ``"fine"`` (computed in input space, per pixel) or ``"coarse"`` (at a layer's
            resolution, upsampled).
        paper: who introduced it, where.
        needs: what the model or call must provide, words of :data:`NEEDS`.

    A method is called with its function's own defaults (:attr:`defaults`): the registry adds
    none, so that a call through the registry and a direct call agree.
    """

    name: str
    function: Callable[..., torch.Tensor]
    title: str
    grain: str
    paper: str
    needs: tuple[str, ...] = ()

    @property
    def defaults(self) -> dict[str, Any]:
        """The function's own keyword defaults, read from its signature (what a call through
        the registry, the widgets, the benchmark and the leaderboard use unless told)."""
        parameters = inspect.signature(self.function).parameters.values()
        return {
            p.name: p.default
            for p in parameters
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
        }

    def unmet(self, model: nn.Module) -> str | None:
        """Why ``model`` cannot be explained by this method - ``"needs ..."`` with the text of
        its first need the model does not meet (a CNN has no attention modules, a classifier is
        no VAE) - or None. The leaderboard, the widgets and the contract test skip a method by
        it, and say why."""
        for need in self.needs:
            if not _meets(need, model):
                return f"needs {NEEDS[need]}"
        return None

    @property
    def layered(self) -> bool:
        """Whether the method looks at a layer (and takes ``layer=``)."""
        return "layer" in self.needs

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: Target,
        *,
        layer: Layer | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """``function(model, x, target, layer=layer, **options)``; ``layer`` is ignored by
        methods that need none, and required by those that need one (unless the function has
        a default layer, as :func:`factor_cam`)."""
        kwargs = dict(options)
        if self.layered and layer is not None:
            kwargs["layer"] = layer
        elif self.layered and "layer" not in kwargs and "layer" not in self.defaults:
            raise ValueError(
                f"method {self.name!r} needs a layer: pass layer= a convolutional "
                f"module of the model or its dotted name"
            )
        return self.function(model, x, target, **kwargs)


def _entries(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


METHODS: dict[str, Method] = _entries(
    Method(
        name="saliency",
        function=saliency,
        title="gradient",
        grain="fine",
        paper="Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
    ),
    Method(
        name="deconvnet",
        function=deconvnet,
        title="deconvnet",
        grain="fine",
        paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
        needs=("nn.ReLU",),
    ),
    Method(
        name="guided_backprop",
        function=guided_backprop,
        title="guided backprop",
        grain="fine",
        paper="Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net",
        needs=("nn.ReLU",),
    ),
    Method(
        name="gradient_x_input",
        function=gradient_x_input,
        title="gradient x input",
        grain="fine",
        paper="Shrikumar et al. 2016, Not Just a Black Box",
    ),
    Method(
        name="smoothgrad",
        function=smoothgrad,
        title="SmoothGrad",
        grain="fine",
        paper="Smilkov et al. 2017, SmoothGrad: removing noise by adding noise",
    ),
    Method(
        name="integrated_gradients",
        function=integrated_gradients,
        title="Integrated Gradients",
        grain="fine",
        paper="Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
    ),
    Method(
        name="lrp",
        function=lrp,
        title="LRP",
        grain="fine",
        paper=(
            "Bach et al. 2015, On Pixel-Wise Explanations by Layer-Wise Relevance Propagation; "
            "Montavon et al. 2019, Layer-Wise Relevance Propagation: An Overview"
        ),
        needs=("chain",),
    ),
    Method(
        name="occlusion",
        function=occlusion,
        title="occlusion",
        grain="fine",
        paper=(
            "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks, Sec. 4.2"
        ),
    ),
    Method(
        name="cam",
        function=cam,
        title="CAM",
        grain="coarse",
        paper="Zhou et al. 2016, Learning Deep Features for Discriminative Localization",
        needs=("layer", "GAP"),
    ),
    Method(
        name="gradcam",
        function=gradcam,
        title="Grad-CAM",
        grain="coarse",
        paper="Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks",
        needs=("layer",),
    ),
    Method(
        name="gradcam_pp",
        function=gradcam_pp,
        title="Grad-CAM++",
        grain="coarse",
        paper="Chattopadhay et al. 2018, Grad-CAM++",
        needs=("layer",),
    ),
    Method(
        name="scorecam",
        function=scorecam,
        title="Score-CAM",
        grain="coarse",
        paper="Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations for CNNs",
        needs=("layer",),
    ),
    Method(
        name="layercam",
        function=layercam,
        title="LayerCAM",
        grain="coarse",
        paper="the source document; Jiang et al. 2021, LayerCAM",
        needs=("layer",),
    ),
    Method(
        name="guided_gradcam",
        function=guided_gradcam,
        title="guided Grad-CAM",
        grain="fine",
        paper="Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks",
        needs=("layer", "nn.ReLU"),
    ),
    Method(
        name="factor_cam",
        function=factor_cam,
        title="factor activation map",
        grain="coarse",
        paper="the source document; cf. Liu et al. 2020, Towards Visually Explaining VAEs",
        needs=("layer", "VAE"),
    ),
    Method(
        name="rollout",
        function=rollout,
        title="attention rollout",
        grain="coarse",
        paper="Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers",
        needs=("attention",),
    ),
    Method(
        name="chefer",
        function=chefer,
        title="gradient-weighted attention",
        grain="coarse",
        paper="Chefer, Gur & Wolf 2021, Generic Attention-model Explainability",
        needs=("attention",),
    ),
)


def get_method(name: str) -> Method:
    """The :class:`Method` of ``name``: a key of :data:`METHODS` (``"gradcam"``) or a title
    (``"Grad-CAM"``)."""
    if isinstance(name, str):
        if name in METHODS:
            return METHODS[name]
        for method in METHODS.values():
            if method.title == name:
                return method
    raise ValueError(
        f"unknown method {name!r}; valid names: {', '.join(METHODS)} (or their "
        f"titles: {', '.join(m.title for m in METHODS.values())})"
    )
