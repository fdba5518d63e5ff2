"""Training the course's VAEs (chapter 07): the beta-VAE loop and its held-out measures.

``python -m vismap.train --only sprites-vae`` (or ``sprites2-vae``) calls
:func:`train_sprites_vae` (or :func:`train_sprites2_vae`) through :data:`TRAINERS`; the recipes
are :data:`VAE_RECIPES` (part of ``vismap.train.RECIPES``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data, disentangle, vae
from .data import HELDOUT_SEED, TRAIN_SEED

__all__ = [
    "VAE_RECIPES",
    "TRAINERS",
    "fit_vae",
    "evaluate_vae",
    "train_sprites_vae",
    "train_sprites2_vae",
    "snapshots",
]

# name -> how it is trained: the VAE sees fresh sprites every step
# (sprites-vae: 4,000 steps x 64 = 256,000 draws). sprites2-vae sees two-object scenes and
# uses Burgess et al.'s controlled capacity: the KL is held at C nats, C rising linearly from
# 0 to `capacity` over `anneal_steps`, plus a total-correlation penalty.
VAE_RECIPES: dict[str, dict] = {
    "sprites-vae": dict(steps=4_000, batch_size=64, lr=1e-3, beta=4.0, tc=0.0),
    "sprites2-vae": dict(steps=4_000, batch_size=64, lr=1e-3, beta=1.0, tc=5.0, objects=2),
}
_SPRITE_CHUNK = 8_192  # sprites rendered at a time for the VAE


def fit_vae(
    model: vae.SpritesVAE,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float = 4.0,
    tc: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    snapshot=None,
    objects: int = 1,
    capacity: float | None = None,
    gamma: float = 100.0,
    anneal_steps: int | None = None,
) -> list[dict]:
    """Train ``model`` in place on the beta-VAE loss (:func:`vismap.vae.vae_loss`) with Adam.

    Every step takes a fresh batch of sprites: chunks of 8,192 are drawn with
    ``make_sprites(8192, seed=TRAIN_SEED * 1_000_003 + chunk, objects=objects)`` and cut into
    batches, so the run is reproducible from ``seed`` (the weights and the reparameterisation
    noise) alone. ``snapshot(step, model)``, if given, is called every 1,000 steps (to watch a
    long run).

    With ``capacity`` (nats), the KL term is Burgess et al.'s (2018) controlled capacity
    ``gamma * |KL - C_t|`` with ``C_t = capacity * min(1, t / anneal_steps)`` instead of
    ``beta * KL`` (``anneal_steps`` defaults to ``steps``).

    Returns:
        Per step: ``loss``, ``recon``, ``kl`` (nats per image).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if capacity is not None and capacity < 0:
        raise ValueError(
            f"capacity must be >= 0 nats (or None for the plain beta-VAE), got {capacity}"
        )
    anneal = steps if anneal_steps is None else anneal_steps
    if anneal < 1:
        raise ValueError(f"anneal_steps must be >= 1, got {anneal_steps}")
    per_chunk = _SPRITE_CHUNK // batch_size
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    chunk = None
    for step in tqdm(
        range(steps), desc=f"VAE, {objects} object(s)", disable=not progress, mininterval=5
    ):
        if step % per_chunk == 0:
            chunk = data.make_sprites(
                _SPRITE_CHUNK, TRAIN_SEED * 1_000_003 + step // per_chunk, objects=objects
            )
        assert chunk is not None  # drawn at step 0
        k = step % per_chunk
        c_t = None if capacity is None else capacity * min(1.0, step / anneal)
        out = vae.vae_loss(
            model,
            chunk.images[k * batch_size : (k + 1) * batch_size],
            beta=beta,
            tc=tc,
            capacity=c_t,
            gamma=gamma,
        )
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
        history.append({key: value.item() for key, value in out.items() if key != "tc"})
        if snapshot is not None and (step + 1) % 1000 == 0:
            snapshot(step + 1, model)
    return history


@torch.no_grad()
def evaluate_vae(model: vae.SpritesVAE, sprites: data.Sprites) -> dict:
    """Held-out measures of a sprites VAE: reconstruction (BCE nats per image, share of wrong
    pixels), mean KL of each latent dimension, and how the latents match the true factors
    (Pearson correlation table, best |corr| and best latent per factor, MIG). Two-object
    factors ``(n, 2, 5)`` are flattened to ten columns ``A.shape .. B.pos_y``."""
    model.eval()
    mu, logvar = model(sprites.images)
    logits = model.decode(mu)
    bce = F.binary_cross_entropy_with_logits(logits, sprites.images, reduction="sum")
    wrong = ((logits > 0).float() != sprites.images).float().mean()
    factors = sprites.factors.flatten(1)
    names = data.sprites.sprite_factor_names(
        sprites.factors.shape[1] if sprites.factors.dim() == 3 else 1
    )
    corr = disentangle.factor_correlation(mu, factors)
    gap, per_factor = disentangle.mig(mu, factors)
    return dict(
        recon_bce=round(bce.item() / len(mu), 2),
        pixel_error=round(wrong.item(), 5),
        kl_per_dim=[round(v, 3) for v in vae.kl_per_dim(mu, logvar).mean(0).tolist()],
        factor_corr={
            name: [round(v, 3) for v in corr[:, k].tolist()] for k, name in enumerate(names)
        },
        best_abs_corr={
            name: round(float(abs(corr[:, k]).max()), 3) for k, name in enumerate(names)
        },
        best_latent={name: int(abs(corr[:, k]).argmax()) for k, name in enumerate(names)},
        mig=round(gap, 4),
        mig_per_factor={
            name: round(float(v), 4) for name, v in zip(names, per_factor, strict=True)
        },
    )


def train_sprites_vae(
    *, seed: int = 0, progress: bool = True, snapshot=None, **recipe
) -> tuple[vae.SpritesVAE, dict]:
    """Train the course's beta-VAE by :data:`RECIPES` ``["sprites-vae"]`` and measure it on
    10,000 held-out sprites ``make_sprites(10000, HELDOUT_SEED)``.

    Returns:
        ``(model, record)``: the eval-mode model and what the manifest records of it.
    """
    recipe = {**VAE_RECIPES["sprites-vae"], **recipe}
    torch.manual_seed(seed)
    model = vae.SpritesVAE()
    start = time.perf_counter()
    history = fit_vae(model, seed=seed, progress=progress, snapshot=snapshot, **recipe)
    seconds = time.perf_counter() - start
    heldout = data.make_sprites(10_000, seed=HELDOUT_SEED)
    last = history[-200:]
    record = dict(
        model="sprites-vae",
        seed=seed,
        train_seed=TRAIN_SEED,
        heldout_seed=HELDOUT_SEED,
        heldout_images=len(heldout),
        final_loss=round(sum(h["loss"] for h in last) / len(last), 2),
        train_seconds=round(seconds, 1),
        **recipe,
        **evaluate_vae(model, heldout),
    )
    return model.eval(), record


def train_sprites2_vae(
    *, seed: int = 0, progress: bool = True, snapshot=None, **recipe
) -> tuple[vae.SpritesVAE, dict]:
    """Train the two-object VAE by :data:`VAE_RECIPES` ``["sprites2-vae"]`` (the same
    :class:`vismap.vae.SpritesVAE`, on ``make_sprites(..., objects=2)`` scenes) and measure it
    on 10,000 held-out scenes ``make_sprites(10000, HELDOUT_SEED, objects=2)``.

    Returns:
        ``(model, record)``: the eval-mode model and what the manifest records of it (the
        factor table has ten columns, ``A.shape .. B.pos_y``).
    """
    recipe = {**VAE_RECIPES["sprites2-vae"], **recipe}
    torch.manual_seed(seed)
    model = vae.SpritesVAE()
    start = time.perf_counter()
    history = fit_vae(model, seed=seed, progress=progress, snapshot=snapshot, **recipe)
    seconds = time.perf_counter() - start
    heldout = data.make_sprites(10_000, seed=HELDOUT_SEED, objects=2)
    last = history[-200:]
    record = dict(
        model="sprites2-vae",
        seed=seed,
        train_seed=TRAIN_SEED,
        heldout_seed=HELDOUT_SEED,
        heldout_images=len(heldout),
        final_loss=round(sum(h["loss"] for h in last) / len(last), 2),
        final_kl=round(sum(h["kl"] for h in last) / len(last), 2),
        train_seconds=round(seconds, 1),
        **recipe,
        **evaluate_vae(model, heldout),
    )
    return model.eval(), record


#: name -> function that trains it from scratch: ``(seed=..., snapshot=...) -> (model, record)``
TRAINERS: dict[str, Callable] = {
    "sprites-vae": train_sprites_vae,
    "sprites2-vae": train_sprites2_vae,
}


def snapshots(folder: Path | None, name: str):
    """A ``snapshot(step, model)`` callback saving ``folder/NAME-STEP.pt`` (or ``None``)."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return lambda step, model: torch.save(model.state_dict(), folder / f"{name}-{step}.pt")
