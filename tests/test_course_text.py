"""The course's text speaks of the course as it is.

* No course text names an issue, a work session, a commit or the course's own history: the
  notebooks (markdown, speaker notes and the strings their code prints), the README and the
  pages in ``docs/`` and ``book/``. A target is the course's own claim, stated as a claim.
  Experiments shown as experiments are fine, and so are dated timings in the README.
* Every row of the glossary names notebooks that exist, and each of them uses the term.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "book").rglob("*.md")),
]

# How development history reads when it leaks into course text.
HISTORY = re.compile(
    r"\bissues?\s*#?\s*\d+"  # issue 12, issue #12
    r"|#\d+'s\b"  # #12's target
    r"|\bthe issue(?:'s)?\b"  # the issue's target
    r"|\b(?:this|last|an earlier|a previous|the previous|earlier) session\b"
    r"|\bcommit [0-9a-f]{7,}\b"
    r"|\b(?:previously|formerly)\b"
    r"|\bin an earlier version\b",
    re.IGNORECASE,
)


def _texts() -> list[tuple[str, str]]:
    """``(where, text)`` for every piece of course text."""
    texts = [
        (page.relative_to(ROOT).as_posix(), page.read_text(encoding="utf-8"))
        for page in PAGES
        if page.exists()
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        texts += [(f"{path.name} cell {i}", cell.source) for i, cell in enumerate(nb.cells)]
    return texts


def test_no_course_text_names_issues_or_history():
    found = [
        f"{where}: {m.group(0)!r} in {text[max(0, m.start() - 40) : m.end() + 40]!r}"
        for where, text in _texts()
        for m in HISTORY.finditer(text)
    ]
    assert not found, "course text that names the course's development:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        "meets issue 12's target",
        "issue #12's targets",
        "the issue's target: >= 0.9",
        "as in the previous session",
        "fixed in commit 1a2b3c4d",
        "the map previously pointed",
    ],
)
def test_the_history_pattern_catches_what_it_is_for(text):
    assert HISTORY.search(text), text


@pytest.mark.parametrize(
    "text",
    [
        "the map no longer points at the object",
        "Now the maps, for both networks",
        "a session of the group meeting",
        "the notebooks are committed without outputs",
    ],
)
def test_the_history_pattern_leaves_course_words_alone(text):
    assert not HISTORY.search(text), text


def test_the_readme_chapter_table_types_no_measured_number():
    # a row states what its chapter claims and the bound it asserts (">= 97 %", "<= 2 points");
    # the measured values live in the executed notebook, where they are computed
    rows = [
        line
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if re.match(r"\| (\d\d|talk) \|", line)
    ]
    assert len(rows) >= 12
    bounds = re.compile(r"(?:[≥≤<>=~]|at least|at most|iff) ?[\d.]+")
    typed = [
        (row[:8], m.group(0))
        for row in rows
        for m in re.finditer(r"\d+\.\d+(?:[–-]\d+\.\d+)?", bounds.sub("", row))
    ]
    assert not typed, f"measured numbers typed into the README's chapter table: {typed}"


# ------------------------------------------------------------------------- the glossary

GLOSSARY = ROOT / "docs" / "glossary.md"


def _rows() -> list[tuple[str, str, list[str]]]:
    """``(Chinese, English, notebook numbers)`` of each glossary table row."""
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("中文", "") or set(cells[0]) <= set("-: "):
            continue
        rows.append((cells[0], cells[1], re.findall(r"\b\d\d\b|talk", cells[3])))
    return rows


def _plain(text: str) -> str:
    """Lower case, "-isation" spelled "-ization", hyphens and line breaks as spaces: how a term
    is compared."""
    return re.sub(r"isation", "ization", re.sub(r"[-\s]+", " ", text.lower()))


def _notebook_text(key: str) -> str:
    paths = [p for p in NOTEBOOKS if p.name.startswith(key) and not p.name.startswith("talk_")]
    assert len(paths) == 1, f"the glossary names notebook {key!r}: found {paths}"
    nb = nbformat.read(paths[0], as_version=4)
    return _plain("\n".join(cell.source for cell in nb.cells))


def _names(english: str) -> list[str]:
    """The names a glossary row gives a term: its English names separated by commas, slashes,
    "or" or an arrow, without what stands in parentheses, formulas, markup or the dagger of an
    added term."""
    plain = re.sub(r"\([^)]*\)|\$[^$]*\$|[`*†]", "", english)
    names = [_plain(n).strip() for n in re.split(r"[,/;→]| or ", plain)]
    return [n for n in names if n]


def test_glossary_rows_name_existing_notebooks_that_use_the_term():
    rows = _rows()
    assert len(rows) > 30
    missing = []
    for chinese, english, keys in rows:
        assert keys, f"glossary row {chinese} / {english} names no notebook"
        for key in keys:
            text = _notebook_text(key)
            if not any(name in text for name in _names(english)):
                missing.append(
                    f"{chinese} / {english}: notebook {key} never says "
                    f"{' or '.join(map(repr, _names(english)))}"
                )
    assert not missing, "\n".join(missing)
