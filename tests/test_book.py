"""The book's machinery, checked cheaply: nothing here executes the course's notebooks.

The book itself is built by ``make book`` (scripts/make_book.py) and checked in a browser by
scripts/browser_test_book.py; these tests guard what those rely on: the table of contents
covers every notebook, the configuration stays offline, executed copies are reused only when
their key matches, the nbval plugin keeps the outputs it saw (and only of a notebook that
passed), the pages are laid out as promised, and the diagrams script draws its files.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from scripts import make_book, make_diagrams, nbsave

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.ipynb"))


# --------------------------------------------------------------------------------------------
# the table of contents
# --------------------------------------------------------------------------------------------


def test_toc_lists_every_notebook():
    toc = make_book.read_toc()
    listed = set(toc.notebooks()) | set(toc.not_chapters)
    missing = [nb for nb in NOTEBOOKS if nb not in listed]
    assert not missing, (
        f"{missing} are in notebooks/ but not in book/toc.yml: add them as a "
        f"chapter, or under not_chapters with the reason"
    )


def test_toc_pages_are_files_of_the_repository():
    toc = make_book.read_toc()
    for page in toc.pages():
        if page.startswith("notebooks/"):
            continue  # a chapter still to come is left out of the build with a note
        assert (ROOT / page).is_file(), f"book/toc.yml lists {page}, which does not exist"
    assert set(toc.notebooks()).isdisjoint(toc.not_chapters)


def test_toc_rejects_a_malformed_file(tmp_path):
    bad = tmp_path / "toc.yml"
    bad.write_text("parts:\n  - caption: One\n    pages: [notebooks/x.txt]\n")
    with pytest.raises(make_book.BookError, match=r"ending in \.ipynb or \.md.*x\.txt"):
        make_book.read_toc(bad)
    bad.write_text("parts:\n  - caption: One\n    pages: [a.md, a.md]\n")
    with pytest.raises(make_book.BookError, match="listed twice"):
        make_book.read_toc(bad)


def test_start_page_comes_from_the_readme():
    intro, notebooks = make_book.readme_parts()
    assert intro.startswith("# ")
    assert "notebooks/00_start_here.ipynb" in notebooks
    index = (ROOT / "book" / "index.md").read_text()
    for marker in ("{{README_INTRO}}", "{{README_NOTEBOOKS}}", "{{TOC}}"):
        assert marker in index


def test_readme_without_the_section_is_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\ntext\n\n## Run it\n\nmake lab\n")
    with pytest.raises(make_book.BookError, match=r"no section `## The notebooks`.*Run it"):
        make_book.readme_parts(readme)


# --------------------------------------------------------------------------------------------
# offline configuration
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conf() -> dict:
    return runpy.run_path(str(ROOT / "book" / "conf.py"))


def test_config_never_executes_and_loads_no_widget_javascript(conf):
    assert conf["nb_execution_mode"] == "off"  # make_book.py executes, once
    assert conf["nb_ipywidgets_js"] == {}  # MyST-NB's default loads it from a CDN


def test_config_serves_mathjax_locally(conf):
    path = conf["mathjax_path"]
    assert "://" not in path and not path.startswith("//"), path
    static = [Path(p) for p in conf["html_static_path"]]
    script, _, query = path.partition("?")
    assert any((folder / script).is_file() for folder in static), f"{script} is in none of {static}"
    config_file = query.removeprefix("config=") + ".js"
    assert any((folder / "config" / config_file).is_file() for folder in static)
    fonts = conf["mathjax2_config"]["HTML-CSS"]
    assert fonts["webFont"] == "STIX-Web" and fonts["availableFonts"] == []
    assert any((folder / "fonts" / "HTML-CSS" / "STIX-Web").is_dir() for folder in static)


def test_config_names_no_address_off_the_machine(conf):
    text = json.dumps(
        {
            k: v
            for k, v in conf.items()
            if k.startswith(("html_", "nb_", "myst_"))
            and isinstance(v, (str, list, dict, bool, int, type(None)))
        }
    )
    assert "http://" not in text and "https://" not in text


# --------------------------------------------------------------------------------------------
# executed notebooks: the key, the nbval plugin, reuse
# --------------------------------------------------------------------------------------------


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# A test")]
        + [nbformat.v4.new_code_cell(s) for s in sources]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_key_follows_the_cells_not_the_outputs():
    nb = _notebook("x = 1", "print(x)")
    key = nbsave.source_key(nb, "deps")
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    assert nbsave.source_key(nb, "deps") == key
    nb.cells[2].source = "print(x + 1)"
    assert nbsave.source_key(nb, "deps") != key
    assert nbsave.source_key(nb, "other deps") != nbsave.source_key(nb, "deps")


def _run_nbval(tmp_path: Path, nb: nbformat.NotebookNode, name: str) -> subprocess.Popen:
    nbformat.write(nb, tmp_path / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        VISMAP_EXECUTED_DIR=str(tmp_path / "executed"),
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "light_imports",
            "-p",
            "scripts.nbsave",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "-c",
            str(tmp_path / "pytest.ini"),
            name,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_nbval_plugin_keeps_the_outputs_of_a_passing_notebook(tmp_path):
    nb = _notebook(
        "x = 6 * 7\nprint('x is', x)", "x", "from IPython.display import HTML\nHTML('<b>bold</b>')"
    )
    done = _run_nbval(tmp_path, nb, "ok.ipynb")
    assert done.returncode == 0, done.stdout + done.stderr
    executed = nbformat.read(tmp_path / "executed" / "ok.ipynb", as_version=4)
    nbformat.validate(executed)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == "x is 42\n"
    assert code[1].outputs[0]["data"]["text/plain"] == "42"
    assert code[1].outputs[0]["execution_count"] == code[1].execution_count == 2
    assert code[2].outputs[0]["data"]["text/html"] == "<b>bold</b>"
    stamp = executed.metadata["vismap"]["executed"]
    assert stamp["by"] == "nbval" and stamp["key"] == nbsave.source_key(nb)


@pytest.mark.slow
def test_nbval_plugin_writes_nothing_for_a_failing_notebook(tmp_path):
    done = _run_nbval(tmp_path, _notebook("x = 1", "assert x == 2", "print(x)"), "bad.ipynb")
    assert done.returncode != 0
    assert not (tmp_path / "executed" / "bad.ipynb").exists()


def test_book_reuses_an_executed_copy_whose_key_matches(tmp_path, monkeypatch):
    source = tmp_path / "nb.ipynb"
    nb = _notebook("print(1)")
    nbformat.write(nb, source)
    monkeypatch.setenv("VISMAP_EXECUTED_DIR", str(tmp_path / "executed"))
    executed = nbformat.from_dict(json.loads(json.dumps(nb)))
    nbsave.stamp(executed, nbsave.source_key(nb, nbsave.dependencies_key(ROOT), ROOT), "nbval", 1.0)
    nbsave.write_executed(executed, tmp_path / "executed" / "nb.ipynb")
    calls = []
    monkeypatch.setattr(make_book, "_execute", lambda *a: calls.append(a) or (a[0], 0.0))
    make_book.executed_notebooks([source])
    assert calls == []  # reused
    nb.cells[1].source = "print(2)"  # the notebook changed: executed again
    nbformat.write(nb, source)
    make_book.executed_notebooks([source])
    assert len(calls) == 1 and calls[0][0] == str(source)


# --------------------------------------------------------------------------------------------
# the pages
# --------------------------------------------------------------------------------------------


def test_widgets_become_a_note_and_solutions_are_folded(tmp_path):
    nb = _notebook("w = make_widget()\nw", "answer = 42  ### BEGIN SOLUTION")
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={make_book.WIDGET_MIME: {"model_id": "abc"}, "text/plain": "VBox(...)"},
        )
    ]
    nb.cells[2].source = "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"
    nb.cells[2].metadata["nbgrader"] = {"solution": True, "grade": False}
    nbformat.write(nb, tmp_path / "x.ipynb")
    page = nbformat.reads(make_book.book_notebook(tmp_path / "x.ipynb"), as_version=4)
    assert "widgets" not in page.metadata
    data = page.cells[1].outputs[0]["data"]
    assert make_book.WIDGET_MIME not in data and "make lab" in data["text/html"]
    assert "hide-input" in page.cells[2].metadata["tags"]
    assert "hide-input" not in page.cells[1].metadata.get("tags", [])


def test_links_to_the_talk_go_to_the_slides():
    text = (
        "[the talk](notebooks/talk.ipynb), [中文](notebooks/talk_zh.ipynb), "
        "[CAM](notebooks/05_cam.ipynb), [later](notebooks/99_later.ipynb), ![f](docs/f.png)"
    )
    out = make_book.link_slides(text, "index.md", {"notebooks/05_cam.ipynb"})
    assert '<a href="../talk.slides.html">the talk</a>' in out
    assert '<a href="../talk_zh.slides.html">中文</a>' in out
    assert "[CAM](notebooks/05_cam.ipynb)" in out  # a chapter: Sphinx links it
    assert "99_later.ipynb" not in out  # not in the book: text, not a broken link
    assert "![f](docs/f.png)" in out
    glossary = make_book.link_slides("[talk](../notebooks/talk.ipynb)", "docs/glossary.md", set())
    assert 'href="../../talk.slides.html"' in glossary


def test_pages_are_rewritten_only_when_they_change(tmp_path):
    path = tmp_path / "a" / "page.md"
    assert make_book.write_if_changed(path, "text")
    stamp = path.stat().st_mtime_ns
    assert not make_book.write_if_changed(path, "text")
    assert path.stat().st_mtime_ns == stamp
    assert make_book.write_if_changed(path, "new text")


# --------------------------------------------------------------------------------------------
# the diagrams
# --------------------------------------------------------------------------------------------


def test_every_diagram_is_committed():
    committed = {p.stem for p in (ROOT / "docs" / "figures").glob("diagram_*.svg")}
    assert committed == set(make_diagrams.DIAGRAMS), (
        "docs/figures/diagram_*.svg and scripts/make_diagrams.py disagree: run "
        "python scripts/make_diagrams.py"
    )


@pytest.mark.slow
def test_diagrams_script_draws_its_files(tmp_path):
    written = make_diagrams.make_diagrams(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.svg" for n in make_diagrams.DIAGRAMS)
    for path in written:
        root = ET.parse(path).getroot()  # well-formed SVG
        assert root.tag.endswith("svg")
        text = path.read_text()
        assert "<image" in text or "deconvnet" in path.name  # computed pictures embedded
        assert "http://" not in text.replace("http://www.w3.org/", "").replace(
            "http://purl.org/dc/", ""
        ).replace("http://creativecommons.org/", "")


def test_diagrams_are_deterministic(tmp_path):
    first = make_diagrams.make_diagrams(tmp_path / "a", only=["diagram_deconvnet"])[0]
    second = make_diagrams.make_diagrams(tmp_path / "b", only=["diagram_deconvnet"])[0]
    assert first.read_bytes() == second.read_bytes()


def test_diagrams_reject_an_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown diagram\(s\) \['nope'\]; valid: .*diagram_cam"):
        make_diagrams.make_diagrams(tmp_path, only=["nope"])
