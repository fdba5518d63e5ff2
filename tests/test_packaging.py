"""The environment files agree; notebooks are committed clean and carry their teaching parts."""

import json
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {r.replace(" ", "") for r in reqs}


def _environment_requirements() -> set[str]:
    reqs = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"^\s+- ([A-Za-z][\w.-]*)([<>=!~].*)?$", line)
        if m and m.group(1) not in ("python", "pip"):
            name = CONDA_NAMES.get(m.group(1), m.group(1))
            reqs.add(name + (m.group(2) or "").replace(" ", ""))
    return reqs


def test_environment_yml_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_no_upper_pins():
    for req in _pyproject_requirements():
        assert "<" not in req and "==" not in req, req


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:3] == ["00", "01", "02"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_teaches(path):
    nb = json.loads(path.read_text())
    text = {"markdown": "", "code": ""}
    for cell in nb["cells"]:
        text[cell["cell_type"]] += "".join(cell["source"]) + "\n"
    assert text["markdown"].lstrip().startswith("#"), "starts with a title"
    assert "import vismap" in text["code"]
    if not path.name.startswith(("00", "talk")):  # the talk is slides, not a lesson
        assert "$" in text["markdown"], "derives its idea in LaTeX"
        assert "## Exercises" in text["markdown"] and "## Summary" in text["markdown"]
    assert re.search(r"^\s*assert ", text["code"], re.M), "asserts its claim"


CHAPTERS = [p for p in NOTEBOOKS if p.name[:2].isdigit() and not p.name.startswith("00")]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_a_recap(path):
    # three to five questions on the chapter's key ideas, each with its answer in a <details>
    # block: folded in JupyterLab and in the book until the reader opens it
    nb = json.loads(path.read_text())
    last = nb["cells"][-1]
    text = "".join(last["source"])
    assert last["cell_type"] == "markdown" and text.startswith("## Recap"), path.name
    questions = re.findall(r"^\*\*\d+\. .+\?\*\*$", text, re.M)
    answers = re.findall(r"<details><summary>Answer</summary>\n\n(.+?)\n\n</details>", text, re.S)
    assert 3 <= len(questions) <= 5 and len(answers) == len(questions), (path.name, questions)
    assert all(len(a.split()) >= 10 for a in answers), "an answer is a few sentences, not a word"


def test_hook_count_sees_every_kind_of_hook():
    """conftest.hook_count, which the no-hook-left-behind tests rely on, counts each kind."""
    from conftest import hook_count
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert hook_count(model) == 0
    handles = [
        model[0].register_forward_hook(lambda *args: None),
        model[0].register_forward_pre_hook(lambda *args: None),
        model[1].register_full_backward_hook(lambda *args: None),
        model.register_full_backward_pre_hook(lambda *args: None),
    ]
    counts = []
    for handle in handles:
        counts.append(hook_count(model))
        handle.remove()
    assert counts == [4, 3, 2, 1] and hook_count(model) == 0
