"""vismap: see why a CNN decides what it decides.

The library behind the course's notebooks:

* :mod:`vismap.data` - procedural data with ground truth (Shapes scenes, dSprites sprites);
* :mod:`vismap.models` - the course's small CNNs and their shipped checkpoints;
* :mod:`vismap.train` - the plain training loop, and ``python -m vismap.train``.

    >>> import vismap as vm
    >>> shapes = vm.data.make_shapes(8, seed=0)
    >>> model = vm.models.load_pretrained("shapes-gap")
"""

from . import data, models, train

__all__ = ["data", "models", "train"]
__version__ = "0.1.0"
