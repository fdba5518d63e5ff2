"""vismap: see why a CNN decides what it decides.

The library behind the course's notebooks:

* :mod:`vismap.data` - procedural data with ground truth (Shapes scenes, dSprites sprites);
* :mod:`vismap.models` - the course's small CNNs and their shipped checkpoints;
* :mod:`vismap.train` - the plain training loop, and ``python -m vismap.train``;
* :mod:`vismap.explain` - the explanation methods.

    >>> import vismap as vm
    >>> shapes = vm.data.make_shapes(8, seed=0)
    >>> model = vm.models.load_pretrained("shapes-gap")
"""

import importlib

from . import data, models

__all__ = ["data", "models", "train", "explain"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use, so that `python -m vismap.train` does not import it twice.
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'vismap' has no attribute {name!r}")
