"""pytest plugin (``-p portable`` in ``pyproject.toml``): the ``portable`` marker on notebooks.

A test that claims two computations are the same mathematics (a derivation equals the library,
the library equals captum or pytorch-grad-cam) carries ``@pytest.mark.portable``; a notebook
that asserts such equalities says so in its metadata, ``"vismap": {"portable": true}``, and every
one of its cells gets the marker here (nbval runs a notebook's cells in order, in one kernel:
all or none). ``make test-portable`` runs what is marked again under other CPU dispatch
settings (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, the thread count), which change the
last bits of float32 results as another student's CPU would: a claim that holds only on the
author's CPU fails there.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest


@cache
def _portable_notebook(path: Path) -> bool:
    metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return bool(metadata.get("vismap", {}).get("portable", False))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "portable: an equality claim (derivation = library, library = reference), run again "
        "under other CPU dispatch settings by make test-portable",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if path.suffix == ".ipynb" and _portable_notebook(path):
            item.add_marker(pytest.mark.portable)
