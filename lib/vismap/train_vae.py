"""Training the course's VAEs (chapter 07): the beta-VAE loop and its held-out measures.

``python -m vismap.train --only sprites-vae`` (or ``sprites2-vae``) calls
:func:`train_sprites_vae` (or :func:`train_sprites2_vae`) through :data:`TRAINERS`; the recipes
are :data:`VAE_RECIPES` (part of ``vismap.train.RECIPES``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data, disentangle, metrics, vae
from .data import HELDOUT_SEED, TRAIN_SEED
from .explain.factors import factor_cam

__all__ = [
    "VAE_RECIPES",
    "TRAINERS",
    "fit_vae",
    "evaluate_vae",
    "train_vae",
    "train_sprites_vae",
    "train_sprites2_vae",
    "snapshots",
]

# name -> how it is trained. Every VAE sees a fresh batch of sprites at every step.
# * sprites-vae: the beta-VAE on one sprite (4,000 steps x 64 = 256,000 draws).
# * sprites2-vae: two-object scenes, the Spatial Broadcast Decoder, beta = 4 and beta-TCVAE's
#   total-correlation penalty; its encoder is also kept at the steps in `snapshots`
#   (chapter 07's controlled experiment, encoder-only files `sprites2-vae-step{S}.pt`). Tried on
#   seed 0: TC weight 5 (10,000 steps) left the y latents rotated (best |corr| 0.87-0.89),
#   weight 20 dropped B's x position by step 5,500, weight 10 separated all four positions
#   (|corr| >= 0.99) by step 6,000; 12,000 steps take about 21 minutes on one core.
# * the two controls of that experiment, kept as encoders only (`encoder_only`):
#   sprites2-vae-no-tc, the same model and decoder without the TC term, and
#   sprites2-vae-deconv, the same SpritesVAE as sprites-vae (transposed-convolution decoder)
#   with beta = 1 and TC = 5.
_TWO_OBJECTS = dict(
    architecture="BroadcastVAE", steps=12_000, batch_size=64, lr=1e-3, beta=4.0, objects=2
)
VAE_RECIPES: dict[str, dict] = {
    "sprites-vae": dict(
        architecture="SpritesVAE", steps=4_000, batch_size=64, lr=1e-3, beta=4.0, tc=0.0
    ),
    "sprites2-vae": dict(_TWO_OBJECTS, tc=10.0, snapshots=(1_000, 3_000, 5_000)),
    "sprites2-vae-no-tc": dict(_TWO_OBJECTS, tc=0.0, encoder_only=True),
    "sprites2-vae-deconv": dict(
        architecture="SpritesVAE",
        steps=4_000,
        batch_size=64,
        lr=1e-3,
        beta=1.0,
        tc=5.0,
        objects=2,
        encoder_only=True,
    ),
}
_SPRITE_CHUNK = 8_192  # sprites rendered at a time for the VAE
SNAPSHOT_EVERY = 500  # steps between calls of fit_vae's snapshot callback
HELDOUT_IMAGES = 10_000  # held-out images each trained VAE is measured on


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
    noise) alone. ``snapshot(step, model)``, if given, is called every :data:`SNAPSHOT_EVERY`
    (500) steps.

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
        if snapshot is not None and (step + 1) % SNAPSHOT_EVERY == 0:
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


@torch.no_grad()
def evaluate_objects(model: vae.SpritesVAE, scenes: data.Sprites, maps: int = 500) -> dict:
    """Chapter 07's measures of a two-object VAE on held-out ``scenes``: each object's latents
    by the course's rule (:func:`vismap.disentangle.best_latents` of its x and y positions,
    active latents only), their ``|corr|`` and mean KL, and how often the object's joint factor
    map (KL, element-wise, ``encoder.3``) has its maximum on its own object and on the other,
    on the first ``maps`` scenes; the same for the KL's two parts and for ``mu``. Without any
    active latent, ``object_latents`` is ``None``."""
    mu, logvar = model(scenes.images)
    kl = vae.kl_per_dim(mu, logvar).mean(0)
    names = data.sprites.sprite_factor_names(2)
    position = ["A.pos_x", "A.pos_y", "B.pos_x", "B.pos_y"]
    columns = scenes.factors.flatten(1)[:, [names.index(f) for f in position]]
    if not (kl > disentangle.ACTIVE_KL).any():  # a run stopped too early: nothing to map
        return dict(object_latents=None)
    best = disentangle.best_latents(mu, kl, columns, min_kl=disentangle.ACTIVE_KL)
    corr = abs(disentangle.factor_correlation(mu, columns))
    latents = {"A": sorted(set(best[:2])), "B": sorted(set(best[2:]))}
    assert scenes.masks is not None  # make_sprites always draws them
    masks = scenes.masks[:maps]
    pointing: dict[str, dict[str, list[float]]] = {}
    for statistic in ("kl", "kl_mean", "kl_certainty", "mu"):
        pointing[statistic] = {}
        for k, obj in enumerate(("A", "B")):
            with torch.enable_grad():
                joint = factor_cam(model, scenes.images[:maps], latents[obj], statistic=statistic)
            pointing[statistic][obj] = [
                round(metrics.pointing_game(joint, masks[:, j]).float().mean().item(), 3)
                for j in (k, 1 - k)
            ]
    return dict(
        object_latents=latents,
        object_latent_corr={
            f: round(float(corr[j, c]), 3)
            for c, (f, j) in enumerate(zip(position, best, strict=True))
        },
        object_latent_kl={f: round(float(kl[j]), 3) for f, j in zip(position, best, strict=True)},
        joint_map_pointing_own_other=pointing["kl"],
        statistic_pointing_own_other=pointing,
        joint_map_images=maps,
    )


def train_vae(
    name: str, *, seed: int = 0, progress: bool = True, snapshot=None, **overrides
) -> tuple[vae.SpritesVAE, dict]:
    """Train the VAE ``name`` by :data:`VAE_RECIPES` (``overrides`` replace recipe entries) and
    measure it on 10,000 held-out images ``make_sprites(10000, HELDOUT_SEED, objects)``.

    ``snapshot(step, model)``, if given, is called every :data:`SNAPSHOT_EVERY` steps (the
    recipe's ``snapshots`` are the steps that ``python -m vismap.train`` keeps).

    Returns:
        ``(model, record)``: the eval-mode model and what the manifest records of it (for two
        objects the factor table has ten columns, ``A.shape .. B.pos_y``).
    """
    recipe = {**VAE_RECIPES[name], **overrides}
    fit_args = {
        k: v for k, v in recipe.items() if k not in ("architecture", "snapshots", "encoder_only")
    }
    torch.manual_seed(seed)
    model = getattr(vae, recipe["architecture"])()
    start = time.perf_counter()
    history = fit_vae(model, seed=seed, progress=progress, snapshot=snapshot, **fit_args)
    seconds = time.perf_counter() - start
    heldout = data.make_sprites(HELDOUT_IMAGES, seed=HELDOUT_SEED, objects=recipe.get("objects", 1))
    last = history[-200:]
    record = dict(
        model=name,
        seed=seed,
        train_seed=TRAIN_SEED,
        heldout_seed=HELDOUT_SEED,
        heldout_images=len(heldout),
        final_loss=round(sum(h["loss"] for h in last) / len(last), 2),
        final_kl=round(sum(h["kl"] for h in last) / len(last), 2),
        train_seconds=round(seconds, 1),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
        **evaluate_vae(model, heldout),
    )
    if recipe.get("objects", 1) == 2:
        record.update(evaluate_objects(model.eval(), heldout))
    return model.eval(), record


def train_sprites_vae(**kwargs) -> tuple[vae.SpritesVAE, dict]:
    """:func:`train_vae` of ``"sprites-vae"``."""
    return train_vae("sprites-vae", **kwargs)


def train_sprites2_vae(**kwargs) -> tuple[vae.SpritesVAE, dict]:
    """:func:`train_vae` of ``"sprites2-vae"``."""
    return train_vae("sprites2-vae", **kwargs)


#: name -> function that trains it from scratch: ``(seed=..., snapshot=...) -> (model, record)``
TRAINERS: dict[str, Callable] = {name: functools.partial(train_vae, name) for name in VAE_RECIPES}


def encoder_state(model: vae.SpritesVAE) -> dict[str, torch.Tensor]:
    """The encoder's tensors of ``model.state_dict()`` (what factor maps need), copied."""
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder.")}


def snapshots(folder: Path | None, name: str, keep: dict | None = None):
    """A ``snapshot(step, model)`` callback: saves ``folder/NAME-STEP.pt`` (the whole model,
    if ``folder``) and puts the encoder of the steps in the recipe's ``snapshots`` into
    ``keep[step]``."""
    wanted = set(VAE_RECIPES[name].get("snapshots", ()))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def snapshot(step: int, model: vae.SpritesVAE) -> None:
        if folder is not None:
            torch.save(model.state_dict(), folder / f"{name}-{step}.pt")
        if keep is not None and step in wanted:
            keep[step] = encoder_state(model)

    return snapshot
