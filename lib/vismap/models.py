"""The course's small models, and loading their shipped checkpoints from ``data/``.

Three classifiers for the 64x64 Shapes images, built so that each explanation paper has the
architecture it was written for:

* ``shapes-cnn`` - VGG-like: conv/ReLU/max-pool features, then flatten and a fully connected
  head (Zeiler & Fergus, Grad-CAM). CAM does *not* apply: the head mixes positions.
* ``shapes-gap`` - the same features, then global average pooling and one linear layer
  (Zhou et al. 2016): the network CAM was made for.
* ``shapes-allconv`` - Springenberg et al. 2015's recipe: no pooling at all; strided 3x3
  convolutions downsample, a 1x1 convolution gives one map per class, and a global average
  turns each map into a class score.

Every non-linearity is an ``nn.ReLU`` module (not ``F.relu``), so the explanation methods can
find it and change its backward rule.

``shapes-vit`` (chapter 11, :mod:`vismap.vit`) is a small vision transformer trained on the same
scenes: 8x8 patches, a class token, pre-norm blocks ``blocks.0 ...`` whose attention
probabilities are the output of ``blocks.l.attn.probs``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .data import SHAPE_CLASSES
from .photos import (
    PHOTOS,
    ImageNetModel,
    WeightsUnavailableError,
    imagenet,
    load_photo,
    weights_path,
)
from .vae import BroadcastVAE, SpritesVAE
from .vit import ShapesViT, shapes_vit

__all__ = [
    "ShapesNet",
    "shapes_cnn",
    "shapes_gap",
    "shapes_allconv",
    "ARCHITECTURES",
    "ShapesViT",
    "shapes_vit",
    "TRANSFORMERS",
    "PRETRAINED",
    "ENCODERS",
    "imagenet",
    "load_photo",
    "PHOTOS",
    "ImageNetModel",
    "WeightsUnavailableError",
    "weights_path",
    "data_dir",
    "read_manifest",
    "load_pretrained",
    "CheckpointError",
]


class ShapesNet(nn.Module):
    """``classifier(pool(features(x)))``: the shape every course model shares.

    The shipped models are plain (conv, ReLU, pooling, linear). They were *trained* with a
    batch norm after each convolution (``batchnorm=True``, faster to train on a CPU), which
    :func:`vismap.train.fold_batchnorm` then folds into the convolutions' weights.

    ``features`` maps ``(n, 3, 64, 64)`` images to feature maps, ``pool`` summarises them and
    ``classifier`` turns the summary into ``(n, classes)`` scores (logits).

    Attributes:
        input_size: ``(C, H, W)`` of the images the model was built and trained for, (3, 64, 64).
            shapes-cnn's fully connected head takes nothing else; the pooled networks run on
            other sizes too. The explanation methods name it when an input does not fit
            (:func:`vismap._running.forward`).
    """

    input_size: tuple[int, int, int] = (3, 64, 64)

    def __init__(self, features: nn.Module, pool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features = features
        self.pool = pool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _he_init(model: ShapesNet) -> ShapesNet:
    """He et al. 2015 initialisation of a freshly built model (keeps ReLU activations' scale)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _block(cin: int, cout: int, batchnorm: bool, stride: int = 1) -> list[nn.Module]:
    """3x3 conv (padding 1) -> [batch norm] -> ReLU."""
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU()] if batchnorm else [conv, nn.ReLU()]


def _conv_features(batchnorm: bool = False) -> nn.Sequential:
    """Four 3x3 conv/ReLU layers with 8, 16, 32, 64 channels, max-pooled after each of the first
    three: ``(n, 3, 64, 64) -> (n, 64, 8, 8)``. Without batch norm the layers are

    ``0 conv, 1 relu, 2 pool`` (32x32), ``3 conv, 4 relu, 5 pool`` (16x16),
    ``6 conv, 7 relu, 8 pool`` (8x8), ``9 conv, 10 relu`` (the last conv layer, 8x8).

    Receptive field of ``features.9``: 38 pixels, stride 8.
    """
    layers: list[nn.Module] = []
    for cin, cout in ((3, 8), (8, 16), (16, 32)):
        layers += _block(cin, cout, batchnorm) + [nn.MaxPool2d(2)]
    return nn.Sequential(*layers, *_block(32, 64, batchnorm))


def shapes_cnn(classes: int = len(SHAPE_CLASSES), batchnorm: bool = False) -> ShapesNet:
    """VGG-like: features, 2x2 max-pool to 4x4, flatten, FC 1024 -> 64 -> classes."""
    hidden = [nn.Linear(64 * 4 * 4, 64)] + ([nn.BatchNorm1d(64)] if batchnorm else [])
    head = nn.Sequential(nn.Flatten(), *hidden, nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, classes))
    return _he_init(ShapesNet(_conv_features(batchnorm), nn.MaxPool2d(2), head))


def shapes_gap(classes: int = len(SHAPE_CLASSES), batchnorm: bool = False) -> ShapesNet:
    """CAM's network: features, global average pooling, one linear layer 64 -> classes."""
    return _he_init(
        ShapesNet(
            _conv_features(batchnorm),
            nn.AdaptiveAvgPool2d(1),
            nn.Sequential(nn.Flatten(), nn.Linear(64, classes)),
        )
    )


def shapes_allconv(classes: int = len(SHAPE_CLASSES), batchnorm: bool = False) -> ShapesNet:
    """All-convolutional: stride-2 3x3 convs instead of max-pooling, a 1x1 conv to one map per
    class (the last layer of ``features``, no ReLU after it), then a global average of each
    map. Without batch norm: conv/ReLU pairs ``0-1`` (64x64), ``2-3`` (stride 2, 32x32),
    ``4-5``, ``6-7`` (stride 2, 16x16), ``8-9``, ``10-11`` (stride 2, 8x8), ``12-13``, and the
    1x1 class conv ``14``."""
    layers: list[nn.Module] = []
    for cin, cout in ((3, 8), (8, 16), (16, 32)):
        layers += _block(cin, cout, batchnorm) + _block(cout, cout, batchnorm, stride=2)
    layers += _block(32, 64, batchnorm) + [nn.Conv2d(64, classes, 1)]
    return _he_init(ShapesNet(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten()))


#: The course's classifiers (each takes ``classes`` and ``batchnorm``).
ARCHITECTURES: dict[str, Callable[..., ShapesNet]] = {
    "shapes-cnn": shapes_cnn,
    "shapes-gap": shapes_gap,
    "shapes-allconv": shapes_allconv,
}

#: The course's vision transformer (chapter 11, :mod:`vismap.vit`), trained on the same scenes.
TRANSFORMERS: dict[str, Callable[..., ShapesViT]] = {"shapes-vit": shapes_vit}

#: Every whole model shipped in ``data/``: the classifiers, the ViT and chapter 07's two VAEs
#: (``sprites-vae`` on one sprite; ``sprites2-vae``, with a Spatial Broadcast Decoder, on
#: two-object scenes).
PRETRAINED: dict[str, Callable[[], nn.Module]] = {
    **ARCHITECTURES,
    **TRANSFORMERS,
    "sprites-vae": SpritesVAE,
    "sprites2-vae": BroadcastVAE,
}

#: The encoder-only checkpoints of chapter 07's controlled experiment (factor maps need only
#: the encoder): ``sprites2-vae`` at three steps of its training, the same model trained without
#: the total-correlation term, and a SpritesVAE (transposed-convolution decoder) trained on the
#: same scenes. :func:`load_pretrained` gives them without a decoder.
ENCODERS: dict[str, Callable[[], SpritesVAE]] = {
    "sprites2-vae-step1000": BroadcastVAE,
    "sprites2-vae-step3000": BroadcastVAE,
    "sprites2-vae-step5000": BroadcastVAE,
    "sprites2-vae-no-tc": BroadcastVAE,
    "sprites2-vae-deconv": SpritesVAE,
}


class _NoDecoder(nn.Module):
    """Stands in for the decoder of an encoder-only checkpoint, and says so when called."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            f"{self.name} is an encoder-only checkpoint (chapter 07's controlled experiment): "
            f"it encodes and explains, but has no decoder; load 'sprites2-vae' to decode"
        )


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint in ``data/`` is missing, truncated or does not match its manifest."""


def data_dir() -> Path:
    """The folder of checkpoints: ``$VISMAP_DATA`` if set, else the repository's ``data/``."""
    env = os.environ.get("VISMAP_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def read_manifest(folder: Path | None = None) -> dict:
    """``data/MANIFEST.json``: for each file, how it was made, its seed, metrics and sha256."""
    path = (folder or data_dir()) / "MANIFEST.json"
    if not path.exists():
        raise CheckpointError(f"no manifest at {path}; run `make train` to make the checkpoints")
    return json.loads(path.read_text())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_pretrained(name: str, folder: Path | None = None) -> nn.Module:
    """Load one of the course's trained models from ``data/``, in eval mode.

    The file's sha256 is checked against ``data/MANIFEST.json`` first, then the tensors are
    read with ``torch.load(..., weights_only=True)`` (no code in a checkpoint is ever run).

    Args:
        name: one of :data:`PRETRAINED` (``"shapes-cnn"``, ``"shapes-gap"``, ``"sprites-vae"``,
            ``"shapes-allconv"``, ``"shapes-vit"``, ``"sprites2-vae"``) or :data:`ENCODERS`
            (encoder only: its ``decode`` raises).
        folder: where the checkpoints are; default :func:`data_dir`.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        CheckpointError: a missing, truncated or tampered file (``make train`` remakes it).
    """
    if name not in PRETRAINED and name not in ENCODERS:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join([*PRETRAINED, *ENCODERS])}"
        )
    folder = Path(folder) if folder is not None else data_dir()
    path = folder / f"{name}.pt"
    entry = read_manifest(folder).get("files", {}).get(path.name)
    remake = "run `make train` (or `python -m vismap.train`) to remake it"
    if entry is None:
        raise CheckpointError(f"{path.name} is not listed in {folder / 'MANIFEST.json'}; {remake}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} is missing; {remake}")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is truncated or changed: its sha256 is {digest[:12]}..., the "
            f"manifest says {entry['sha256'][:12]}...; {remake}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model: nn.Module
        if name in ENCODERS:
            encoder = ENCODERS[name]()
            encoder.decoder = _NoDecoder(name)
            model = encoder
        else:
            model = PRETRAINED[name]()
        model.load_state_dict(state)
    except Exception as err:  # unreadable or wrong tensors despite a matching hash
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({err}); {remake}") from err
    return model.eval()
