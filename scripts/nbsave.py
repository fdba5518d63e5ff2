"""pytest plugin: keep the notebooks that nbval executes, outputs included, for the book.

`make test` runs every notebook under nbval. With this plugin enabled (``-p scripts.nbsave``
with the repository root on the path, as ``pyproject.toml`` sets it), each
notebook whose code cells all ran without failing is written, with the outputs nbval collected,
to ``build/executed/NAME.ipynb``. ``scripts/make_book.py`` then builds the book from those
copies instead of executing the notebooks a second time.

How nbval keeps outputs: each code cell is a pytest item (``nbval.plugin.IPyNbCell``); when it
runs, it reads the kernel's iopub messages into nbformat output nodes (``stream``,
``display_data``, ``execute_result``, ``error``), merges the streams and stores the list on the
item as ``item.test_outputs``; the notebook it came from is ``item.parent.nb``. This plugin reads
those after each cell's call phase and, when the notebook's last code cell has reported, writes
the executed copy. A notebook with a failed cell (or one that was stopped, or selected in part
with ``-k``) is not written, so the book never shows a run that did not pass.

The copy carries a key in its metadata (``metadata.vismap.executed.key``): a hash of the
notebook's cells and of what their outputs depend on in this repository (the library's source in
``lib/vismap`` and ``data/MANIFEST.json``, which names every checkpoint by its SHA-256). The book
reuses a copy only while its key equals the key of the notebook as it is now
(:func:`source_key`), so an edited notebook, library or checkpoint is executed again.

``VISMAP_EXECUTED_DIR`` overrides the folder.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the notebooks' outputs depend on in the repository, besides the notebook itself.
DEPENDENCIES = ("lib/vismap", "data/MANIFEST.json")


def executed_dir(root: Path = ROOT) -> Path:
    """The folder of executed notebooks: ``$VISMAP_EXECUTED_DIR`` or ``build/executed``."""
    override = os.environ.get("VISMAP_EXECUTED_DIR")
    return Path(override) if override else root / "build" / "executed"


def dependencies_key(root: Path = ROOT) -> str:
    """SHA-256 over the library's ``*.py`` files and the data manifest (paths and contents)."""
    digest = hashlib.sha256()
    for name in DEPENDENCIES:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digest.update(file.relative_to(root).as_posix().encode() + b"\0")
                digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def cells_key(nb: Any) -> str:
    """SHA-256 over the notebook's cells: type and source (outputs and metadata left out)."""
    cells = [
        [c["cell_type"], c["source"] if isinstance(c["source"], str) else "".join(c["source"])]
        for c in nb["cells"]
    ]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def source_key(nb: Any, deps: str | None = None, root: Path = ROOT) -> str:
    """The key an executed copy of ``nb`` must carry to be reused: cells + dependencies."""
    deps = dependencies_key(root) if deps is None else deps
    return hashlib.sha256(f"{cells_key(nb)}:{deps}".encode()).hexdigest()


def stamp(nb: Any, key: str, by: str, seconds: float) -> None:
    """Record in ``nb.metadata.vismap.executed`` who executed it, when, how long, and its key."""
    nb.metadata.setdefault("vismap", {})["executed"] = {
        "key": key,
        "by": by,
        "seconds": round(seconds, 1),
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_executed(nb: Any, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically (a reader never sees half a notebook)."""
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The plugin
# --------------------------------------------------------------------------------------------


class _Run:
    """What nbval reported for one notebook so far."""

    def __init__(self, n_code: int) -> None:
        self.n_code = n_code
        self.outputs: dict[int, list] = {}
        self.ok = True
        self.started = time.monotonic()


_runs: dict[str, _Run] = {}
_deps: str | None = None


def _is_nbval_cell(item: pytest.Item) -> bool:
    return (
        hasattr(item, "test_outputs")
        and hasattr(item, "cell_num")
        and hasattr(getattr(item, "parent", None), "nb")
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    if call.when != "call" or not _is_nbval_cell(item):
        return
    report = outcome.get_result()
    nb = item.parent.nb  # type: ignore[attr-defined]
    path = str(item.parent.path)  # type: ignore[attr-defined]
    run = _runs.get(path)
    if run is None:
        n_code = sum(c.cell_type == "code" for c in nb.cells)
        run = _runs[path] = _Run(n_code)
    if report.failed:
        run.ok = False
    # a skipped cell (NBVAL_SKIP) did not run: it stays without outputs, as in nbval
    run.outputs[item.cell_num] = list(item.test_outputs or []) if report.passed else []  # type: ignore[attr-defined]
    if len(run.outputs) == run.n_code:
        _finish(path, nb, run)


def _finish(path: str, nb: Any, run: _Run) -> None:
    global _deps
    del _runs[path]
    if not run.ok:
        return
    if _deps is None:
        _deps = dependencies_key()
    executed = copy.deepcopy(nb)
    count = 0
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        outputs = run.outputs[count]
        count += 1
        cell.execution_count = count if outputs or cell.source.strip() else None
        for out in outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count
        cell.outputs = outputs
    stamp(executed, source_key(nb, _deps), "nbval", time.monotonic() - run.started)
    write_executed(executed, executed_dir() / Path(path).name)
