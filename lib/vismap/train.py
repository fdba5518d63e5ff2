"""Training: the plain gradient-descent loop the course teaches, and ``make train``.

The loop is notebook 02's subject: draw a mini-batch, compute the loss, take its gradient with
autograd, step the parameters against it, ``theta <- theta - lr * grad`` (here with Adam's
per-parameter step sizes and a one-cycle learning-rate schedule).

``python -m vismap.train`` retrains every checkpoint in ``data/`` from scratch and rewrites
``data/MANIFEST.json`` with, for each file, the command that made it, its seeds, its held-out
accuracy, its training time and its sha256.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data, models, train_vae
from ._running import fast_layout
from .data import HELDOUT_SEED, TRAIN_SEED
from .train_vae import TRAINERS, VAE_RECIPES, evaluate_vae, fit_vae, train_sprites_vae
from .vit import ShapesViT, fold_stem

__all__ = [
    "fit",
    "multilabel_loss",
    "soft_cross_entropy",
    "LOSSES",
    "accuracy",
    "top2_both",
    "shift_images",
    "mixed_scenes",
    "fold_batchnorm",
    "train_shapes_model",
    "fit_vae",
    "evaluate_vae",
    "train_sprites_vae",
    "main",
    "RECIPES",
    "TRAINERS",
    "TRAIN_SEED",
    "HELDOUT_SEED",
    "HELDOUT_N",
]

HELDOUT_N = 2000
"""How many held-out scenes (seed ``HELDOUT_SEED``) :func:`train_shapes_model` measures a
classifier on: as many one-object scenes for the accuracy, two-object ones for the pairs."""

# name -> how it is trained: training scenes (one-object, two-object), optimiser steps, batch
# size, peak learning rate, the largest random sub-pixel shift of the augmentation (px), and the
# loss (:data:`LOSSES`).
_CLASSIFIER_RECIPE = dict(
    n_single=12_288,
    n_pairs=12_288,
    steps=5_000,
    batch_size=32,
    lr=6e-3,
    shift=1.0,
    loss="cross_entropy",
)
RECIPES: dict[str, dict] = {
    # The FC head of shapes-cnn can tell two classes apart by *where* shared part detectors fire,
    # and the softmax lets it raise every score with them at no cost, so its Grad-CAM for one
    # class lit both objects of a pair (own 0.46-0.51, other 0.17-0.20); one sigmoid per class
    # charges that to the absent classes. At 5,000 steps its Grad-CAM then pointed into the
    # asked object 0.83 of the time (mean over ten held-out sets of 200 pairs), the misses 1-2 px
    # outside it; at 10,000 steps 0.88 (0.86-0.90), other 0.003. The GAP heads of the other two
    # are class-specific by construction; the multi-label loss did not help them (allconv's
    # pointing fell from 0.91 to 0.79), so they keep the softmax and 5,000 steps. Trained side
    # by side (make train), the long shapes-cnn runs while the other two run one after another.
    "shapes-cnn": dict(_CLASSIFIER_RECIPE, loss="multilabel", steps=10_000),
    "shapes-gap": dict(_CLASSIFIER_RECIPE),
    "shapes-allconv": dict(_CLASSIFIER_RECIPE),
    # The vision transformer of chapter 11 (vismap.vit), on the same scenes and multi-label loss
    # as shapes-cnn, with AdamW's weight decay and a short warm-up. With the paper's linear patch
    # embedding it has no convolutional prior and learns slowly: this recipe reached 0.723
    # held-out accuracy and 0.333 pairs in the top 2 in 15,000 steps (683 s). The convolutional
    # stem (the hybrid input, vismap.vit.conv_stem) reached 0.891 / 0.686 after 3,000 steps with
    # batch norms in the stem, 0.836 / 0.609 without; with batch norms, 15,000 steps: this
    # manifest's entry. Measured with the linear embedding over 1,000 steps of 32 scenes
    # (held-out accuracy after them): fewer blocks learn more per step and per second (2 blocks
    # 0.35 in 36 s, 4 blocks 0.30 in 61 s; 3 keep two blocks whose patch tokens the score
    # reads); with 4 blocks, a peak rate of 5e-4 or 1e-3 (0.30 both) more than 3e-3 (0.19),
    # standardised input more than raw (0.25); a batch of 32 more per second than one of 64;
    # over the whole 15,000 steps a peak of 5e-4 reached 0.661 / 0.275 (697 s).
    "shapes-vit": dict(
        _CLASSIFIER_RECIPE,
        loss="multilabel",
        steps=15_000,
        batch_size=32,
        lr=1e-3,
        weight_decay=0.05,
        warmup=0.1,
        shift=1.0,
    ),
    **VAE_RECIPES,  # the VAEs: vismap.train_vae
}


def shift_images(
    x: torch.Tensor, dx: torch.Tensor | float, dy: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Move images ``x (n, C, H, W)`` right by ``dx`` and down by ``dy`` pixels (floats, or
    ``(n,)`` tensors, one shift per image), resampling bilinearly with border padding
    (``F.grid_sample``). A half-pixel shift averages each pixel with its neighbour: the
    resampling a user's image goes through when it is moved or resized."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # The grid holds where each output pixel reads from: x - dx, in units of 2 / W.
    theta[:, 0, 2] = -2.0 * torch.as_tensor(dx, dtype=x.dtype) / w
    theta[:, 1, 2] = -2.0 * torch.as_tensor(dy, dtype=x.dtype) / h
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def multilabel_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One yes/no question per class: the binary cross-entropy of ``sigmoid(z_c)`` against
    ``t_c`` in {0, 1}, summed over the classes and averaged over the batch,

    ``-1/n sum_i sum_c [t_ic log sigmoid(z_ic) + (1 - t_ic) log(1 - sigmoid(z_ic))]``.

    Unlike the softmax cross-entropy it pins every score on its own: adding the same amount to
    all of them (say, for "there is an object here") costs loss on every absent class, so a
    class's score must rest on evidence for that class. That makes a map of one score, such as
    Grad-CAM's, point at its own object in a two-object scene.
    """
    return F.binary_cross_entropy_with_logits(scores, targets, reduction="sum") / len(scores)


def soft_cross_entropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-1/n sum_i sum_c t_ic log softmax(z_i)_c``: targets are class indices ``(n,)`` or
    probabilities ``(n, classes)``."""
    return F.cross_entropy(scores, targets)


# the loss functions fit() knows, by name
LOSSES = {"cross_entropy": soft_cross_entropy, "multilabel": multilabel_loss}


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    shift: float = 0.0,
    loss: str = "cross_entropy",
    weight_decay: float = 0.0,
    warmup: float = 0.2,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` to classify ``images (n, C, H, W)`` as ``labels``, in place.

    ``labels`` are class indices ``(n,)`` or target probabilities ``(n, classes)`` (a two-
    object scene is ``1/2`` for each of its classes). Each step draws a random mini-batch
    (from a generator seeded with ``seed``), moves every image by a random sub-pixel offset in
    ``[-shift, shift]`` px in x and y (:func:`shift_images`; none when ``shift=0``), computes
    the ``loss`` (:data:`LOSSES`) between target ``t`` and the model's scores ``z``,
    back-propagates and takes one Adam step (AdamW, Loshchilov & Hutter 2019, with decoupled
    ``weight_decay`` when it is > 0); the learning rate follows a one-cycle schedule: it warms
    up over the first ``warmup`` fraction of the steps to ``lr``, then falls along a cosine. On
    a CPU the model's 4-D weights are stored channels-last first (the same function; oneDNN's
    convolutions and max-pools run 1.2-1.5x faster on it, and the input follows the weights'
    layout). The model is left in eval mode.

    Returns:
        The loss of every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
    if loss == "multilabel" and labels.dim() != 2:
        raise ValueError(
            f"the multilabel loss needs one 0/1 target per class, labels (n, classes); got "
            f"labels of shape {tuple(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images and labels differ in length: {images.shape[0]} images, "
            f"{labels.shape[0]} labels"
        )
    if next(model.parameters()).device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    torch.manual_seed(seed)  # weight-independent randomness (dropout)
    batches = torch.Generator().manual_seed(seed)
    if weight_decay < 0 or not 0 < warmup < 1:
        raise ValueError(
            f"weight_decay must be >= 0 and warmup a fraction in (0, 1); got weight_decay="
            f"{weight_decay}, warmup={warmup}"
        )
    optimiser = (
        torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        if weight_decay > 0
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, lr, total_steps=steps, pct_start=warmup
    )
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for _ in bar:
        idx = torch.randint(0, len(images), (batch_size,), generator=batches)
        x = images[idx]
        if shift > 0:
            dx, dy = (torch.rand(2, batch_size, generator=batches) * 2 - 1) * shift
            x = shift_images(x, dx, dy)
        value = LOSSES[loss](model(x), labels[idx])
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        schedule.step()
        losses.append(value.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
) -> float:
    """Fraction of ``images`` whose highest score is their label (model put in eval mode; the
    batches run channels-last on a CPU, :func:`vismap._running.fast_layout`)."""
    model.eval()
    correct = 0
    for k in range(0, len(images), batch_size):
        predicted = model(fast_layout(images[k : k + batch_size])).argmax(1)
        correct += (predicted == labels[k : k + batch_size]).sum().item()
    return correct / len(images)


@torch.no_grad()
def top2_both(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
) -> float:
    """Fraction of two-object ``images`` whose two highest scores are exactly their two
    classes ``labels (n, 2)`` (in either order): both objects recognised."""
    model.eval()
    hits = 0
    for k in range(0, len(images), batch_size):
        top = model(fast_layout(images[k : k + batch_size])).topk(2, dim=1).indices.sort(1).values
        hits += (top == labels[k : k + batch_size].sort(1).values).all(1).sum().item()
    return hits / len(images)


def mixed_scenes(
    n_single: int, n_pairs: int, seed: int = TRAIN_SEED, multilabel: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifiers' training set: ``n_single`` one-object and ``n_pairs`` two-object scenes
    (:func:`vismap.data.make_shapes`), with targets ``(n, classes)``: 1 for the class of a lone
    object; for each of the two classes of a pair 1/2 (a probability, for the softmax
    cross-entropy) or, with ``multilabel``, 1 (present, for :func:`multilabel_loss`).

    Returns:
        ``(images, targets)``, the one-object scenes first.
    """
    classes = len(data.SHAPE_CLASSES)
    single = data.make_shapes(n_single, seed=seed)
    pairs = data.make_shapes(n_pairs, seed=seed, objects=2)
    targets = torch.zeros(n_single + n_pairs, classes)
    targets[torch.arange(n_single), single.labels] = 1.0
    rows = torch.arange(n_single, n_single + n_pairs)[:, None]
    targets[rows, pairs.labels] = 1.0 if multilabel else 0.5
    images = torch.cat([single.images, pairs.images])
    return images, targets


@torch.no_grad()
def fold_batchnorm(trained: models.ShapesNet, name: str) -> models.ShapesNet:
    """Fold the batch norms of a model trained with ``batchnorm=True`` into its weights.

    In eval mode a batch norm is a fixed affine map per channel, ``y = g (x - m) / s + b`` with
    ``s = sqrt(var + eps)``, so ``bn(conv(x))`` is one convolution (or linear layer) with
    weights ``W g / s`` and bias ``(c - m) g / s + b``. The result is the plain architecture
    ``name`` (conv/ReLU/pool/linear only, as the explanation papers assume) computing the same
    function, in the trained model's dtype.
    """
    plain = models.ARCHITECTURES[name]().to(next(trained.parameters()).dtype)
    weighted = (nn.Conv2d, nn.Linear)
    for part in ("features", "classifier"):
        layers = list(trained.get_submodule(part).modules())
        norms = (nn.BatchNorm1d, nn.BatchNorm2d)
        pairs: list[tuple[nn.Conv2d | nn.Linear, nn.BatchNorm1d | nn.BatchNorm2d | None]] = [
            (
                m,
                nxt
                if isinstance(nxt := (layers[i + 1] if i + 1 < len(layers) else None), norms)
                else None,
            )
            for i, m in enumerate(layers)
            if isinstance(m, weighted)
        ]
        targets = [m for m in plain.get_submodule(part).modules() if isinstance(m, weighted)]
        if len(targets) != len(pairs):
            raise ValueError(
                f"{name}.{part} has {len(targets)} weighted layers, the trained model {len(pairs)}"
            )
        for target, (layer, bn) in zip(targets, pairs, strict=True):
            weight, bias = layer.weight.clone(), torch.as_tensor(layer.bias).clone()
            if bn is not None:
                mean, var = torch.as_tensor(bn.running_mean), torch.as_tensor(bn.running_var)
                scale = bn.weight / torch.sqrt(var + bn.eps)
                weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
                bias = (bias - mean) * scale + bn.bias
            target.weight.copy_(weight)
            torch.as_tensor(target.bias).copy_(bias)
    return plain.eval()


def train_shapes_model(
    name: str, *, seed: int = 0, progress: bool = True, **recipe
) -> tuple[nn.Module, dict]:
    """Train the course model ``name`` from scratch by its recipe (:data:`RECIPES`).

    It trains the batch-normalised variant of the architecture (the ViT, :mod:`vismap.vit`, with
    batch norms in its convolutional stem) on a mix of one- and
    two-object scenes (:func:`mixed_scenes` with seed ``TRAIN_SEED``; by its recipe's ``loss``,
    one yes/no target per class with :func:`multilabel_loss`, or soft targets 1/2-1/2 for the
    pairs with the softmax cross-entropy) with random sub-pixel shifts (:func:`fit`), in the
    channels-last memory layout (the same function, about 1.5x faster on a CPU), folds the batch
    norms away (:func:`fold_batchnorm`) and measures, on held-out scenes of seed
    ``HELDOUT_SEED``: the accuracy on :data:`HELDOUT_N` (2,000) one-object scenes, the rate at
    which both classes of as many two-object scenes are the top two scores, and the accuracy
    after a half-pixel shift.

    Returns:
        ``(model, record)``: the eval-mode plain model and what the manifest records of it.
    """
    if name not in RECIPES or not name.startswith("shapes-"):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(RECIPES)}")
    recipe = {**RECIPES[name], **recipe}
    multilabel = recipe["loss"] == "multilabel"
    images, targets = mixed_scenes(recipe["n_single"], recipe["n_pairs"], multilabel=multilabel)
    images = images.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(seed)
    transformer = name in models.TRANSFORMERS  # batch norms in its stem only
    net: nn.Module = (
        models.TRANSFORMERS[name](batchnorm=True)
        if transformer
        else models.ARCHITECTURES[name](batchnorm=True)
    )  # fit stores it channels-last
    start, cpu = time.perf_counter(), time.process_time()
    losses = fit(
        net,
        images,
        targets,
        steps=recipe["steps"],
        batch_size=recipe["batch_size"],
        lr=recipe["lr"],
        seed=seed,
        shift=recipe["shift"],
        loss=recipe["loss"],
        weight_decay=recipe.get("weight_decay", 0.0),
        warmup=recipe.get("warmup", 0.2),
        progress=progress,
        desc=name,
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    del images, targets
    model = (
        fold_stem(cast(ShapesViT, net))
        if transformer
        else fold_batchnorm(cast(models.ShapesNet, net), name)
    )
    heldout = data.make_shapes(HELDOUT_N, seed=HELDOUT_SEED)
    pairs = data.make_shapes(HELDOUT_N, seed=HELDOUT_SEED, objects=2)
    record = dict(
        model=name,
        seed=seed,
        train_seed=TRAIN_SEED,
        heldout_seed=HELDOUT_SEED,
        trained_on=(
            f"{recipe['n_single']} one-object and {recipe['n_pairs']} two-object "
            f"scenes (make_shapes, seed {TRAIN_SEED}); "
            + (
                "one sigmoid per class (multi-label binary cross-entropy): target 1 for each "
                "class present, 0 for the others; "
                if multilabel
                else "target 1 for a lone object's class, 1/2 for each class of a pair "
                "(cross-entropy with soft targets); "
            )
            + f"each image moved by a random sub-pixel shift in [-{recipe['shift']}, "
            f"{recipe['shift']}] px in x and y (bilinear, border padding)"
        ),
        heldout_images=len(heldout),
        accuracy=round(accuracy(model, heldout.images, heldout.labels), 4),
        pairs_top2=round(top2_both(model, pairs.images, pairs.labels), 4),
        accuracy_half_pixel_shift=round(
            accuracy(model, shift_images(heldout.images, 0.5, 0.5), heldout.labels), 4
        ),
        final_loss=round(sum(losses[-50:]) / len(losses[-50:]), 4),
        train_seconds=round(seconds, 1),
        train_cpu_seconds=round(cpu_seconds, 1),
        threads=torch.get_num_threads(),
        load_average=round(os.getloadavg()[0], 1),
        **recipe,
    )
    return model, record


def _train_one(
    name: str, seed: int, threads: int, out: Path, snapshots: Path | None, progress: bool
) -> list[tuple[str, dict]]:
    """Train model ``name`` with ``threads`` torch threads, save it to ``out/NAME.pt`` (a VAE's
    kept snapshots to ``out/NAME-stepS.pt``, encoders only) and return each file's manifest
    record (run in a worker process by :func:`main`)."""
    torch.set_num_threads(threads)
    if name not in VAE_RECIPES:
        model, record = train_shapes_model(name, seed=seed, progress=progress)
        torch.save(model.state_dict(), out / f"{name}.pt")
        return [(name, record)]
    kept: dict[int, dict] = {}
    snapshot = train_vae.snapshots(snapshots, name, kept)
    model, record = train_vae.TRAINERS[name](seed=seed, snapshot=snapshot, progress=progress)
    encoder_only = VAE_RECIPES[name].get("encoder_only", False)
    torch.save(
        train_vae.encoder_state(model) if encoder_only else model.state_dict(), out / f"{name}.pt"
    )
    files = [(name, record)]
    for step, state in sorted(kept.items()):
        torch.save(state, out / f"{name}-step{step}.pt")
        files.append(
            (f"{name}-step{step}", dict(model=name, seed=seed, step=step, encoder_only=True))
        )
    return files


def main(argv: list[str] | None = None) -> None:
    """``python -m vismap.train [--only NAME ...] [--out DIR] [--threads T] [--jobs J]``:
    retrain and rewrite the manifest (entries of models not retrained are kept).

    Each model trains with ``T`` torch threads (default 1: the shipped checkpoints were made so,
    and another thread count adds the same floats in another order, which gives other, equally
    good weights and another SHA-256). ``J`` models (default: one per CPU core) train side by
    side in worker processes; this, not more threads per model, is what uses a machine's cores:
    a model this small gains little from a second thread (measured: one shapes-cnn of 5,000
    steps, 211 s at one thread, 185 s at two)."""
    parser = argparse.ArgumentParser(prog="python -m vismap.train", description=main.__doc__)
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--out", type=Path, default=models.data_dir())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per model (default 1, as shipped)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="models trained side by side (default: CPU cores)"
    )
    parser.add_argument(
        "--snapshots",
        type=Path,
        default=None,
        help="save the whole VAE every 500 steps into this folder (to watch a long run)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or (args.jobs is not None and args.jobs < 1):
        parser.error(f"--threads and --jobs must be >= 1, got {args.threads} and {args.jobs}")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = min(args.jobs or os.cpu_count() or 1, len(args.only))
    # the VAEs (about 15 minutes each) first, so that the classifiers fill the other cores; one
    # progress bar is readable, several processes' bars would overwrite each other
    names = sorted(args.only, key=lambda name: name not in VAE_RECIPES)
    work = [(name, args.seed, args.threads, args.out, args.snapshots, jobs == 1) for name in names]
    started = time.perf_counter()
    if jobs == 1:
        for item in work:
            for file, record in _train_one(*item):
                _record(args, file, record)
    else:
        context = multiprocessing.get_context("spawn")  # no torch state inherited by a fork
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            running = {pool.submit(_train_one, *item): item[0] for item in work}
            for done in as_completed(running):
                for file, record in done.result():
                    _record(args, file, record)
    print(
        f"{len(work)} model(s) in {time.perf_counter() - started:.0f} s, {jobs} side by side, "
        f"{args.threads} thread(s) each"
    )


def _record(args: argparse.Namespace, name: str, record: dict) -> None:  # name: the file stem
    """Add the command, hash, size and machine to ``record``, write it into the manifest and
    print a line about the model."""
    path = args.out / f"{name}.pt"
    thread_option = "" if args.threads == 1 else f" --threads {args.threads}"
    record.update(
        command=(
            f"python -m vismap.train --only {record['model']} --seed {args.seed}{thread_option}"
        ),
        sha256=models.sha256(path),
        bytes=path.stat().st_size,
        torch=torch.__version__,
        threads=args.threads,
        machine=f"{platform.machine()}, {args.threads} threads",
    )
    manifest_path = args.out / "MANIFEST.json"
    # Read the manifest just before writing it: another `--only` run may have changed it.
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("files", {})[path.name] = record
    manifest["about"] = (
        "Checkpoints of the course's models. Every file is remade by its "
        "`command` (or all of them by `make train`); `sha256` is checked by "
        "vismap.models.load_pretrained."
    )
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if "accuracy" in record:
        quality = (
            f"held-out accuracy {record['accuracy']:.2%}, both classes of a pair in the "
            f"top 2 {record['pairs_top2']:.2%}, trained in {record['train_seconds']} s"
        )
    elif "mig" in record:
        quality = (
            f"best |corr| per factor {record['best_abs_corr']}, MIG {record['mig']}, "
            f"trained in {record['train_seconds']} s"
        )
    else:
        quality = f"its encoder at step {record['step']}"
    print(f"{name}: {quality}, {record['bytes'] / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
