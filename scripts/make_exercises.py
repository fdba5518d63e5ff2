"""Student versions of the course's notebooks, for teachers (``make exercises``).

Every notebook in ``notebooks/`` that has nbgrader cells is written to ``build/exercises/``
with nbgrader's own preprocessors, run through nbconvert's ``NotebookExporter``, in the order
``nbgrader generate_assignment`` uses them:

* ``LockCells`` - check cells cannot be edited or deleted, answer cells cannot be deleted;
* ``ClearSolutions`` - the code between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
  becomes ``raise NotImplementedError()``;
* ``ClearOutput`` - no outputs, no execution counts;
* ``CheckCellMetadata`` - the nbgrader metadata is valid, grade ids are unique;
* ``ClearHiddenTests`` - the lines between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS`` are removed;
* ``ComputeChecksums`` - the checksums nbgrader uses to notice edited check cells.

A teacher who runs nbgrader can also use ``notebooks/`` directly as its ``source/`` folder.
Bad input stops the run before anything is written, with the notebook and the cell named:
an unclosed ``### BEGIN SOLUTION``, a solution outside a solution cell, a grade id used twice.

    python scripts/make_exercises.py [--out build/exercises] [notebook.ipynb ...]
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbgrader import utils
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "build" / "exercises"


class ExerciseError(ValueError):
    """A notebook that cannot be turned into a student version; the message names it."""


def describe(index: int, cell) -> str:
    """``cell 12 (grade_id 'cam-by-hand')``, or the cell's first line when it has no id."""
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    if grade_id:
        return f"cell {index} (grade_id {grade_id!r})"
    first = next((line for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {index} ({first.strip()[:60]!r})"


class _NamesTheCell:
    """Mixin for a per-cell nbgrader preprocessor: an error says which cell it was in."""

    def preprocess_cell(self, cell, resources, index):
        which = describe(index, cell)  # before the preprocessor changes the cell
        try:
            return super().preprocess_cell(cell, resources, index)
        except Exception as err:
            raise ExerciseError(f"{resources['notebook']}: {which}: {err}") from err


def _named(preprocessor: type) -> type:
    return types.new_class(preprocessor.__name__, (_NamesTheCell, preprocessor))


PREPROCESSORS = [
    _named(LockCells),
    _named(ClearSolutions),
    _named(ClearOutput),
    CheckCellMetadata,
    _named(ClearHiddenTests),
    _named(ComputeChecksums),
]


def has_exercises(nb) -> bool:
    """Does the notebook have nbgrader answer or check cells?"""
    return any(utils.is_solution(cell) or utils.is_grade(cell) for cell in nb.cells)


def check_grade_ids(nb, path) -> None:
    """Every answer and check cell has a grade id, and no id is used twice in a notebook."""
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if not (utils.is_solution(cell) or utils.is_grade(cell)):
            continue
        grade_id = cell.metadata["nbgrader"].get("grade_id", "")
        if not grade_id:
            raise ExerciseError(
                f"{path}: {describe(index, cell)}: an nbgrader cell needs a grade_id"
            )
        if grade_id in seen:
            raise ExerciseError(
                f"{path}: cell {index}: grade_id {grade_id!r} is already used by "
                f"cell {seen[grade_id]}; every answer and check cell needs its "
                f"own"
            )
        seen[grade_id] = index


def student_version(path: Path | str):
    """The student version of one notebook (a ``NotebookNode``), or :class:`ExerciseError`."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    check_grade_ids(nb, path)
    exporter = NotebookExporter()
    for preprocessor in PREPROCESSORS:
        exporter.register_preprocessor(preprocessor(), enabled=True)
    try:
        body, _ = exporter.from_notebook_node(nb, resources={"notebook": str(path)})
    except ExerciseError:
        raise
    except Exception as err:  # the notebook-level checks (CheckCellMetadata)
        raise ExerciseError(f"{path}: {err}") from err
    return nbformat.reads(body, as_version=4)


def make_exercises(notebooks=None, out: Path | str = OUT) -> list[Path]:
    """Write the student version of each notebook (default: every notebook of ``notebooks/``
    with nbgrader cells) to ``out``; returns the paths written. All notebooks are converted
    before the first one is written, so bad input leaves ``out`` as it was."""
    if notebooks is None:
        notebooks = [
            p
            for p in sorted(NOTEBOOKS.glob("*.ipynb"))
            if has_exercises(nbformat.read(p, as_version=4))
        ]
    students = [(Path(p), student_version(p)) for p in notebooks]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in students:
        nbformat.write(nb, out / path.name)
        written.append(out / path.name)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="notebooks to convert (default: those in notebooks/ with exercises)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    try:
        written = make_exercises(args.notebooks or None, args.out)
    except ExerciseError as err:
        print(f"make_exercises: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("no notebook has nbgrader exercises; nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
