"""How well do a VAE's latent dimensions separate the true factors? (We own the factors.)

* :func:`factor_correlation` - Pearson correlation of each latent mean ``mu_j`` with each
  factor ``v_k``, ``(latents, factors)``;
* :func:`mutual_information` - ``I(mu_j; v_k)`` in nats, with ``mu_j`` discretised into
  equal-width bins (as in Chen et al. 2018 and Locatello et al. 2019);
* :func:`best_latents` - the course's rule for which latent carries a factor: among the
  *active* latents (mean KL above a threshold), the one of largest ``|corr|``;
* :func:`mig` - the mutual information gap (Chen et al. 2018, *Isolating Sources of
  Disentanglement in VAEs*): for each factor, the gap between the two latents that know most
  about it, over the factor's entropy, ``MIG_k = (I_(1) - I_(2)) / H(v_k)``, averaged.

``mu (n, latents)`` are posterior means of held-out images and ``factors (n, K)`` their true
factor values (each with a finite set of values, as in the sprites grid).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "factor_correlation",
    "best_latents",
    "mutual_information",
    "entropy",
    "mig",
    "ACTIVE_KL",
]

ACTIVE_KL = 0.1  # nats: a latent whose mean KL is below this carries (almost) nothing


def _as_numpy(mu, factors) -> tuple[np.ndarray, np.ndarray]:
    mu = mu.detach().cpu().numpy() if isinstance(mu, torch.Tensor) else np.asarray(mu)
    f = factors.detach().cpu().numpy() if isinstance(factors, torch.Tensor) else np.asarray(factors)
    if mu.ndim != 2 or f.ndim != 2 or len(mu) != len(f):
        raise ValueError(
            f"mu must be (n, latents) and factors (n, factors) with the same n; "
            f"got {mu.shape} and {f.shape}"
        )
    if len(mu) < 2:
        raise ValueError("need at least two samples")
    return mu.astype(np.float64), f.astype(np.float64)


def factor_correlation(mu, factors) -> np.ndarray:
    """Pearson ``corr(mu_j, v_k)``, ``(latents, factors)``; 0 where either is constant."""
    mu, f = _as_numpy(mu, factors)
    a = mu - mu.mean(0)
    b = f - f.mean(0)
    norm = np.sqrt((a**2).sum(0))[:, None] * np.sqrt((b**2).sum(0))[None]
    return np.divide(a.T @ b, norm, out=np.zeros((mu.shape[1], f.shape[1])), where=norm > 0)


def best_latents(mu, kl, factors, min_kl: float = ACTIVE_KL) -> list[int]:
    """For each factor ``v_k``, the active latent that follows it best:
    ``argmax_{j : KL_j > min_kl} |corr(mu_j, v_k)|``.

    A latent at the prior (``KL_j`` near 0) can still correlate with a factor by chance, and its
    factor map is near zero; the threshold keeps such dead latents out.

    Args:
        mu: posterior means ``(n, latents)``.
        kl: each latent's KL averaged over the same images, ``(latents,)`` (nats).
        factors: the true factors ``(n, K)``.
        min_kl: the activity threshold (nats).

    Returns:
        ``K`` latent indices (two factors may share one).
    """
    kl = kl.detach().cpu().numpy() if isinstance(kl, torch.Tensor) else np.asarray(kl, float)
    corr = np.abs(factor_correlation(mu, factors))
    if kl.shape != (corr.shape[0],):
        raise ValueError(f"kl must be ({corr.shape[0]},), one value per latent; got {kl.shape}")
    active = kl > min_kl
    if not active.any():
        raise ValueError(f"no latent is active: every mean KL is <= {min_kl} nats")
    return [int(np.where(active, corr[:, k], -1.0).argmax()) for k in range(corr.shape[1])]


def _codes(column: np.ndarray, bins: int | None) -> np.ndarray:
    """Integer codes of a column: its distinct values, or ``bins`` equal-width bins."""
    if bins is None:
        return np.unique(column, return_inverse=True)[1]
    edges = np.linspace(column.min(), column.max(), bins + 1)[1:-1]
    return np.digitize(column, edges)


def entropy(codes: np.ndarray) -> float:
    """``H(v) = -sum_v p(v) log p(v)`` of integer codes, in nats."""
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mi(a: np.ndarray, b: np.ndarray) -> float:
    """``I(a; b) = H(a) + H(b) - H(a, b)`` of two integer code arrays."""
    joint = a * (b.max() + 1) + b
    return entropy(a) + entropy(b) - entropy(joint)


def mutual_information(mu, factors, bins: int = 20) -> np.ndarray:
    """``I(mu_j; v_k)`` in nats, ``(latents, factors)``, each ``mu_j`` in ``bins`` bins."""
    mu, f = _as_numpy(mu, factors)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    z = [_codes(mu[:, j], bins) for j in range(mu.shape[1])]
    v = [_codes(f[:, k], None) for k in range(f.shape[1])]
    return np.array([[_mi(zj, vk) for vk in v] for zj in z])


def mig(mu, factors, bins: int = 20) -> tuple[float, np.ndarray]:
    """Mutual information gap: ``(mean MIG, per-factor MIG (factors,))``.

    ``MIG_k = (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k)`` with ``z_(1), z_(2)`` the latents of
    highest and second-highest mutual information with ``v_k``. 1 means one latent alone
    carries the factor; 0 means two latents carry it equally (or none does).
    """
    mu, f = _as_numpy(mu, factors)
    if mu.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    info = mutual_information(mu, f, bins)
    top = np.sort(info, axis=0)[::-1]
    h = np.array([entropy(_codes(f[:, k], None)) for k in range(f.shape[1])])
    per_factor = np.divide(top[0] - top[1], h, out=np.zeros(len(h)), where=h > 0)
    return float(per_factor.mean()), per_factor
