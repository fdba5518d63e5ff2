"""Interactive explorers for JupyterLab: change a control, see the map change.

* :func:`explorer` - pick a Shapes image (or draw a new random scene, with one object or two),
  a target class, an explanation method of the registry :data:`vismap.explain.METHODS` and a
  layer; see the map laid over the image, with the target's score ``y^c`` and softmax
  probability.
* :func:`latent_explorer` - one slider per latent dimension ``z_i`` of the sprites VAE gives
  the decoded sprite ``sigmoid(decode(z))``; a dropdown picks the dimension whose factor
  activation map (:func:`vismap.explain.factor_cam`) is laid over the image.

The widgets are ipywidgets 8 controls around an ``Output`` that shows a figure drawn with the
inline matplotlib backend. All the work is done by two plain functions, :func:`render_explorer`
and :func:`render_latents`: they take the controls' values and return the figure with the
numbers it shows. The widgets only call them when a control changes, so the logic is tested
without a browser, and the same figure can be made without any widget::

    >>> import vismap as vm
    >>> model = vm.models.load_pretrained("shapes-cnn")
    >>> image = vm.data.make_shapes(1, seed=7).images[0]          # (3, 64, 64)
    >>> r = vm.widgets.render_explorer(model, image, "circle", "gradcam", "features.9")
    >>> r["score"], r["probability"], r["map"].shape               # y^c, softmax, (1, 1, 64, 64)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython import get_ipython
from IPython.display import display
from torch import nn

from . import data, explain
from ._running import explaining
from .data import HELDOUT_SEED  # images never used for training
from .models import load_pretrained

__all__ = [
    "explorer",
    "latent_explorer",
    "render_explorer",
    "render_latents",
    "classifier_methods",
    "conv_layers",
    "cam_layer",
    "shown_map",
    "Explorer",
    "LatentExplorer",
]

SIZE = 64  # the side of Shapes and Sprites images
ALPHA = 0.6  # opacity of a map laid over its image

# --------------------------------------------------------------------------------------------
# Checking what the reader gives
# --------------------------------------------------------------------------------------------


def _shape(value) -> tuple | str:
    return tuple(value.shape) if hasattr(value, "shape") else type(value).__name__


def _one_image(image, channels: int) -> torch.Tensor:
    """One ``(C, 64, 64)`` or ``(1, C, 64, 64)`` image as a float batch ``(1, C, 64, 64)``."""
    want = (channels, SIZE, SIZE)
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    if tuple(x.shape) == want:
        x = x[None]
    if tuple(x.shape) != (1, *want):
        hint = ""
        if tuple(x.shape[-3:]) == (SIZE, SIZE, channels):
            hint = "; the channels come first: use image.permute(2, 0, 1)"
        elif x.dim() == 4 and tuple(x.shape[1:]) == want:
            hint = "; one image at a time: pass images[i]"
        raise ValueError(
            f"expected an image of shape {want} or {(1, *want)}, got {_shape(image)}{hint}"
        )
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point image with values in [0, 1], got {x.dtype}")
    return x.detach().float()


def _image_batch(images) -> torch.Tensor:
    """Shapes images ``(n, 3, 64, 64)``, or one ``(3, 64, 64)``, as a float batch."""
    want = (3, SIZE, SIZE)
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if tuple(x.shape) == want:
        x = x[None]
    if x.dim() != 4 or tuple(x.shape[1:]) != want or len(x) == 0:
        raise ValueError(
            f"expected images of shape (n, 3, {SIZE}, {SIZE}) or one image "
            f"{want}, got {_shape(images)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"expected floating-point images with values in [0, 1], got {x.dtype}")
    return x.detach().float()


def _class_index(target, classes: Sequence[str]) -> int:
    """A class given by name or index, as an index into ``classes``."""
    if isinstance(target, str):
        if target not in classes:
            raise ValueError(
                f"unknown target class {target!r}; valid classes: {', '.join(classes)}"
            )
        return list(classes).index(target)
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        target = target.item()
    if (
        isinstance(target, (int, np.integer))
        and not isinstance(target, bool)
        and 0 <= target < len(classes)
    ):
        return int(target)
    raise ValueError(
        f"target must be a class name or an index 0 .. {len(classes) - 1} "
        f"({', '.join(classes)}), got {target!r}"
    )


def classifier_methods(model: nn.Module | None = None) -> list[str]:
    """The names of the registry's methods (:data:`vismap.explain.METHODS`) that explain a
    classifier's class: the explorer's choices (CAM only for a GAP network). Given a ``model``,
    only those whose needs it meets (:meth:`vismap.explain.Method.unmet`: the attention methods
    for a transformer, the ReLU rules for a network with ``nn.ReLU`` modules)."""
    return [
        m.name
        for m in explain.METHODS.values()
        if "VAE" not in m.needs and (model is None or m.unmet(model) is None)
    ]


def conv_layers(model: nn.Module) -> list[str]:
    """The dotted names of the layers a coarse-grained method can look at, in order: the
    ``nn.Conv2d`` layers of ``model`` and, for a transformer that declares its token grid
    (``token_grid``, as :class:`vismap.vit.ShapesViT`), its blocks but the last: a class-token
    head reads nothing of the last block but the class token, so maps there are zero
    (chapter 11)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    blocks = getattr(model, "blocks", None)
    if getattr(model, "token_grid", None) is not None and isinstance(blocks, nn.Sequential):
        names += [f"blocks.{i}" for i in range(len(blocks) - 1)]
    return names


def _check_layer(model: nn.Module, layer: str) -> None:
    names = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in names or layer == "":
        raise ValueError(
            f"unknown layer {layer!r}; the layers of this model a map can look at: "
            f"{', '.join(conv_layers(model))}"
        )


def cam_layer(model: nn.Module, channels: int = 3) -> str | None:
    """The layer at which CAM holds for ``model`` (its scores are ``W mean_ij(A) + b`` of that
    layer's output ``A``), or None when the model is not a GAP network.

    Found by trying CAM on a blank image at each conv layer and ReLU, from the last one back.
    """
    x = torch.zeros(1, channels, SIZE, SIZE)
    candidates = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ReLU))]
    for name in reversed(candidates):
        try:
            explain.cam(model, x, 0, layer=name)
            return name
        except (ValueError, RuntimeError):
            continue
    return None


def shown_map(maps: torch.Tensor) -> np.ndarray:
    """The ``(H, W)`` array drawn for the maps ``(1, C, H, W)`` of one image: a one-channel map
    as it is; a map per colour channel (the gradient methods) as its magnitude
    ``max_c |M_c|`` (Simonyan et al. 2014)."""
    m = maps[0].detach().cpu()
    return (m.abs().amax(0) if m.shape[0] > 1 else m[0]).numpy()


def _colours(shown: np.ndarray) -> dict:
    """``imshow`` options: a signed map on a symmetric red-blue scale around zero, a
    non-negative one on magma from zero (the course's colour maps)."""
    top = float(np.abs(shown).max()) or 1.0  # an all-zero map still gets a valid scale
    if shown.min() < 0:
        return dict(cmap="RdBu_r", vmin=-top, vmax=top)
    return dict(cmap="magma", vmin=0.0, vmax=top)


def _rgb(x: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` -> an ``(H, W, C)`` (or ``(H, W)``) array for ``imshow``."""
    a = x[0].permute(1, 2, 0).clamp(0, 1).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


# --------------------------------------------------------------------------------------------
# The explorer
# --------------------------------------------------------------------------------------------


def render_explorer(
    model: nn.Module,
    image,
    target,
    method: str,
    layer: str | None = None,
    ax=None,
    *,
    caption: str | None = None,
    classes: Sequence[str] = data.SHAPE_CLASSES,
) -> dict:
    """The explorer's figure for one choice of its controls.

    Runs the registry's method (:func:`vismap.explain.get_method`, with its default options
    and torch's random generator seeded with 0, so that SmoothGrad's map is the same at every
    call) on one image for one target class and draws the image, the map and the map laid over
    the image. The overlay's title gives the target's score ``y^c`` (the logit) and its softmax
    probability ``p_c = exp(y^c) / sum_k exp(y^k)``.

    Args:
        model: a Shapes classifier (``(n, 3, 64, 64) -> (n, classes)``).
        image: ``(3, 64, 64)`` or ``(1, 3, 64, 64)``, values in [0, 1].
        target: a class name of ``classes`` or its index.
        method: a name of :data:`vismap.explain.METHODS` (``"gradcam"``) or its title
            (``"Grad-CAM"``).
        layer: for the methods that look at a layer, the dotted name of a layer (default: the
            last conv layer, or for CAM the layer where CAM holds); ignored by the others.
        ax: draw only the overlay, into these axes; default a new figure with three panels.
        caption: the image panel's title (e.g. its true class).

    Returns:
        dict with ``figure``, ``axes``, ``map`` (the method's output ``(1, C, 64, 64)``),
        ``shown`` (the ``(64, 64)`` array drawn, :func:`shown_map`), ``score``,
        ``probability``, ``predicted`` (class index), ``target`` (index), ``method`` (the
        registry name), ``layer`` and ``title``.
    """
    x = _one_image(image, 3)
    entry = explain.get_method(method)
    if "VAE" in entry.needs:
        raise ValueError(
            f"method {entry.name!r} explains a VAE's latent factors; the explorer "
            f"explains a classifier: use latent_explorer, or one of "
            f"{', '.join(classifier_methods())}"
        )
    unmet = entry.unmet(model)
    if unmet is not None:
        raise ValueError(
            f"method {entry.name!r} {unmet}, and this {type(model).__name__} has none; use one "
            f"of {', '.join(classifier_methods(model))}"
        )
    target = _class_index(target, classes)
    if entry.layered:
        if layer is None:  # for CAM, where it holds; else (or if it holds nowhere) the last conv
            layer = (entry.name == "cam" and cam_layer(model)) or (conv_layers(model) or [""])[-1]
        _check_layer(model, layer)
    else:
        layer = None
    with explaining(model), torch.no_grad():
        logits = model(x)
    if logits.shape != (1, len(classes)):
        raise ValueError(
            f"the model returns {tuple(logits.shape)} for one image; the explorer "
            f"needs one score per class, (1, {len(classes)})"
        )
    score = float(logits[0, target])
    probability = float(logits.softmax(1)[0, target])
    predicted = int(logits.argmax(1))

    with torch.random.fork_rng(devices=[]):  # the same map at every call; the caller's RNG kept
        torch.manual_seed(0)
        maps = entry(model, x, target, layer=layer).detach()
    shown = shown_map(maps)
    colours = _colours(shown)
    where = f" at {layer}" if layer else ""
    title = (
        f"{entry.title}{where} for '{classes[target]}'\n"
        f"score y = {score:.2f}, p = {probability:.1%}"
    )

    if ax is None:
        fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.7), layout="constrained")
        axes[0].imshow(_rgb(x))
        axes[0].set_title(f"{caption or 'image'}\npredicted: {classes[predicted]}")
        im = axes[1].imshow(shown, **colours)
        what = (
            "$\\max_c |M_c|$ over colours"
            if maps.shape[1] > 1
            else ("signed: red for, blue against" if shown.min() < 0 else "$M$")
        )
        axes[1].set_title(f"the map{' (zero everywhere)' if not shown.any() else ''}\n{what}")
        fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="map value")
        overlay = axes[2]
    else:
        fig, axes, overlay = ax.figure, [ax], ax
    overlay.imshow(_rgb(x))
    overlay.imshow(shown, alpha=ALPHA, **colours)
    overlay.set_title(title)
    for a in axes:
        a.set(xticks=[], yticks=[])
    return dict(
        figure=fig,
        axes=list(axes),
        map=maps,
        shown=shown,
        score=score,
        probability=probability,
        predicted=predicted,
        target=target,
        method=entry.name,
        layer=layer,
        title=title,
    )


class _Panel(widgets.VBox):
    """A column of controls above an ``Output`` that shows the latest figure (or the error
    message of a bad choice). ``result`` is the latest render's dict; ``error`` its message."""

    result: dict | None
    error: str | None
    output: widgets.Output

    def _show(self, render: Callable[[], dict]) -> None:
        self.error = None
        try:
            self.result = render()
        except ValueError as err:  # a bad combination: say why, keep the widget alive
            self.result, self.error = None, str(err)
        if get_ipython() is None:  # no kernel (a test): keep the result, show nothing
            if self.result is not None:
                plt.close(self.result["figure"])
            return
        with self.output:
            self.output.clear_output(wait=True)
            if self.error is not None:
                print(f"ValueError: {self.error}")
            elif self.result is not None:
                display(self.result["figure"])
                plt.close(self.result["figure"])  # shown once, here; not again after the cell


class Explorer(_Panel):
    """The widget that :func:`explorer` returns. ``controls`` holds its ipywidgets by name
    (``image``, ``scene``, ``two_objects``, ``model``, ``target``, ``method``, ``layer``);
    ``scenes`` the ``(image, caption, class)`` triples the image slider walks through (when
    the image changes, the target becomes its class: the first object's in a two-object
    scene, the predicted one for unlabelled images)."""

    def __init__(
        self,
        choices: dict[str, nn.Module],
        images: torch.Tensor,
        labels: torch.Tensor | None,
        classes: Sequence[str] = data.SHAPE_CLASSES,
    ):
        self.models, self.classes = choices, tuple(classes)
        self.result, self.error, self._hold = None, None, True
        self._cam_layers: dict[int, str | None] = {}
        self.scenes = [
            (
                img,
                f"image {i}" + (f": {self._names(labels[i])}" if labels is not None else ""),
                self._first(labels[i]) if labels is not None else None,
            )
            for i, img in enumerate(images)
        ]
        self._seeds = np.random.default_rng()
        style = dict(description_width="initial")
        first = self.models[next(iter(self.models))]
        c = self.controls = dict(
            image=widgets.IntSlider(
                0, 0, len(self.scenes) - 1, description="image", continuous_update=False
            ),
            scene=widgets.Button(
                description="new scene",
                icon="random",
                tooltip="draw a random Shapes scene with a new seed",
            ),
            two_objects=widgets.Checkbox(False, description="two objects", indent=False),
            model=widgets.Dropdown(options=list(self.models), description="model"),
            target=widgets.Dropdown(
                options=[(n, i) for i, n in enumerate(self.classes)],
                description="target",
                style=style,
            ),
            method=widgets.Dropdown(
                options=self._methods(first), value="gradcam", description="method"
            ),
            layer=widgets.Dropdown(options=self._layers(first), description="layer"),
        )
        c["layer"].value = conv_layers(first)[-1]
        c["target"].value = self._class_of(0)
        c["model"].layout.display = None if len(self.models) > 1 else "none"
        self.output = widgets.Output()
        super().__init__(
            [
                widgets.HBox([c["image"], c["scene"], c["two_objects"]]),
                widgets.HBox([c["model"], c["target"], c["method"], c["layer"]]),
                self.output,
            ]
        )
        self.add_class("vismap-explorer")  # CSS names: a browser test finds the controls
        for name, control in c.items():
            control.add_class(f"vismap-{name}")
        for name in ("image", "target", "method", "layer", "model"):
            c[name].observe(self._changed, names="value")
        c["scene"].on_click(lambda _button: self.new_scene())
        self._hold = False
        self.update()

    def _names(self, label) -> str:
        return " + ".join(self.classes[int(k)] for k in torch.as_tensor(label).flatten())

    @staticmethod
    def _first(label) -> int:
        return int(torch.as_tensor(label).flatten()[0])

    def _class_of(self, index: int) -> int:
        """The target an image starts with: its (first) true class, else the predicted one."""
        image, _, label = self.scenes[index]
        if label is not None:
            return label
        model = self.models[self.controls["model"].value]
        with explaining(model), torch.no_grad():
            return int(model(image[None]).argmax(1))

    def _methods(self, model: nn.Module) -> list[tuple[str, str]]:
        """``(title, name)`` of the methods offered for ``model``."""
        return [
            (explain.METHODS[m].title, m)
            for m in classifier_methods(model)
            if m != "cam" or self._cam_layer(model) is not None
        ]

    def _cam_layer(self, model: nn.Module) -> str | None:
        if id(model) not in self._cam_layers:  # found once per model: a few forwards
            self._cam_layers[id(model)] = cam_layer(model)
        return self._cam_layers[id(model)]

    def _layers(self, model: nn.Module) -> list[tuple[str, str]]:
        modules = dict(model.named_modules())
        names = conv_layers(model)
        extra = self._cam_layer(model)
        if extra is not None and extra not in names:
            names.append(extra)
        return [(f"{n} ({type(modules[n]).__name__})", n) for n in names]

    def _changed(self, change) -> None:
        if self._hold:
            return
        c, self._hold = self.controls, True
        try:
            model = self.models[c["model"].value]
            if change["owner"] is c["image"]:  # another image: explain its (first) class
                c["target"].value = self._class_of(c["image"].value)
            if change["owner"] is c["model"]:  # another model: its methods and its layers
                method = c["method"].value
                c["method"].options = self._methods(model)
                names = [name for _, name in c["method"].options]
                c["method"].value = method if method in names else "gradcam"
                c["layer"].options = self._layers(model)
                c["layer"].value = conv_layers(model)[-1]
            if c["method"].value == "cam" and change["owner"] is not c["layer"]:
                c["layer"].value = self._cam_layer(model)  # the one layer where CAM holds
            c["layer"].disabled = not explain.METHODS[c["method"].value].layered
        finally:
            self._hold = False
        self.update()

    def new_scene(self) -> None:
        """Draw a random Shapes scene (one object, or two if ticked) and show it."""
        seed = int(self._seeds.integers(2, 2**31))  # seed 1 made the training images
        objects = 2 if self.controls["two_objects"].value else 1
        scene = data.make_shapes(1, seed=seed, objects=objects)
        self.scenes.append(
            (
                scene.images[0],
                f"new scene, seed {seed}: {self._names(scene.labels[0])}",
                self._first(scene.labels[0]),
            )
        )
        self.controls["image"].max = len(self.scenes) - 1
        self.controls["image"].value = len(self.scenes) - 1  # -> update

    def update(self) -> None:
        """Render the figure for the controls' current values into the output."""
        c = self.controls
        image, caption, _ = self.scenes[c["image"].value]
        method = c["method"].value
        self._show(
            lambda: render_explorer(
                self.models[c["model"].value],
                image,
                c["target"].value,
                method,
                c["layer"].value if explain.METHODS[method].layered else None,
                caption=caption,
                classes=self.classes,
            )
        )


def _load(model: nn.Module | str) -> nn.Module:
    return load_pretrained(model) if isinstance(model, str) else model


def explorer(
    model: nn.Module | str | None = None,
    images=None,
    labels=None,
    *,
    models: dict | Sequence[str] | None = None,
) -> Explorer:
    """An interactive explorer of the explanation methods on Shapes images.

    The reader picks an image (the slider) or draws a new random scene (one object, or two:
    the "cat and dog" scenes), a target class, a method of :data:`vismap.explain.METHODS`
    (CAM only for a GAP network) and, for the methods that look at a layer, a conv layer, and
    sees the map laid over
    the image with the target's score and probability (:func:`render_explorer`).

    Args:
        model: a Shapes classifier or the name of a course model; default ``"shapes-cnn"``.
        images: ``(n, 3, 64, 64)`` or one ``(3, 64, 64)``; default 16 held-out images.
        labels: their classes ``(n,)`` (or ``(n, 2)`` for two-object scenes), shown as
            captions; default the held-out images' labels, or none for given images.
        models: instead of ``model``, several to choose from: a dict name -> model, or names
            of course models (``["shapes-cnn", "shapes-gap"]``); adds a model dropdown.

    Returns:
        an :class:`Explorer` (an ``ipywidgets.VBox``); display it as a cell's last value.
    """
    if model is not None and models is not None:
        raise ValueError("give either `model` or `models`, not both")
    if models is None:
        model = "shapes-cnn" if model is None else model
        models = {model if isinstance(model, str) else type(model).__name__: model}
    elif not isinstance(models, dict):
        models = {name: name for name in models}
    if not models:
        raise ValueError("`models` is empty; give at least one model")
    models = {name: _load(m) for name, m in models.items()}
    if images is None:
        if labels is not None:
            raise ValueError("labels were given without images")
        heldout = data.make_shapes(16, seed=HELDOUT_SEED)
        images, labels = heldout.images, heldout.labels
    images = _image_batch(images)
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.dim() == 0:
            labels = labels[None]
        if len(labels) != len(images):
            raise ValueError(
                f"{len(images)} images but {len(labels)} labels; give one label "
                f"(or one pair) per image"
            )
    for name, m in models.items():
        if not conv_layers(m):
            raise ValueError(f"model {name!r} has no nn.Conv2d layer to explain")
    return Explorer(models, images, labels)


# --------------------------------------------------------------------------------------------
# The latent explorer
# --------------------------------------------------------------------------------------------


def _latent_vector(z, latents: int) -> torch.Tensor:
    """``z`` as a ``(1, latents)`` float tensor."""
    v = torch.as_tensor(
        z if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float32), dtype=torch.float32
    ).detach()
    if v.numel() != latents or v.dim() > 2:
        raise ValueError(
            f"z needs {latents} values, shape ({latents},) or (1, {latents}), got {_shape(z)}"
        )
    return v.reshape(1, latents)


def _vae_parts(vae: nn.Module) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """The VAE's latent count and its decoder, or a clear error when it has none."""
    latents, decode = getattr(vae, "latents", None), getattr(vae, "decode", None)
    if not isinstance(latents, int) or not callable(decode):
        raise ValueError(
            f"{type(vae).__name__} is not a VAE the latent widgets can drive: they need an int "
            f"attribute `latents` and a method `decode(z)`, like vismap.vae.SpritesVAE"
        )
    return latents, decode


def _dims(dim, latents: int) -> int | list[int]:
    """A latent dimension, or a list of them (a joint map), checked against ``latents``."""
    dims = [dim] if isinstance(dim, (int, np.integer)) else list(dim)
    if not dims or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and 0 <= d < latents
        for d in dims
    ):
        raise ValueError(
            f"dim must be a latent dimension 0 .. {latents - 1}, or a list of them, got {dim!r}"
        )
    return int(dims[0]) if isinstance(dim, (int, np.integer)) else [int(d) for d in dims]


def render_latents(vae: nn.Module, z, image, dim, ax=None, **factor_options) -> dict:
    """The latent explorer's figure: the factor map of latent ``dim`` on ``image``, and the
    sprite decoded from ``z``.

    Left, the factor activation map of dimension ``dim`` (or of several jointly, ``dim`` a
    list), ``vm.explain.factor_cam(vae, x, dim, **factor_options)``, laid over the image ``x``;
    its title gives the encoder's ``mu_d(x)`` and the dimension's KL to the prior
    ``KL_d = 1/2 (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1)`` (a dimension the VAE does not use
    has ``KL_d ~ 0``). Right, the decoder's mean image ``sigmoid(decode(z))``.

    Args:
        vae: a :class:`vismap.vae.SpritesVAE` (``forward`` returns ``(mu, logvar)``).
        z: the latent vector, ``(latents,)`` or ``(1, latents)``.
        image: a sprite ``(1, 64, 64)`` or ``(1, 1, 64, 64)``.
        dim: a latent dimension, or a list of them.
        ax: two axes to draw into; default a new figure.

    Returns:
        dict with ``figure``, ``axes``, ``sprite`` (``(64, 64)`` decoded from ``z``), ``map``
        (factor_cam's ``(1, 1, 64, 64)``), ``shown`` (the array drawn), ``mu``, ``kl``
        (``(latents,)`` each, of the image) and ``dim``.
    """
    latents, decode = _vae_parts(vae)
    z = _latent_vector(z, latents)
    x = _one_image(image, 1)
    dims = _dims(dim, latents)
    with explaining(vae), torch.no_grad():
        sprite = torch.sigmoid(decode(z))[0, 0]
        mu, logvar = vae(x)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)  # KL_d of each dimension
    maps = explain.factor_cam(vae, x, dims, **factor_options).detach()
    shown = shown_map(maps)
    ds = [dims] if isinstance(dims, int) else dims
    label = "z_{" + ",".join(map(str, ds)) + "}"
    stats = "; ".join(
        f"$\\mu_{{{d}}}$ = {mu[0, d]:.2f}, KL$_{{{d}}}$ = {kl[0, d]:.2f}" for d in ds[:2]
    ) + ("; ..." if len(ds) > 2 else "")

    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.8), layout="constrained")
    else:
        axes = list(ax)
        fig = axes[0].figure
    axes[0].imshow(_rgb(x), cmap="gray", vmin=0, vmax=1)
    im = axes[0].imshow(shown, alpha=ALPHA, **_colours(shown))
    axes[0].set_title(f"factor map of ${label}$ on x\n{stats}", fontsize=10)
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04, label="map value")
    axes[1].imshow(sprite.numpy(), cmap="gray", vmin=0, vmax=1)
    shown_z = ", ".join(f"{z[0, d]:.2f}" for d in ds[:2]) + (", ..." if len(ds) > 2 else "")
    axes[1].set_title(f"decoded: sigmoid(decode(z))\n${label}$ = {shown_z}", fontsize=10)
    for a in axes:
        a.set(xticks=[], yticks=[])
    return dict(
        figure=fig,
        axes=list(axes),
        sprite=sprite.numpy(),
        map=maps,
        shown=shown,
        mu=mu[0],
        kl=kl[0],
        dim=dims,
    )


class LatentExplorer(_Panel):
    """The widget that :func:`latent_explorer` returns. ``sliders`` are the latent
    dimensions' ``FloatSlider`` s; ``controls`` holds ``dim`` (the dimension whose factor map is
    shown) and ``encode`` (the button that sets the sliders to ``mu(x)``)."""

    def __init__(self, vae: nn.Module, image: torch.Tensor, limit: float = 4.0):
        self.vae, self.image = vae, image
        self.result, self.error, self._hold = None, None, True
        latents, _ = _vae_parts(vae)
        self.sliders = [
            widgets.FloatSlider(
                0.0,
                min=-limit,
                max=limit,
                step=0.05,
                description=f"z{d}",
                continuous_update=False,
                readout_format=".2f",
            )
            for d in range(latents)
        ]
        self.controls = dict(
            dim=widgets.Dropdown(
                options=[(f"z{d}", d) for d in range(latents)],
                description="factor map of",
                style=dict(description_width="initial"),
            ),
            encode=widgets.Button(
                description="encode x",
                icon="undo",
                tooltip="set the sliders to the encoder's mean mu(x)",
            ),
        )
        half = (latents + 1) // 2
        self.output = widgets.Output()
        super().__init__(
            [
                widgets.HBox(
                    [widgets.VBox(self.sliders[:half]), widgets.VBox(self.sliders[half:])]
                ),
                widgets.HBox([self.controls["dim"], self.controls["encode"]]),
                self.output,
            ]
        )
        self.add_class("vismap-latent-explorer")  # CSS names: a browser test finds the controls
        for d, slider in enumerate(self.sliders):
            slider.add_class(f"vismap-z{d}")
        for name, control in self.controls.items():
            control.add_class(f"vismap-{name}")
        for control in [*self.sliders, self.controls["dim"]]:
            control.observe(lambda _change: self.update(), names="value")
        self.controls["encode"].on_click(lambda _button: self.encode())
        self._hold = False
        self.encode()

    def encode(self) -> None:
        """Set every slider to the encoder's mean ``mu(x)`` of the image, then render once."""
        with explaining(self.vae), torch.no_grad():
            mu = self.vae(self.image[None])[0][0]
        self._hold = True
        try:
            for slider, value in zip(self.sliders, mu.tolist(), strict=True):
                slider.value = float(np.clip(value, slider.min, slider.max))
        finally:
            self._hold = False
        self.update()

    def update(self) -> None:
        """Render the figure for the sliders' ``z`` and the chosen dimension."""
        if self._hold:
            return
        z = [s.value for s in self.sliders]
        self._show(lambda: render_latents(self.vae, z, self.image, self.controls["dim"].value))


def latent_explorer(vae: nn.Module | str, image=None) -> LatentExplorer:
    """An interactive explorer of a sprites VAE's latent space.

    A slider per latent dimension sets ``z`` (at first the encoder's mean ``mu(x)`` of the
    image) and shows the decoded sprite ``sigmoid(decode(z))``; a dropdown picks the dimension
    whose factor activation map (:func:`vismap.explain.factor_cam`) is laid over the image
    (:func:`render_latents`).

    Args:
        vae: a :class:`vismap.vae.SpritesVAE`, or the name of a course checkpoint
            (``"sprites-vae"``).
        image: a sprite ``(1, 64, 64)`` or ``(1, 1, 64, 64)``; default
            ``vm.data.make_sprites(1, seed=0)``'s.

    Returns:
        a :class:`LatentExplorer` (an ``ipywidgets.VBox``).
    """
    vae = _load(vae)
    if not hasattr(vae, "latents") or not hasattr(vae, "decode"):
        raise ValueError(
            f"latent_explorer needs a VAE with `latents` and `decode(z)` (like "
            f"vismap.vae.SpritesVAE), got {type(vae).__name__}"
        )
    if image is None:
        image = data.make_sprites(1, seed=0).images[0]
    return LatentExplorer(vae, _one_image(image, 1)[0])
