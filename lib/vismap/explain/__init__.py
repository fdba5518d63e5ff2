"""Explanation methods: maps of what a CNN's decision rests on.

Fine-grained methods, at input resolution (chapters 03 and 04):

* :func:`saliency` - the gradient ``dy/dx`` (Simonyan et al. 2014);
* :func:`deconvnet` - the deconvnet as a ReLU backward rule (Zeiler & Fergus 2014, in the form
  of Springenberg et al. 2015);
* :func:`guided_backprop` - guided backpropagation (Springenberg et al. 2015);
* :func:`lrp` - layer-wise relevance propagation, the rules of Montavon et al. 2019 (Bach et
  al. 2015; chapter 04), and :data:`LRP_RULES`;
* :func:`zeiler_fergus` - the deconvnet built explicitly: switches, rectification, transposed
  filters (Zeiler & Fergus 2014, Sec. 2.1);
* :func:`occlusion` - the drop of the score when a window of the image is hidden (Zeiler &
  Fergus 2014, Sec. 4.2).

The three gradient methods are one computation - back-propagate the score to the pixels - that
differ only in the mask every ReLU applies to the signal on its way back (:data:`RULES`, of
:mod:`vismap.explain.gradients`). Coarse-grained methods, at a layer's resolution and
upsampled (chapters 05 and 06):

* :func:`cam` - class activation maps from a GAP network's own weights (Zhou et al. 2016);
* :func:`gradcam` - Grad-CAM (Selvaraju et al. 2017), with counterfactual maps;
* :func:`layercam` - the source document's element-wise form ``ReLU(dy/dA) * A`` (LayerCAM,
  Jiang et al. 2021);
* :func:`guided_gradcam` - guided backprop times Grad-CAM (Selvaraju et al. 2017).

Factor activation maps (chapter 07), for models with no classes at all:

* :func:`factor_cam` - Grad-CAM (or the element-wise form) of a score read from a VAE
  encoder's posterior: one latent factor, or several jointly, with no label
  (:func:`factor_score`; Liu et al. 2020 differentiate ``mu``, the source document the factor's
  own KL loss).

Beyond the four papers (chapter 10):

* :func:`gradient_x_input` - the gradient times the input (Shrikumar et al. 2016);
* :func:`smoothgrad` - any method averaged over noisy copies of the input (Smilkov et al. 2017);
* :func:`integrated_gradients` - the gradient integrated along a path from a baseline
  (Sundararajan et al. 2017);
* :func:`gradcam_pp` - Grad-CAM++ (Chattopadhay et al. 2018);
* :func:`scorecam` - Score-CAM, feature maps weighted by the score of the masked input (Wang et
  al. 2020);
* :func:`class_model` - an image the model scores as a class (activation maximisation,
  Simonyan et al. 2014, Sec. 2), and :func:`adversarial` - images within ``eps`` of ``x`` that
  the model no longer scores as the target (Goodfellow et al. 2015; Madry et al. 2018).

On a vision transformer (chapter 11, :mod:`vismap.vit`) the layer methods take a block's
tokens ``(n, T, D)`` as feature maps (the class token dropped, the patch tokens on their grid,
``tokens=(h, w)``), and two methods read the attention itself:

* :func:`rollout` - attention rollout, the blocks' attention mixed with the identity and
  chained (Abnar & Zuidema 2020), the same for every class;
* :func:`chefer` - gradient-weighted attention (Chefer, Gur & Wolf 2021).

Every method takes ``(model, x, target)`` with ``x (n, C, H, W)``
and returns unnormalised maps at input resolution; :func:`normalize` is a separate step. The
caller's model is left as it was (mode, ``requires_grad``, no hooks), see
:func:`vismap._running.explaining`, and so is ``x``: the model is fed a copy, never ``x`` itself.
Every method works inside ``torch.no_grad()`` and ``torch.inference_mode()``. A bad input is
refused before any work, with a ValueError or a TypeError that names the argument; an input
the model cannot take (a size, a dtype) with one that names ``x``'s shape and what the model
takes (:mod:`vismap._checks`, :func:`vismap._running.forward`). :data:`METHODS` is the
registry of the map methods: name -> :class:`Method` (the function, whether it needs a layer,
fine or coarse, its paper); :func:`get_method` looks a name up. Adding a method means writing
its function in its family module, its entry in :data:`METHODS` and its tests: the widgets,
the benchmark, notebook 08's leaderboard and the tests read the registry.

One module per family, the registry on top (it imports them; none of them imports it):

* :mod:`~vismap.explain.gradients` - saliency, the ReLU rules (:data:`RULES`), deconvnet,
  guided backprop, gradient x input;
* :mod:`~vismap.explain.relevance` - layer-wise relevance propagation, one function per rule;
* :mod:`~vismap.explain.deconvnet` - the explicit Zeiler-Fergus deconvnet;
* :mod:`~vismap.explain.occlusion` - occlusion;
* :mod:`~vismap.explain.cams` - CAM, Grad-CAM, LayerCAM, guided Grad-CAM, Grad-CAM++,
  Score-CAM;
* :mod:`~vismap.explain.paths` - SmoothGrad, Integrated Gradients;
* :mod:`~vismap.explain.synthesis` - class model, adversarial images;
* :mod:`~vismap.explain.maps` - normalize, upsample;
* :mod:`vismap.explain.factors` - factor activation maps (chapter 07);
* :mod:`~vismap.explain.attention` - attention rollout, gradient-weighted attention (chapter 11);
* :mod:`~vismap.explain.registry` - :data:`METHODS`.
"""

from __future__ import annotations

from .attention import attention_maps, chefer, rollout
from .cams import cam, gradcam, gradcam_pp, guided_gradcam, layer_gradient, layercam, scorecam
from .deconvnet import zeiler_fergus
from .factors import MODES, STATISTICS, factor_cam, factor_score
from .gradients import RULES, deconvnet, gradient_x_input, guided_backprop, saliency
from .gradients import relu_rule as relu_rule
from .maps import normalize, upsample
from .occlusion import occlusion
from .paths import integrated_gradients, path_rule, smoothgrad
from .registry import METHODS, NEEDS, Method, get_method
from .relevance import LRP_RULES, lrp
from .synthesis import adversarial, class_model

__all__ = [
    "saliency",
    "deconvnet",
    "guided_backprop",
    "zeiler_fergus",
    "occlusion",
    "cam",
    "gradcam",
    "layercam",
    "guided_gradcam",
    "layer_gradient",
    "normalize",
    "upsample",
    "gradient_x_input",
    "smoothgrad",
    "integrated_gradients",
    "path_rule",
    "gradcam_pp",
    "scorecam",
    "class_model",
    "adversarial",
    "Method",
    "METHODS",
    "get_method",
    "factor_score",
    "factor_cam",
    "STATISTICS",
    "MODES",
    "RULES",
    "NEEDS",
    "lrp",
    "LRP_RULES",
    "rollout",
    "chefer",
    "attention_maps",
]

# The shared machinery, importable from here as before explain became a package (its home is
# vismap._targets, _layers, _checks and _running; re-exported by name, not part of __all__).
from .._checks import check_baseline as check_baseline
from .._checks import check_call as check_call
from .._checks import check_count as check_count
from .._checks import check_flag as check_flag
from .._checks import check_input as check_input
from .._checks import check_model as check_model
from .._checks import check_nonnegative as check_nonnegative
from .._layers import Layer as Layer
from .._layers import capture as capture
from .._layers import resolve_layer as resolve_layer
from .._running import explaining as explaining
from .._running import fast_empty as fast_empty
from .._running import fast_layout as fast_layout
from .._running import forward as forward
from .._running import inference_safe as inference_safe
from .._running import model_input as model_input
from .._targets import Target as Target
from .._targets import check_target as check_target
from .._targets import repeat_target as repeat_target
from .._targets import slice_target as slice_target
from .._targets import target_classes as target_classes
from .._targets import target_scores as target_scores
