"""Factor activation maps (chapter 07): the source document's own method.

The four classic papers explain a class score. A factor activation map explains a *latent
factor* of a VAE: the score is a statistic of the factor's posterior
``q(z_i | x) = N(mu_i, sigma_i^2)`` read from the encoder's output, and the map is computed as
Grad-CAM (:func:`vismap.explain.gradcam`) or as the document's element-wise form
(:func:`vismap.explain.layercam`) at one of the encoder's layers. No label is used. Everything
here is re-exported by :mod:`vismap.explain`, whose registry lists :func:`factor_cam`; this
module imports the two CAM methods from their family module, :mod:`vismap.explain.cams`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import cast

import torch
from torch import nn

from .._checks import check_input, check_model
from .._layers import Layer
from .._running import explaining, forward, model_input
from .._targets import is_score
from ..vae import kl_per_dim
from .cams import gradcam, layercam

__all__ = ["factor_score", "factor_cam", "STATISTICS", "MODES"]


#: Scores of a factor's posterior ``N(mu_i, sigma_i^2)``, per sample and dimension ``(n, d)``.
#: The KL splits into a mean part and a certainty part, ``KL_i = 1/2 mu_i^2 + 1/2 (sigma_i^2 -
#: log sigma_i^2 - 1)``, whose gradients are the two terms of the derivation
#: (``mu_i dmu_i/dA`` and ``1/2 (sigma_i^2 - 1) dlog sigma_i^2/dA``): mapping each on its own
#: says which one a factor map rests on.
STATISTICS: dict = {
    "mu": lambda mu, logvar: mu,  # the posterior mean (Liu et al. 2020)
    "kl": lambda mu, logvar: kl_per_dim(mu, logvar),  # the factor's KL loss (the document)
    "kl_mean": lambda mu, logvar: 0.5 * mu.pow(2),  # the KL's mean part
    "kl_certainty": lambda mu, logvar: 0.5 * (logvar.exp() - logvar - 1),  # its certainty part
}


def _shapes(output) -> object:
    """A model output's shape(s), for error messages."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return [_shapes(t) for t in output]
    return type(output).__name__


def _needs_posterior(output) -> ValueError:
    """The error for a model whose output is not a posterior: what it needs, what it gave."""
    return ValueError(
        f"a factor map needs an encoder whose forward returns (mu, logvar), each "
        f"(n, latents) (for example vismap.vae.SpritesVAE); this model returned "
        f"{_shapes(output)} for one image. For any other embedding, call "
        f"vismap.explain.gradcam or layercam with a callable target"
    )


def _check_posterior_model(model: nn.Module, x: torch.Tensor) -> None:
    """Run ``model`` on one image (no gradient, eval mode, left as it was) and check that it
    returns ``(mu, logvar)`` - before any layer of it is looked up."""
    check_model(model, "vae")
    check_input(x)  # the channels and size are the encoder's to check (SpritesVAE says which)
    with explaining(model), torch.no_grad():
        output = forward(model, model_input(x[:1].detach()))
    if not _is_posterior(output):
        raise _needs_posterior(output)


def _is_posterior(output) -> bool:
    """Is ``output`` a ``(mu, logvar)`` pair of equal ``(n, latents)`` tensors?"""
    return (
        isinstance(output, (tuple, list))
        and len(output) == 2
        and all(isinstance(t, torch.Tensor) for t in output)
        and output[0].dim() == 2
        and output[0].shape == output[1].shape
    )


def factor_score(dims, statistic: str = "mu"):
    """The target of a factor map: ``s(x) = sum_{i in dims} stat(N(mu_i(x), sigma_i^2(x)))``.

    Args:
        dims: one latent index or a non-empty collection of them (scored jointly, summed).
        statistic: ``"mu"`` (``s = mu_i``), ``"kl"``
            (``s = KL_i = 1/2 (mu_i^2 + sigma_i^2 - log sigma_i^2 - 1)``), or one of the KL's
            two parts, ``"kl_mean"`` (``1/2 mu_i^2``) and ``"kl_certainty"``
            (``1/2 (sigma_i^2 - log sigma_i^2 - 1)``).

    Returns:
        A callable target: it takes an encoder's output ``(mu, logvar)``, each ``(n, d)``,
        and returns ``(n,)`` - no label is read anywhere.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; valid: {', '.join(STATISTICS)}")
    index = _dims(dims)

    def score(output) -> torch.Tensor:
        if not _is_posterior(output):
            raise _needs_posterior(output)
        mu, logvar = output
        latents = mu.shape[1]
        bad = [i for i in index if not -latents <= i < latents]
        if bad:
            raise ValueError(
                f"dims {bad} out of range: the encoder has {latents} dimensions, "
                f"0 .. {latents - 1} (or -{latents} .. -1 from the end)"
            )
        return STATISTICS[statistic](mu, logvar)[:, index].sum(1)

    return score


def _dims(dims) -> list[int]:
    """``dims`` - one latent index or a non-empty collection of distinct ones (ints, numpy
    integers, an integer tensor) - as a list of ints."""
    if is_score(dims):
        raise TypeError(
            "the target of a factor map is its latent dimension(s), dims (an int or a list of "
            "them), not a callable; for a callable score use vismap.explain.gradcam or layercam"
        )
    single = _as_index(dims)
    if single is not None:
        return [single]
    if dims is None or isinstance(dims, (str, bytes, Mapping)) or not isinstance(dims, Iterable):
        raise TypeError(f"dims must be a latent dimension (an int) or a list of them, got {dims!r}")
    index = [_as_index(i) for i in dims]
    if not index:
        raise ValueError("dims is empty; give one latent dimension or a set of them")
    if None in index or len(set(index)) != len(index):
        raise ValueError(f"dims must be distinct ints, got {dims!r}")
    return cast(list[int], index)


def _as_index(value) -> int | None:
    """``value`` as an int if it is one (a Python or numpy integer, a 0-d integer tensor; not a
    bool), else None."""
    if isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and (value.dim() or value.dtype == torch.bool)
    ):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


#: How a factor map weighs the layer's activations: Grad-CAM's mean gradient per channel, or
#: the source document's element-wise ``ReLU(ds/dA) * A``.
MODES: dict = {"gradcam": gradcam, "elementwise": layercam}


def factor_cam(
    vae: nn.Module,
    x: torch.Tensor,
    dims,
    *,
    layer: Layer = "encoder.3",
    statistic: str = "kl",
    mode: str = "elementwise",
    upsampled: bool = True,
) -> torch.Tensor:
    """Factor activation maps: where in the image a latent factor (or several) is read.

    The four classic papers explain a class score. Here the score is a statistic of the VAE's
    factor distribution ``q(z_i | x) = N(mu_i, sigma_i^2)`` - ``s = sum_{i in dims} mu_i`` or
    ``s = sum_{i in dims} KL_i`` (:func:`factor_score`) - and the map is computed exactly as
    :func:`gradcam` (``mode="gradcam"``: ``ReLU(sum_k mean_ij(ds/dA^k) A^k)``) or as the
    element-wise form (``mode="elementwise"``: ``ReLU(sum_k ReLU(ds/dA^k) A^k)``) at the
    encoder's ``layer`` (default: the ReLU after the 16x16 convolution of
    :class:`vismap.vae.SpritesVAE`). The defaults are the source document's method - the
    factor's own KL loss, element-wise - which localised best in chapter 07's measurements.
    No label is used; a set of dimensions gives their joint map, the map
    of their summed score. Any model whose ``forward`` returns ``(mu, logvar)`` works; for
    any other embedding, call :func:`gradcam` with a callable target.

    The derivation (chapter 07): for ``s = KL_i`` the gradient at the layer's activation A is

        ``dKL_i/dA = mu_i dmu_i/dA + 1/2 (sigma_i^2 - 1) dlog sigma_i^2/dA``

    - the mean's evidence, signed by where the factor sits, plus the certainty's evidence.

    Raises:
        ValueError: ``vae``'s forward does not return ``(mu, logvar)`` (checked on one image
            before the layer is looked up), an unknown ``mode`` or ``statistic``, bad ``dims``.

    Returns:
        ``(n, 1, H, W)`` (or ``(n, 1, h, w)`` with ``upsampled=False``), unnormalised.
    """
    check_model(vae, "vae")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    score = factor_score(dims, statistic)
    _check_posterior_model(vae, x)
    return MODES[mode](vae, x, score, layer=layer, upsampled=upsampled)
