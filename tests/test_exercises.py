"""The exercises of notebooks 01-08 and their student versions (``make exercises``).

* every notebook 01-08 that exists ends with at least two graded exercises: an answer cell and a
  check cell with nbgrader metadata;
* ``scripts/make_exercises.py`` writes student versions that hold no line of any solution and
  no hidden test, have no outputs, and keep every visible assert of the checks;
* the checks are real: they fail on the student's stub, and pass with the solution;
* bad input (an unclosed ``### BEGIN SOLUTION``, a grade id used twice) stops the run with the
  notebook and the cell named, and a non-zero exit status.

How "the checks fail on the stubs" is shown without running anything. The solution notebooks run
top to bottom under nbval (``make test``), so the solutions are known to pass their checks,
hidden tests included. Running the student versions too would cost as much again (minutes), so
the checks are read instead, with :mod:`ast`: a check cell is module-level code, which cannot
stop early, so it fails on the stub as soon as one statement that always runs (not inside an
``if``, a ``try``, a function, a lambda, the body of a comprehension or the right of ``and``)
calls a function that the student version leaves as a ``raise NotImplementedError()`` stub, or
reads a name that only the solution binds: no earlier cell, no line of the answer outside the
solution, and no earlier line of the check binds it. Every exercise of every notebook is checked
this way. ``test_stub_analysis_agrees_with_running_the_check`` runs the analysis on small
notebooks that are also executed, including checks that *do* pass on the stub (the name bound
earlier, the use inside a ``try``, a branch, a lambda ...): the analysis must tell them apart.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import subprocess
import symtable
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
COURSE = sorted(
    [*NOTEBOOKS.glob("0[1-8]_*.ipynb"), *NOTEBOOKS.glob("1[0-9]_*.ipynb")]
)  # must have exercises
STUB = "raise NotImplementedError()"

_spec = importlib.util.spec_from_file_location(
    "make_exercises", ROOT / "scripts" / "make_exercises.py"
)
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
            check = next(
                (j for j in range(i + 1, len(nb.cells)) if nbgrader(nb.cells[j]).get("grade")), None
            )
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
#
# Read, not run: a module-level cell cannot stop early, so a check fails on the stub as soon as
# one of its statements that always runs calls a function the student version leaves as a stub,
# or reads a name the stub leaves undefined. The solutions themselves pass under nbval.


ALLOWED_MAGICS = ("%matplotlib", "%config")  # IPython lines that bind no name


def _code(source: str) -> str:
    # the cells' Python without IPython magics (%matplotlib inline)
    return "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )


def _unknown_magics(source: str) -> list[str]:
    # magics that might bind names (%run, %store -r, ...): the analysis cannot see through them
    return [
        line.strip()
        for line in source.splitlines()
        if line.lstrip().startswith(("%", "!")) and not line.lstrip().startswith(ALLOWED_MAGICS)
    ]


def _scope_names(table: symtable.SymbolTable) -> set[str]:
    # module-level names read inside the functions, lambdas and comprehensions of a scope
    names = set()
    for child in table.get_children():
        names |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
        names |= _scope_names(child)
    return names


def _loads(node: ast.AST) -> set[str]:
    # the names a piece of code reads, now: its own, and those of its lambdas and comprehensions
    table = symtable.symtable(ast.unparse(node), "<code>", "exec")
    return {s.get_name() for s in table.get_symbols() if s.is_referenced()} | _scope_names(table)


def _stored(target: ast.AST) -> tuple[set[str], set[str]]:
    # an assignment target: the names it binds, and the names it reads (x[i] = ... reads x, i)
    names = [n for n in ast.walk(target) if isinstance(n, ast.Name)]
    return (
        {n.id for n in names if isinstance(n.ctx, ast.Store)},
        {n.id for n in names if isinstance(n.ctx, ast.Load)},
    )


def _flow(statements: list[ast.stmt], written: set, reads: set, deferred: set) -> None:
    # walk statements in execution order: a name read before the cell binds it is a read; every
    # name bound anywhere (also in a branch that may not run) counts as written
    def read(names: set[str]) -> None:
        reads.update(set(names) - written)

    def bind(target: ast.AST) -> None:
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
        # walrus targets bind too, wherever they are
        written.update(n.target.id for n in ast.walk(st) if isinstance(n, ast.NamedExpr))


def bindings(source: str) -> set[str]:
    """Every module-level name a cell may bind."""
    written: set[str] = set()
    _flow(ast.parse(_code(source)).body, written, set(), set())
    return written


def _is_stub_raise(st: ast.stmt) -> bool:
    # `raise NotImplementedError()` or `raise NotImplementedError`, what ClearSolutions writes
    exc = st.exc if isinstance(st, ast.Raise) else None
    exc = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _raises_before_returning(body: list[ast.stmt]) -> bool:
    # a function body that reaches `raise NotImplementedError()` before it can return
    for st in body:
        if _is_stub_raise(st):
            return True
        if any(isinstance(n, (ast.Return, ast.Yield, ast.YieldFrom)) for n in ast.walk(st)):
            return False
    return False


def student_answer(source: str) -> tuple[set[str], set[str]]:
    """What the student version of an answer cell leaves behind when it runs: the names it
    binds before its first module-level ``raise NotImplementedError()`` stops it, and which of
    them are functions that raise ``NotImplementedError`` when called (stubs)."""
    body = ast.parse(_code(source)).body
    stop = next((i for i, st in enumerate(body) if _is_stub_raise(st)), len(body))
    written: set[str] = set()
    stubs: set[str] = set()
    for st in body[:stop]:
        binds: set[str] = set()
        _flow([st], binds, set(), set())
        written |= binds
        is_def = isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef))
        if is_def and _raises_before_returning(st.body):
            stubs.add(st.name)
        else:
            stubs -= binds  # a later binding replaces the stub
    return written, stubs


def _eager(node: ast.AST) -> Iterator[tuple[str, bool]]:
    """``(name, called)`` for every name that evaluating the expression ``node`` reads whatever
    the values are: not in a lambda's body, a comprehension's body (its first iterable is
    evaluated), the branches of ``a if c else b``, the right of ``and``/``or``, or the later
    links of a chained comparison."""
    if isinstance(node, ast.Name):
        if isinstance(node.ctx, ast.Load):
            yield node.id, False
    elif isinstance(node, ast.Lambda):
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
            yield from _eager(default)
    elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        yield from _eager(node.generators[0].iter)
    elif isinstance(node, ast.IfExp):
        yield from _eager(node.test)
    elif isinstance(node, ast.BoolOp):
        yield from _eager(node.values[0])
    elif isinstance(node, ast.Compare):
        yield from _eager(node.left)
        yield from _eager(node.comparators[0])
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            yield node.func.id, True
        else:
            yield from _eager(node.func)
        for arg in node.args:
            yield from _eager(arg)
        for keyword in node.keywords:
            yield from _eager(keyword.value)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _eager(child)


def _always_runs(st: ast.stmt) -> tuple[list[ast.AST], list[ast.stmt] | None]:
    """The expressions a statement always evaluates, and the statements it always runs next
    (a ``with`` body; a ``for`` body over a non-empty literal list or tuple), or None."""
    if isinstance(st, (ast.Expr, ast.Return)):
        return [st.value] if st.value else [], None
    if isinstance(st, ast.Assign):
        return [st.value, *st.targets], None
    if isinstance(st, ast.AugAssign):
        target = (
            ast.Name(st.target.id, ast.Load()) if isinstance(st.target, ast.Name) else st.target
        )
        return [target, st.value], None
    if isinstance(st, ast.AnnAssign):
        return ([st.value] if st.value else []) + [st.target], None
    if isinstance(st, ast.Assert):
        return [st.test], None  # the message is evaluated only when the assert fails
    if isinstance(st, (ast.If, ast.While)):
        return [st.test], None
    if isinstance(st, ast.Raise):
        return [st.exc] if st.exc else [], None
    if isinstance(st, ast.Delete):
        return list(st.targets), None
    if isinstance(st, (ast.With, ast.AsyncWith)):
        return [item.context_expr for item in st.items], st.body
    if isinstance(st, (ast.For, ast.AsyncFor)):
        literal = isinstance(st.iter, (ast.List, ast.Tuple)) and st.iter.elts
        return [st.iter], st.body if literal else None
    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        parts: list[ast.AST] = list(st.decorator_list)
        if isinstance(st, ast.ClassDef):
            parts += st.bases + [k.value for k in st.keywords]
        else:
            parts += st.args.defaults + [d for d in st.args.kw_defaults if d]
        return parts, None
    return [], None  # try, match, import, global, ...: nothing counted


def first_failure(
    statements: list[ast.stmt], undefined: set[str], stubs: set[str], written: set[str]
) -> str | None:
    """How ``statements`` (a check cell) must fail: the first statement that always runs and
    reads a name in ``undefined`` or calls a function in ``stubs`` (unless the check bound the
    name itself before), described; None if the analysis finds no such statement."""
    for st in statements:
        expressions, body = _always_runs(st)
        for expression in expressions:
            for name, called in _eager(expression):
                if name in written:
                    continue
                if name in undefined:
                    return f"reads {name!r}, which the stub leaves undefined (line {st.lineno})"
                if called and name in stubs:
                    return f"calls the stub {name}() (line {st.lineno})"
        if body is not None:
            inner = set(written)
            if isinstance(st, (ast.For, ast.AsyncFor)):
                inner |= _stored(st.target)[0]
            for item in getattr(st, "items", []):
                if item.optional_vars is not None:
                    inner |= _stored(item.optional_vars)[0]
            found = first_failure(body, undefined, stubs, inner)
            if found:
                return found
        _flow([st], written, set(), set())
    return None


def stub_failure(
    source: nbformat.NotebookNode, student: nbformat.NotebookNode, s: int, c: int
) -> str | None:
    """Why the check cell ``c`` must fail when it runs after the student version of answer cell
    ``s`` (and every cell before it, in the student version), or None if the analysis cannot
    show that it does."""
    bound: set[str] = set()
    for i in range(c):
        cell = student.cells[i]
        if i == s or cell.cell_type != "code":
            continue
        assert not _unknown_magics(cell.source), (i, _unknown_magics(cell.source))
        bound |= (
            student_answer(cell.source)[0]
            if nbgrader(cell).get("solution")
            else bindings(cell.source)
        )
    left, stubs = student_answer(student.cells[s].source)
    undefined = bindings(source.cells[s].source) - left - bound - set(dir(builtins))
    check = student.cells[c].source
    assert not _unknown_magics(check), _unknown_magics(check)
    return first_failure(ast.parse(_code(check)).body, undefined, stubs - bound, set())


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_checks_fail_on_the_stubs(students, path):
    source, student = nbformat.read(path, as_version=4), students[path.name]
    found = {}
    for s, c in exercises(source):
        if c is None:
            continue  # reported by test_notebook_has_two_graded_exercises
        grade_id = nbgrader(source.cells[s])["grade_id"]
        found[grade_id] = stub_failure(source, student, s, c)
        assert found[grade_id], (
            f"{path.name} {grade_id}: the check (cell {c}) may pass on the student's stub: none "
            f"of its statements that always run calls a stub or reads a name the stub leaves "
            f"undefined"
        )
    assert len(found) >= 2, found


# The analysis on small notebooks, each also run for real: where the analysis says a check
# fails on the stub, running it fails; the unsafe cases are checks that pass on the stub.
ANALYSED = {
    "calls the stub": (
        "",
        "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        "assert double(2) == 4",
        True,
    ),
    "reads the answer": (
        "",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "print(answer)\nassert answer == 42",
        True,
    ),
    "calls it in a for loop": (
        "",
        "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        "for v in [1, 2]:\n    assert double(v) == 2 * v",
        True,
    ),
    "after a def and a with": (
        "import contextlib",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "def ok(v):\n    return v == 42\n\n\nwith contextlib.nullcontext():\n    assert ok(answer)",
        True,
    ),
    "bound before the answer": (
        "answer = 42",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "assert answer == 42",
        False,
    ),
    "bound outside the markers": (
        "",
        "answer = 42\n### BEGIN SOLUTION\nsquare = answer ** 2\n### END SOLUTION",
        "assert answer == 42",
        False,
    ),
    "in a try": (
        "",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "try:\n    assert answer == 42\nexcept NameError:\n    pass",
        False,
    ),
    "in a branch": (
        "",
        "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        "if False:\n    assert double(2) == 4",
        False,
    ),
    "in a lambda": (
        "",
        "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        "check = lambda: double(2) == 4",
        False,
    ),
    "in an empty comprehension": (
        "",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "assert all(answer == v for v in [])",
        False,
    ),
    "after or": (
        "",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "assert True or answer == 42",
        False,
    ),
    "rebound by the check": (
        "",
        "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
        "answer = 42\nassert answer == 42",
        False,
    ),
}


@pytest.mark.parametrize("case", list(ANALYSED))
def test_stub_analysis_agrees_with_running_the_check(tmp_path, case):
    before, answer, check, fails = ANALYSED[case]
    nb = _exercise_notebook(answer)
    nb.cells[1].source = before or "import math"
    nb.cells[3].source = check
    path = tmp_path / "exercise.ipynb"
    nbformat.write(nb, path)
    student = make_exercises.student_version(path)
    found = stub_failure(nb, student, 2, 3)
    assert bool(found) is fails, (case, found)
    namespace: dict = {"__name__": "__main__"}
    for cell in student.cells[1:3]:
        try:
            exec(compile(cell.source, case, "exec"), namespace)  # noqa: S102 (our own cells)
        except NotImplementedError:
            pass
    try:
        exec(compile(student.cells[3].source, case, "exec"), namespace)  # noqa: S102
        ran_through = True
    except (NotImplementedError, NameError):
        ran_through = False
    assert ran_through is not fails, (case, found)


# --- (c) bad input --------------------------------------------------------------------------


def _exercise_notebook(answer: str, grade_id: str = "double", check_id: str = "double-check"):
    meta = {
        "grade": False,
        "grade_id": grade_id,
        "locked": False,
        "schema_version": 3,
        "solution": True,
        "task": False,
    }
    check_meta = {
        "grade": True,
        "grade_id": check_id,
        "locked": True,
        "points": 1,
        "schema_version": 3,
        "solution": False,
        "task": False,
    }
    return new_notebook(
        cells=[
            new_markdown_cell("# A synthetic exercise"),
            new_code_cell("import math"),
            new_code_cell(answer, metadata={"nbgrader": meta}),
            new_code_cell("assert double(2) == 4", metadata={"nbgrader": check_meta}),
        ],
        metadata={
            "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}
        },
    )


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


@pytest.mark.slow  # a new Python process imports nbgrader: about 5 s of CPU
def test_make_exercises_command_exits_non_zero_on_bad_input(tmp_path):
    path = tmp_path / "unclosed.ipynb"
    nbformat.write(_exercise_notebook(GOOD.replace("### END SOLUTION", "")), path)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_exercises.py"),
            str(path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert f"{path}: cell 2 (grade_id 'double')" in done.stderr


def test_duplicate_grade_id_names_both_cells(tmp_path):
    path = tmp_path / "duplicate.ipynb"
    nbformat.write(_exercise_notebook(GOOD, check_id="double"), path)
    with pytest.raises(
        make_exercises.ExerciseError,
        match=r"cell 3: grade_id 'double' is "
        r"already used by cell 2",
    ):
        make_exercises.make_exercises([path], tmp_path / "out")


def test_solution_outside_a_solution_cell_is_named(tmp_path):
    nb = _exercise_notebook(GOOD)
    nb.cells[1].source = "### BEGIN SOLUTION\nimport math\n### END SOLUTION"
    path = tmp_path / "unmarked.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(make_exercises.ExerciseError, match=r"cell 1 \('### BEGIN SOLUTION'\)"):
        make_exercises.make_exercises([path], tmp_path / "out")
