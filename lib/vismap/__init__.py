"""vismap: see why a CNN decides what it decides.

The library behind the course's notebooks:

* :mod:`vismap.data` - procedural data with ground truth (Shapes scenes, dSprites sprites);
* :mod:`vismap.models` - the course's small CNNs and their shipped checkpoints;
* :mod:`vismap.vae` - the beta-VAE whose latent factors chapter 07 explains;
* :mod:`vismap.train` - the plain training loop, and ``python -m vismap.train``;
* :mod:`vismap.explain` - the explanation methods, factor activation maps included;
* :mod:`vismap.metrics` - how good a map is, measured against the ground truth;
* :mod:`vismap.disentangle` - how well latent dimensions match the true factors (MIG);
* :mod:`vismap.widgets` - interactive explorers for JupyterLab (imported on first use).

The benchmark of the methods' speed (against their limits, captum and pytorch-grad-cam) is not
part of the package: ``make bench`` runs ``benchmarks/bench.py``.

    >>> import vismap as vm
    >>> shapes = vm.data.make_shapes(8, seed=0)
    >>> model = vm.models.load_pretrained("shapes-gap")
"""

import importlib
from types import ModuleType

from . import data, disentangle, explain, metrics, models, vae

__all__ = [
    "data",
    "models",
    "vae",
    "explain",
    "metrics",
    "disentangle",
    "train",
    "train_vae",
    "widgets",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> ModuleType:
    # The command-line module is imported on first use, so that `python -m vismap.train` does
    # not import it twice; the widgets, so that `import vismap` needs no ipywidgets.
    if name in ("train", "train_vae", "widgets"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'vismap' has no attribute {name!r}")
