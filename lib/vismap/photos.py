"""Real photos with torchvision's ImageNet models (the appendix, notebook 09).

Use them as ``vm.models.imagenet``, ``vm.models.load_photo`` and so on: :mod:`vismap.models`
re-exports every public name of this module (the same objects), and that is the course's one
import path for models, the small ones and the ImageNet ones alike. This module holds the
implementation.

* :func:`imagenet` - VGG16, ResNet-18 or ResNet-50 with torchvision's ImageNet weights (from the
  torch hub cache, or downloaded once), their 1000 class names and their preprocessing; or the
  same network with random weights, which needs no file at all.
* :func:`load_photo` - scikit-image's bundled photos (:data:`PHOTOS`: ``chelsea`` the cat,
  ``coffee``, ``astronaut``, ``rocket``) or any image file, as an RGB ``uint8`` array.

The weights are the files torchvision itself uses, kept in ``torch.hub.get_dir()/checkpoints``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). Nothing is
downloaded when the file is there. When it is not, :func:`imagenet` first checks in a few
seconds that ``download.pytorch.org`` can be reached, and otherwise raises
:class:`WeightsUnavailableError`, whose message says which file to put where. Set
``VISMAP_OFFLINE=1`` to never try a download.

    >>> import vismap as vm
    >>> net = vm.models.imagenet("resnet50", weights=None)   # random weights, offline
    >>> x = net.preprocess(vm.models.load_photo("chelsea"))  # (1, 3, 224, 224)
    >>> net.predict(x, k=3)[0]                               # [(class name, probability), ...]
"""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from torchvision.models import WeightsEnum

ImageLike = Union[np.ndarray, "PILImage"]
"""An ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array, or a PIL image."""
Weights = Union[str, None, "WeightsEnum"]
"""``"imagenet"``, ``None`` or ``"random"``, a torchvision weights member or its name."""

__all__ = [
    "PHOTOS",
    "ImageNetModel",
    "WeightsUnavailableError",
    "imagenet",
    "load_photo",
    "weights_path",
]

PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket")
"""The bundled photos :func:`load_photo` knows by name (``skimage.data.<name>()``)."""

# name -> (torchvision builder, its weights enum, the default member, suggested layers)
# VGG16's features: conv/ReLU pairs, max-pools at 4, 9, 16, 23, 30; conv5_3's ReLU is 29 (14x14).
# ResNet's stages: layer1 56x56, layer2 28x28, layer3 14x14, layer4 7x7 (for a 224x224 input).
_SPECS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "vgg16": (
        "vgg16",
        "VGG16_Weights",
        "IMAGENET1K_V1",
        {
            "last_conv": "features.29",
            "conv5_3": "features.29",
            "conv4_3": "features.22",
            "conv3_3": "features.15",
        },
    ),
    "resnet50": (
        "resnet50",
        "ResNet50_Weights",
        "IMAGENET1K_V1",
        {"last_conv": "layer4", "layer4": "layer4", "layer3": "layer3", "layer2": "layer2"},
    ),
    "resnet18": (
        "resnet18",
        "ResNet18_Weights",
        "IMAGENET1K_V1",
        {"last_conv": "layer4", "layer4": "layer4", "layer3": "layer3", "layer2": "layer2"},
    ),
}
IMAGENET_ARCHITECTURES: tuple[str, ...] = tuple(_SPECS)
"""The torchvision architectures :func:`imagenet` builds."""

_RANDOM = (None, "random")


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights are neither in the torch hub cache nor downloadable now."""


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass
class ImageNetModel:
    """A torchvision ImageNet classifier with what explaining it needs.

    Attributes:
        name: the architecture (``"vgg16"``, ``"resnet50"``, ...).
        model: the network, in eval mode; ``model(x)`` gives ``(n, 1000)`` logits.
        categories: the 1000 class names, index = class (``categories[281] == "tabby"``).
        layers: suggested layers to explain, by a readable name: ``"last_conv"`` (Grad-CAM's
            choice) and a few earlier ones, e.g. ``{"last_conv": "layer4", "layer3": ...}``.
        weights: the torchvision weights loaded (``"ResNet50_Weights.IMAGENET1K_V1"``), or
            ``None`` for random weights.
        resize_size, crop_size, mean, std: the preprocessing of those weights, see
            :meth:`preprocess`.
    """

    name: str
    model: nn.Module = field(repr=False)
    categories: list[str] = field(repr=False)
    layers: dict[str, str]
    weights: str | None
    resize_size: int
    crop_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: Any = field(repr=False, default=None)

    @property
    def pretrained(self) -> bool:
        """True when the ImageNet weights are loaded, False for random weights."""
        return self.weights is not None

    def crop(self, image: ImageLike) -> np.ndarray:
        """The part of ``image`` the network sees: the shorter side resized to ``resize_size``
        (bilinear, antialiased), then the central ``crop_size x crop_size`` square.

        ``image``: an ``(H, W, 3)`` or ``(H, W)`` uint8 array or a PIL image.
        Returns ``(crop_size, crop_size, 3)`` uint8.
        """
        from torchvision.transforms import functional as TF

        array = _as_rgb_array(image)  # a read-only array (a cached photo) is copied, not shared
        array = array if array.flags.writeable else array.copy()
        pixels = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W) uint8
        pixels = TF.resize(
            pixels, [self.resize_size], interpolation=self.interpolation, antialias=True
        )
        return TF.center_crop(pixels, [self.crop_size]).permute(1, 2, 0).numpy()

    def normalize(self, crop: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``x = (crop / 255 - mean) / std`` per channel: ``(h, w, 3)`` uint8 -> ``(1, 3, h, w)``
        float32."""
        pixels = torch.as_tensor(np.asarray(crop)).permute(2, 0, 1).float() / 255
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        return ((pixels - mean) / std)[None]

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """The network's input for ``image``: :meth:`crop`, then :meth:`normalize`.

        The same steps, with the same numbers, as torchvision's ``weights.transforms()``
        (resize 256, centre crop 224, ImageNet mean and std). ``(1, 3, 224, 224)`` float32.
        """
        return self.normalize(self.crop(image))

    def denormalize(self, x: torch.Tensor) -> np.ndarray:
        """Back from the network's input ``x (1, 3, h, w)`` (or ``(3, h, w)``) to an image
        ``(h, w, 3)`` in [0, 1], for display."""
        x = x.detach().reshape(3, *x.shape[-2:]).cpu()
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

    def index(self, category: str) -> int:
        """The class index of a category name (``"tiger cat"`` -> 282)."""
        try:
            return self.categories.index(category)
        except ValueError:
            import difflib

            close = difflib.get_close_matches(category, self.categories, n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(map(repr, close))}" if close else ""
            raise ValueError(f"unknown category {category!r} for {self.name}{hint}") from None

    @torch.no_grad()
    def predict(self, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each image of ``x (n, 3, h, w)``: one list of
        ``(category, softmax probability)`` per image, most probable first."""
        probs = self.model(x).softmax(1)
        top = probs.topk(k, dim=1)
        return [
            [(self.categories[int(c)], float(p)) for p, c in zip(ps, cs, strict=True)]
            for ps, cs in zip(top.values, top.indices, strict=True)
        ]


def _weights_enum(name: str, weights: Weights) -> WeightsEnum:
    """The torchvision weights member that ``weights`` names for architecture ``name``."""
    import torchvision.models as tvm

    _, enum_name, default, _ = _SPECS[name]
    enum = getattr(tvm, enum_name)
    if weights == "imagenet":
        return enum[default]
    if isinstance(weights, enum):
        return weights
    if isinstance(weights, str) and weights in enum.__members__:
        return enum[weights]
    valid = ["'imagenet'", "None", "'random'"] + [f"{enum_name}.{m}" for m in enum.__members__]
    raise ValueError(f"unknown weights {weights!r} for {name}; valid: {', '.join(valid)}")


def weights_path(name: str, weights: Weights = "imagenet") -> Path:
    """Where the weights file of ``name`` is cached: ``torch.hub.get_dir()/checkpoints/<file>``,
    the file name being the last part of torchvision's URL (``vgg16-397923af.pth``)."""
    _check_name(name)
    enum = _weights_enum(name, weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(enum.url).path).name


def _check_name(name: str) -> None:
    if name not in _SPECS:
        raise ValueError(
            f"unknown architecture {name!r}; supported: {', '.join(IMAGENET_ARCHITECTURES)}"
        )


def imagenet(
    name: str, weights: Weights = "imagenet", *, seed: int = 0, timeout: float = 3.0
) -> ImageNetModel:
    """A torchvision ImageNet classifier, in eval mode, with its class names and preprocessing.

    Args:
        name: ``"vgg16"`` (Simonyan & Zisserman 2015; the network of the Grad-CAM paper),
            ``"resnet50"`` (He et al. 2016) or ``"resnet18"``.
        weights: ``"imagenet"`` for torchvision's ImageNet weights:
            ``VGG16_Weights.IMAGENET1K_V1`` (71.6 % top-1), ``ResNet50_Weights.IMAGENET1K_V1``
            (the original weights of the Grad-CAM era, 76.1 %; pass ``"IMAGENET1K_V2"`` or the
            enum member for the 80.9 % ones, trained with a newer recipe) or
            ``ResNet18_Weights.IMAGENET1K_V1``. ``None`` or ``"random"`` for torchvision's
            random initialisation (no file needed). Or a torchvision weights member of this
            architecture, or its name.
        seed: the seed of the random weights (they do not change the global random state).
        timeout: seconds allowed to find out whether the weights can be downloaded.

    The class names come from the weights' metadata (``weights.meta["categories"]``) and the
    preprocessing from ``weights.transforms()``; a random network gets the same names and
    preprocessing, so that the same code runs on both.

    Raises:
        ValueError: an unknown architecture or weights (the message lists the valid ones).
        WeightsUnavailableError: the weights file is not cached and cannot be downloaded now
            (offline, or ``VISMAP_OFFLINE=1``); the message names the file and the folder to
            copy it into. A cached file that cannot be read raises it too.
    """
    _check_name(name)
    builder_name, enum_name, default, layers = _SPECS[name]
    import torchvision.models as tvm

    builder = getattr(tvm, builder_name)
    if weights in _RANDOM:
        meta_weights = getattr(tvm, enum_name)[default]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(weights=None)
        loaded = None
    else:
        meta_weights = _weights_enum(name, weights)
        state = _load_state(name, meta_weights, timeout)  # first: fail before building
        model = builder(weights=None)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:  # missing or unexpected tensors, wrong shapes
            raise WeightsUnavailableError(
                f"{weights_path(name, meta_weights)} does not hold {name}'s weights ({err}); "
                f"delete it and run imagenet({name!r}) again while online"
            ) from err
        loaded = str(meta_weights)
    t = meta_weights.transforms()
    return ImageNetModel(
        name=name,
        model=model.eval(),
        categories=list(meta_weights.meta["categories"]),
        layers=dict(layers),
        weights=loaded,
        resize_size=int(t.resize_size[0]),
        crop_size=int(t.crop_size[0]),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation,
    )


def _load_state(name: str, weights: WeightsEnum, timeout: float) -> dict[str, torch.Tensor]:
    """The state dict of ``weights``: from the cache, else downloaded into it (if reachable)."""
    path = weights_path(name, weights)
    if not path.exists():
        _download(name, weights, path, timeout)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise WeightsUnavailableError(
            f"the cached weights {path} cannot be read ({type(err).__name__}: {err}); delete "
            f"the file and run imagenet({name!r}) again while online to download it anew"
        ) from err


def _how_to_get(name: str, weights: WeightsEnum, path: Path) -> str:
    size = weights.meta.get("_file_size")
    return (
        f"To get them, run vm.models.imagenet({name!r}) once while online, or download "
        f"{weights.url}{f' ({size:.0f} MB)' if size else ''} on another machine and copy "
        f"the file {path.name} into {path.parent} (torch.hub.get_dir()/checkpoints; set "
        f"$TORCH_HOME to use another folder). For an untrained network, pass weights=None."
    )


def _download(name: str, weights: WeightsEnum, path: Path, timeout: float) -> None:
    """Download ``weights.url`` to ``path`` (its SHA-256 prefix checked), failing fast offline."""
    host = urlparse(weights.url).hostname
    if os.environ.get("VISMAP_OFFLINE", "") not in ("", "0"):
        reason = "VISMAP_OFFLINE is set"
    elif not _reachable(weights.url, timeout):
        reason = f"{host} cannot be reached (offline?)"
    else:
        reason = None
    if reason is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            match = re.search(torch.hub.HASH_REGEX, path.name)
            torch.hub.download_url_to_file(
                weights.url, str(path), match.group(1) if match else None, progress=True
            )
            return
        except Exception as err:  # URLError, a timeout, a hash mismatch, a full disk ...
            reason = f"downloading {weights.url} failed ({type(err).__name__}: {err})"
    raise WeightsUnavailableError(
        f"the ImageNet weights of {name} ({weights}) are not cached "
        f"and {reason}. {_how_to_get(name, weights, path)}"
    )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host (or the HTTPS proxy) opens within ``timeout``
    seconds. Name resolution runs in a thread too, so a dead DNS cannot hang the caller."""
    proxy = urllib.request.getproxies().get("https")
    target = urlparse(proxy if proxy else url)
    address = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
    opened: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


# --------------------------------------------------------------------------------------------
# Photos
# --------------------------------------------------------------------------------------------


def load_photo(photo: str | os.PathLike[str]) -> np.ndarray:
    """A photo as an RGB ``(H, W, 3)`` uint8 array.

    Args:
        photo: one of :data:`PHOTOS` (scikit-image's bundled ``chelsea``, ``coffee``,
            ``astronaut``, ``rocket``), or the path of an image file (anything PIL reads: PNG,
            JPEG, ...). A grayscale image is repeated into three channels, an alpha channel is
            dropped, 16-bit images are scaled to 8 bits.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not an image PIL can read (the message names it).
    """
    if isinstance(photo, str) and photo in PHOTOS:
        import skimage.data

        return _as_rgb_array(getattr(skimage.data, photo)())
    if not isinstance(photo, (str, os.PathLike)):
        raise TypeError(
            f"photo must be a name ({', '.join(PHOTOS)}) or a path, got {type(photo).__name__}"
        )
    path = Path(photo)
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"image {str(path)!r} {what}; give an image file or one of "
            f"the bundled photos: {', '.join(PHOTOS)}"
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return _as_rgb_array(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{str(path)!r} is not an image file that PIL can read ({err})") from err


def _as_rgb_array(image: ImageLike) -> np.ndarray:
    """A PIL image or an ``(H, W)``, ``(H, W, 1|3|4)`` array -> RGB ``(H, W, 3)`` uint8."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = np.asarray(image)  # high bit depth: scaled below
        else:
            return np.asarray(image.convert("RGB")).copy()
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        if pixels.dtype == np.uint16:
            pixels = pixels // 257
        elif pixels.dtype.kind == "f" and pixels.size and 0 <= pixels.min() and pixels.max() <= 1:
            pixels = np.round(pixels * 255)
        else:  # other ranges: stretch to 0 .. 255
            low, high = float(pixels.min()), float(pixels.max())
            pixels = (pixels.astype(np.float64) - low) * (255 / max(high - low, 1e-12))
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)  # grayscale -> RGB
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(
            f"an image must have shape (H, W), (H, W, 3) or (H, W, 4), got {pixels.shape}"
        )
    return np.ascontiguousarray(pixels[:, :, :3])  # RGBA: drop alpha
