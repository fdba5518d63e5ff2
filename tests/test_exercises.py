"""The exercises of notebooks 01-08 and their student versions (``make exercises``).

* every notebook 01-08 that exists ends with at least two graded exercises: an answer cell and a
  check cell with nbgrader metadata;
* ``scripts/make_exercises.py`` writes student versions that hold no line of any solution and
  no hidden test, have no outputs, and keep every visible assert of the checks;
* the checks are real: they fail on the student's stub, and pass with the solution;
* bad input (an unclosed ``### BEGIN SOLUTION``, a grade id used twice) stops the run with the
  notebook and the cell named, and a non-zero exit status.

How "the checks fail on the stubs" stays cheap. Running every student notebook from the top
would cost as much as running the notebooks themselves again (minutes). Instead, for one
exercise per notebook, the test executes only the cells the exercise needs: the notebook's cells
are straight-line Python, so the cells that define the names an exercise reads (and, in turn,
the names those cells read) are found with :mod:`ast` and :mod:`symtable`, a backward slice. In one namespace
it then runs that slice, the stub answer and the check, which must fail with
``NotImplementedError`` or with a ``NameError`` for a name the solution defines (any other error
means the slice, or the check, is wrong); then the real answer and the full check (hidden tests
included), which must pass. In each notebook this is done for the exercise with the smallest
slice, and for every other exercise that needs no more cells than that one. The solution
notebooks themselves run top to bottom under nbval.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import subprocess
import symtable
import sys
import textwrap
from pathlib import Path

import matplotlib
import nbformat
import pytest
from IPython.display import display
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

matplotlib.use("Agg")  # the slices below draw figures; nobody looks at them
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
COURSE = sorted(NOTEBOOKS.glob("0[1-8]_*.ipynb"))  # the notebooks that must have exercises
STUB = "raise NotImplementedError()"

_spec = importlib.util.spec_from_file_location("make_exercises",
                                               ROOT / "scripts" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_exercises)


# --- reading the exercises ----------------------------------------------------------------


def nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def exercises(nb) -> list[tuple[int, int]]:
    """(answer cell, check cell) index pairs: each solution cell with the next grade cell."""
    pairs = []
    for i, cell in enumerate(nb.cells):
        if nbgrader(cell).get("solution"):
            check = next((j for j in range(i + 1, len(nb.cells))
                          if nbgrader(nb.cells[j]).get("grade")), None)
            pairs.append((i, check))
    return pairs


def split(source: str, begin: str, end: str) -> tuple[list[str], list[str]]:
    """The lines of ``source`` outside and inside the ``### BEGIN/END`` regions (markers
    dropped)."""
    outside, inside, within = [], [], False
    for line in source.splitlines():
        if begin in line:
            within = True
        elif end in line:
            within = False
        else:
            (inside if within else outside).append(line)
    return outside, inside


def asserts(source: str) -> int:
    """How many checks a piece of code makes: assert statements and assert_* calls
    (``torch.testing.assert_close``, ``np.testing.assert_allclose``)."""
    def is_check(node):
        if isinstance(node, ast.Assert):
            return True
        func = getattr(node, "func", None)
        name = getattr(func, "attr", getattr(func, "id", ""))
        return isinstance(node, ast.Call) and name.startswith("assert")
    return sum(map(is_check, ast.walk(ast.parse(source))))


def public_and_secret(nb) -> tuple[set[str], set[str], set[str]]:
    """Stripped lines a student may see, solution lines, hidden-test lines of a source
    notebook."""
    public, solution, hidden = set(), set(), set()
    for cell in nb.cells:
        rest, sol = split(cell.source, "BEGIN SOLUTION", "END SOLUTION")
        rest, hid = split("\n".join(rest), "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        public |= {line.strip() for line in rest}
        solution |= {line.strip() for line in sol}
        hidden |= {line.strip() for line in hid}
    return public, solution - public - {""}, hidden - public - {""}


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    out = tmp_path_factory.mktemp("exercises")
    written = make_exercises.make_exercises(out=out)
    return {path.name: nbformat.read(path, as_version=4) for path in written}


# --- (d) every notebook has graded exercises -----------------------------------------------


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_notebook_has_two_graded_exercises(path):
    nb = nbformat.read(path, as_version=4)
    pairs = exercises(nb)
    assert len(pairs) >= 2, f"{path.name}: {len(pairs)} graded exercise(s), at least 2 expected"
    for s, c in pairs:
        sol = nbgrader(nb.cells[s])
        assert c is not None, f"{path.name}: answer {sol['grade_id']!r} has no check cell after it"
        check = nbgrader(nb.cells[c])
        assert nb.cells[s].cell_type == nb.cells[c].cell_type == "code"
        assert sol["grade"] is False and sol["locked"] is False and sol["schema_version"] == 3
        assert check["grade_id"] == sol["grade_id"] + "-check", (sol, check)
        assert check["locked"] is True and check["solution"] is False and check["points"] > 0
        assert "BEGIN SOLUTION" in nb.cells[s].source, f"{path.name}: {sol['grade_id']}"
        visible, _ = split(nb.cells[c].source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        assert asserts(_code("\n".join(visible))), f"{check['grade_id']}: no visible assert"
    # an exercise is an answer and its check; no other cell needs nbgrader metadata
    graded = {i for pair in pairs for i in pair}
    assert all(not nbgrader(cell) for i, cell in enumerate(nb.cells) if i not in graded)


# --- (a) the student versions --------------------------------------------------------------


def test_every_course_notebook_gets_a_student_version(students):
    assert {p.name for p in COURSE} <= set(students)


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_student_version_hides_solutions_and_hidden_tests(students, path):
    source, student = nbformat.read(path, as_version=4), students[path.name]
    assert len(student.cells) == len(source.cells)
    public, solution, hidden = public_and_secret(source)
    assert solution, "no solution to hide: the test would prove nothing"
    seen = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
    assert not seen & solution, f"solution lines in the student version: {seen & solution}"
    assert not seen & hidden, f"hidden-test lines in the student version: {seen & hidden}"
    for cell in student.cells:
        assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    for s, c in exercises(source):
        assert STUB in student.cells[s].source
        visible, _ = split(source.cells[c].source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        assert student.cells[c].source.splitlines() == visible  # the visible checks, all of them
        assert student.cells[c].metadata.get("editable") is False  # nbgrader's LockCells
        assert "checksum" in nbgrader(student.cells[c])  # nbgrader's ComputeChecksums


# --- (b) the checks fail on the stubs --------------------------------------------------------


def _code(source: str) -> str:
    # the cells' Python without IPython magics (%matplotlib inline)
    return "\n".join(line for line in source.splitlines()
                     if not line.lstrip().startswith(("%", "!")))


def _scope_names(table) -> set[str]:
    # module-level names read inside the functions, lambdas and comprehensions of a scope
    names = set()
    for child in table.get_children():
        names |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
        names |= _scope_names(child)
    return names


def _loads(node) -> set[str]:
    # the names a piece of code reads, now: its own, and those of its lambdas and comprehensions
    table = symtable.symtable(ast.unparse(node), "<code>", "exec")
    return {s.get_name() for s in table.get_symbols() if s.is_referenced()} | _scope_names(table)


def _stored(target) -> tuple[set[str], set[str]]:
    # an assignment target: the names it binds, and the names it reads (x[i] = ... reads x, i)
    names = [n for n in ast.walk(target) if isinstance(n, ast.Name)]
    return ({n.id for n in names if isinstance(n.ctx, ast.Store)},
            {n.id for n in names if isinstance(n.ctx, ast.Load)})


def _flow(statements, written: set, reads: set, deferred: set) -> None:
    # walk statements in execution order: a name read before the cell binds it is a read
    def read(names):
        reads.update(set(names) - written)

    def bind(target):
        binds, loads = _stored(target)
        read(loads)
        written.update(binds)

    for st in statements:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            table = symtable.symtable(ast.unparse(st), "<def>", "exec")
            read({s.get_name() for s in table.get_symbols() if s.is_referenced()})  # decorators
            deferred.update(_scope_names(table))  # the body reads its globals when called
            written.add(st.name)
        elif isinstance(st, (ast.Import, ast.ImportFrom)):
            written.update((a.asname or a.name).split(".")[0] for a in st.names)
        elif isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            if st.value is not None:
                read(_loads(st.value))
            if isinstance(st, ast.AugAssign):
                read(_stored(st.target)[0])
            for target in getattr(st, "targets", [getattr(st, "target", None)]):
                bind(target)
        elif isinstance(st, (ast.For, ast.AsyncFor)):
            read(_loads(st.iter))
            bind(st.target)
            _flow(st.body + st.orelse, written, reads, deferred)
        elif isinstance(st, (ast.If, ast.While)):
            read(_loads(st.test))
            _flow(st.body + st.orelse, written, reads, deferred)
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            for item in st.items:
                read(_loads(item.context_expr))
                if item.optional_vars is not None:
                    bind(item.optional_vars)
            _flow(st.body, written, reads, deferred)
        elif isinstance(st, ast.Try):
            _flow(st.body, written, reads, deferred)
            for handler in st.handlers:
                if handler.type is not None:
                    read(_loads(handler.type))
                if handler.name:
                    written.add(handler.name)
                _flow(handler.body, written, reads, deferred)
            _flow(st.orelse + st.finalbody, written, reads, deferred)
        else:  # expressions, asserts, del, raise, ...
            read(_loads(st))


def reads_and_writes(source: str) -> tuple[set[str], set[str], set[str]]:
    """What a cell reads before it binds it, what its functions read (when called, later), and
    the module-level names it binds."""
    reads, deferred, written = set(), set(), set()
    _flow(ast.parse(_code(source)).body, written, reads, deferred)
    return reads, deferred, written


def backward_slice(nb, before: int, start: list[str]) -> list[int]:
    """Indices of the plain code cells before ``before`` that the sources ``start`` need."""
    needed, own_writes = set(), set()
    for source in start:
        reads, deferred, writes = reads_and_writes(source)
        needed |= reads | deferred
        own_writes |= writes
    needed -= own_writes
    plain = [i for i in range(before) if nb.cells[i].cell_type == "code" and not nbgrader(nb.cells[i])]
    analysed = {i: reads_and_writes(nb.cells[i].source) for i in plain}
    chosen, late = set(), set()
    while True:  # functions read their globals when called: repeat until nothing new is needed
        want, grown = needed | late, False
        for i in reversed(plain):
            reads, deferred, writes = analysed[i]
            if writes & want:
                chosen.add(i)
                want = (want - writes) | reads
                if not deferred <= late:
                    late |= deferred
                    grown = True
        if not grown:
            return sorted(chosen)


def run(source: str, namespace: dict, label: str) -> None:
    exec(compile(_code(source), label, "exec"), namespace)  # noqa: S102 (the notebook's own code)


def cheapest_exercises(nb, student) -> tuple[list[int], list[tuple[int, int]]]:
    """The smallest slice any exercise needs, and every exercise that needs nothing more."""
    slices = {}
    for s, c in exercises(nb):
        if c is None:
            continue  # reported by test_notebook_has_two_graded_exercises
        start = [student.cells[s].source, student.cells[c].source, nb.cells[s].source,
                 nb.cells[c].source]
        slices[s, c] = backward_slice(nb, s, start)
    cells = min(slices.values(), key=len)
    return cells, [pair for pair, need in slices.items() if set(need) <= set(cells)]


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_checks_fail_on_the_stubs_and_pass_with_the_solutions(students, path):
    source, student = nbformat.read(path, as_version=4), students[path.name]
    cells, pairs = cheapest_exercises(source, student)
    namespace = {"__name__": "__main__", "display": display}
    try:
        for i in cells:
            run(source.cells[i].source, namespace, f"{path.name} cell {i}")
        for s, c in pairs:
            grade_id = nbgrader(source.cells[s])["grade_id"]
            try:
                run(student.cells[s].source, namespace, f"{path.name} stub {grade_id}")
            except NotImplementedError:
                pass
            with pytest.raises((NotImplementedError, NameError)) as failure:
                run(student.cells[c].source, namespace, f"{path.name} check {grade_id}")
            if failure.type is NameError:
                _, _, answer_binds = reads_and_writes(source.cells[s].source)
                assert failure.value.name in answer_binds - set(dir(builtins)), (
                    f"{grade_id}: the check failed for a reason the stub does not explain "
                    f"(cells run: {cells}): {failure.value}")
            run(source.cells[s].source, namespace, f"{path.name} answer {grade_id}")
            run(source.cells[c].source, namespace, f"{path.name} check {grade_id}")  # + hidden
    finally:
        plt.close("all")


# --- (c) bad input --------------------------------------------------------------------------


def _exercise_notebook(answer: str, grade_id: str = "double", check_id: str = "double-check"):
    meta = {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3,
            "solution": True, "task": False}
    check_meta = {"grade": True, "grade_id": check_id, "locked": True, "points": 1,
                  "schema_version": 3, "solution": False, "task": False}
    return new_notebook(cells=[
        new_markdown_cell("# A synthetic exercise"),
        new_code_cell("import math"),
        new_code_cell(answer, metadata={"nbgrader": meta}),
        new_code_cell("assert double(2) == 4", metadata={"nbgrader": check_meta}),
    ], metadata={"kernelspec": {"name": "python3", "language": "python",
                                "display_name": "Python 3"}})


GOOD = textwrap.dedent("""\
    def double(x):
        ### BEGIN SOLUTION
        return 2 * x
        ### END SOLUTION
    """)


def test_synthetic_exercise_becomes_a_stub(tmp_path):
    path = tmp_path / "good.ipynb"
    nbformat.write(_exercise_notebook(GOOD), path)
    (written,) = make_exercises.make_exercises([path], tmp_path / "out")
    answer = nbformat.read(written, as_version=4).cells[2].source
    assert answer == "def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"


def test_unclosed_solution_names_the_notebook_and_the_cell(tmp_path, capsys):
    path = tmp_path / "unclosed.ipynb"
    nbformat.write(_exercise_notebook(GOOD.replace("### END SOLUTION", "")), path)
    out = tmp_path / "out"
    with pytest.raises(make_exercises.ExerciseError) as err:
        make_exercises.make_exercises([path], out)
    message = str(err.value)
    assert str(path) in message and "cell 2" in message and "'double'" in message
    assert "no end solution" in message.lower()
    assert not out.exists(), "nothing may be written when a notebook is bad"
    assert make_exercises.main([str(path), "--out", str(out)]) == 1
    assert str(path) in capsys.readouterr().err


def test_make_exercises_command_exits_non_zero_on_bad_input(tmp_path):
    path = tmp_path / "unclosed.ipynb"
    nbformat.write(_exercise_notebook(GOOD.replace("### END SOLUTION", "")), path)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_exercises.py"), str(path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"{path}: cell 2 (grade_id 'double')" in done.stderr


def test_duplicate_grade_id_names_both_cells(tmp_path):
    path = tmp_path / "duplicate.ipynb"
    nbformat.write(_exercise_notebook(GOOD, check_id="double"), path)
    with pytest.raises(make_exercises.ExerciseError, match=r"cell 3: grade_id 'double' is "
                       r"already used by cell 2"):
        make_exercises.make_exercises([path], tmp_path / "out")


def test_solution_outside_a_solution_cell_is_named(tmp_path):
    nb = _exercise_notebook(GOOD)
    nb.cells[1].source = "### BEGIN SOLUTION\nimport math\n### END SOLUTION"
    path = tmp_path / "unmarked.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(make_exercises.ExerciseError, match=r"cell 1 \('### BEGIN SOLUTION'\)"):
        make_exercises.make_exercises([path], tmp_path / "out")
