"""Build the course as a book: ``build/book/index.html`` (``make book``).

The book is Sphinx + MyST-NB with sphinx-book-theme (see ``book/conf.py`` for why and for how it
stays offline). This script does three things:

1. **Executed notebooks, executed once.** For each chapter listed in ``book/toc.yml`` it looks for
   an executed copy in ``build/executed/NAME.ipynb``. ``make test`` writes those when the
   ``scripts/nbsave.py`` pytest plugin is enabled: nbval executes every notebook anyway, and the
   plugin keeps its outputs. A copy is reused when the key in its metadata equals the
   notebook's key now (a hash of the notebook's cells, the library's source and the data
   manifest, :func:`nbsave.source_key`); otherwise the notebook is executed here with nbclient,
   in ``notebooks/`` as nbval does, and the copy is written to the same place - so that folder
   is also the book's execution cache, and an unchanged book is never executed again.
2. **The pages laid out** in ``build/book_src/``, mirroring the repository's paths (so that the
   notebooks' and the glossary's relative links and images resolve): the executed chapters
   (widget outputs replaced by a note, exercise solutions folded), ``docs/glossary.md``,
   ``docs/figures/``, the start page (``book/index.md`` filled with the README's introduction,
   its table of notebooks and the table of contents) and ``book/*.md``. A file is rewritten only
   when its content changes, so Sphinx's incremental build re-reads only what changed.
3. ``sphinx-build -c book build/book_src build/book`` (run in this process).

Usage::

    python -m scripts.make_book [--jobs N] [--strict] [--execute-only]

A notebook that fails while executed for the book stops the build, naming the notebook and the
cell. Exit status 0 when the book was built.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import html
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import nbsave  # the executed-notebook key, shared with nbval's run

ROOT = Path(__file__).resolve().parents[1]

BOOK = ROOT / "book"
TOC = BOOK / "toc.yml"
README = ROOT / "README.md"
SRC = ROOT / "build" / "book_src"
OUT = ROOT / "build" / "book"
BUILD = ROOT / "build"
FIGURES = "docs/figures"
README_SECTION = "The notebooks"  # the README section that the start page reproduces
SLIDES = ("talk.slides.html", "talk_zh.slides.html")  # written by `make slides` into build/
EXERCISES = "exercises"  # build/exercises/, written by `make exercises`
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    '<p class="vismap-widget-note">An interactive widget (a set of controls or a '
    "progress bar) runs here when the notebook is opened in JupyterLab "
    "(<code>make lab</code>).</p>"
)


def log(message: str) -> None:
    print(f"[book {time.strftime('%H:%M:%S')}] {message}", flush=True)


class BookError(Exception):
    """The book cannot be built; the message says why."""


# --------------------------------------------------------------------------------------------
# The table of contents
# --------------------------------------------------------------------------------------------


@dataclass
class Toc:
    parts: list[tuple[str, list[str]]]  # (caption, pages), paths from the repository root
    not_chapters: dict[str, str]  # notebook path -> why it is not a chapter

    def pages(self) -> list[str]:
        return [p for _, pages in self.parts for p in pages]

    def notebooks(self) -> list[str]:
        return [p for p in self.pages() if p.endswith(".ipynb")]


def read_toc(path: Path = TOC) -> Toc:
    """Read ``book/toc.yml``; a malformed file raises :class:`BookError` saying what is wrong."""
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("parts"), list):
        raise BookError(f"{path}: expected a mapping with a list `parts`, got {type(data)}")
    parts = []
    for i, part in enumerate(data["parts"]):
        if not (
            isinstance(part, dict)
            and isinstance(part.get("caption"), str)
            and isinstance(part.get("pages"), list)
        ):
            raise BookError(
                f"{path}: part {i} must have `caption` (text) and `pages` (a list), got {part!r}"
            )
        for page in part["pages"]:
            if not isinstance(page, str) or not page.endswith((".ipynb", ".md")):
                raise BookError(
                    f"{path}: part {part['caption']!r}: a page is a path ending in "
                    f".ipynb or .md, got {page!r}"
                )
        parts.append((part["caption"], list(part["pages"])))
    toc = Toc(parts, dict(data.get("not_chapters") or {}))
    seen: set[str] = set()
    for page in toc.pages():
        if page in seen:
            raise BookError(f"{path}: {page} is listed twice")
        seen.add(page)
    return toc


# --------------------------------------------------------------------------------------------
# 1. Executed notebooks
# --------------------------------------------------------------------------------------------


def _execute(source: str, key: str, target: str, timeout: int) -> tuple[str, float]:
    """Execute one notebook with nbclient in its own folder; write it, stamped, to ``target``.
    Runs in a worker process."""
    import nbclient
    import nbformat

    path = Path(source)
    nb = nbformat.read(path, as_version=4)
    log(f"{path.name}: executing")
    start = time.monotonic()
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        raise BookError(
            f"{path.relative_to(ROOT)} failed while executed for the book:\n{str(err)[-3000:]}"
        ) from None
    seconds = time.monotonic() - start
    nbsave.stamp(nb, key, "make_book", seconds)
    nbsave.write_executed(nb, Path(target))
    return source, seconds


def executed_notebooks(paths: list[Path], jobs: int = 1, timeout: int = 1800) -> dict[Path, Path]:
    """The executed copy of each notebook: reused when its key matches, executed otherwise."""
    import nbformat

    cache = nbsave.executed_dir(ROOT)
    deps = nbsave.dependencies_key(ROOT)
    result, todo = {}, []
    for path in paths:
        key = nbsave.source_key(nbformat.read(path, as_version=4), deps, ROOT)
        copy = cache / path.name
        result[path] = copy
        stamp = {}
        if copy.exists():
            stamp = (
                json.loads(copy.read_text())
                .get("metadata", {})
                .get("vismap", {})
                .get("executed", {})
            )
        if stamp.get("key") == key:
            log(
                f"{path.name}: reusing its execution by {stamp.get('by')} at {stamp.get('at')} "
                f"({stamp.get('seconds')} s)"
            )
        else:
            why = "not executed yet" if not copy.exists() else "changed since executed"
            todo.append((path, key, copy, why))
    if todo:
        log(
            f"{len(todo)} notebook(s) to execute with nbclient, {jobs} at a time: "
            + ", ".join(f"{path.name} ({why})" for path, _, _, why in todo)
        )
        start = time.monotonic()
        if jobs == 1:  # in this process: a failure stops at once
            for path, key, copy, _ in todo:
                _, seconds = _execute(str(path), key, str(copy), timeout)
                log(f"{path.name}: executed in {seconds:.1f} s")
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [
                    pool.submit(_execute, str(path), key, str(copy), timeout)
                    for path, key, copy, _ in todo
                ]
                try:
                    for future in concurrent.futures.as_completed(futures):
                        source, seconds = future.result()
                        log(f"{Path(source).name}: executed in {seconds:.1f} s")
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # the running ones end
                    raise
        log(f"execution took {time.monotonic() - start:.1f} s")
    return result


# --------------------------------------------------------------------------------------------
# 2. The pages
# --------------------------------------------------------------------------------------------


def write_if_changed(path: Path, content: str | bytes) -> bool:
    """Write ``content`` unless ``path`` already holds it (Sphinx then skips the page)."""
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def to_build(page: str) -> str:
    """The relative link from ``page``'s HTML (in build/book/) to the folder build/."""
    return "../" * (page.count("/") + 1)


def is_solution(cell: Any) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell["cell_type"] == "code" and (
        meta.get("solution") or "### BEGIN SOLUTION" in cell["source"]
    )


def book_notebook(executed: Path) -> str:
    """The executed notebook as a page: widget outputs become a note (their JavaScript would come
    from a CDN, and a frozen widget does nothing), the widget state is dropped, exercise
    solutions are folded (``hide-input``), and the execution stamp is kept."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if WIDGET_MIME in out.get("data", {}):
                out["data"] = {
                    "text/html": WIDGET_NOTE,
                    "text/plain": "(an interactive widget; run the notebook)",
                }
        if is_solution(cell):
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    return nbformat.writes(nb)


def readme_parts(readme: Path = README) -> tuple[str, str]:
    """The README's title with its introduction (everything before the first ``##``), and the
    body of its section :data:`README_SECTION`."""
    text = readme.read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    intro = sections[0].strip()
    for section in sections[1:]:
        heading, _, body = section.partition("\n")
        if heading.strip() == README_SECTION:
            return intro, body.strip()
    headings = [s.partition("\n")[0].strip() for s in sections[1:]]
    raise BookError(
        f"README.md has no section `## {README_SECTION}` for the start page; its "
        f"sections are {headings}"
    )


def link_slides(text: str, page: str, chapters: set[str]) -> str:
    """Rewrite links for the book: a talk notebook links to its slides in build/, a link to a
    notebook that is not in this build says so instead of breaking."""
    base = posix_dir(page)

    def repl(match: re.Match) -> str:
        label, target = match.group(1), match.group(2)
        resolved = (
            os.path.normpath(os.path.join(base, target))
            if not target.startswith(("http:", "https:", "#", "/"))
            else target
        )
        name = Path(resolved).name
        if re.fullmatch(r"talk(_\w+)?\.ipynb", name) and resolved.startswith("notebooks/"):
            href = to_build(page) + name.replace(".ipynb", ".slides.html")
            return f'<a href="{html.escape(href)}">{label}</a>'
        if (
            resolved.startswith("notebooks/")
            and resolved.endswith(".ipynb")
            and (resolved not in chapters)
        ):
            return f'<span class="vismap-missing">{label}</span>'
        return match.group(0)

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", repl, text)


def posix_dir(page: str) -> str:
    return os.path.dirname(page) or "."


def toctrees(toc: Toc, present: set[str]) -> str:
    blocks = []
    for caption, pages in toc.parts:
        entries = [p.rsplit(".", 1)[0] for p in pages if p in present]
        if entries:
            blocks.append(
                "```{toctree}\n:hidden:\n:maxdepth: 2\n:caption: "
                + caption
                + "\n\n"
                + "\n".join(entries)
                + "\n```"
            )
    return "\n\n".join(blocks)


def slides_and_exercises_links(page: str, chapters: list[str]) -> tuple[str, str]:
    """HTML links from ``page`` to the slides and to each chapter's student version in build/
    (the page says which command builds them; the book does not depend on them)."""
    up = to_build(page)
    language = {"talk.slides.html": "English", "talk_zh.slides.html": "Chinese"}
    slides = " and ".join(f'<a href="{up}{name}">{name}</a> ({language[name]})' for name in SLIDES)
    exercises = [
        f'<a href="{up}{EXERCISES}/{Path(c).name}">{Path(c).stem}</a>'
        for c in chapters
        if "nbgrader" in (ROOT / c).read_text()
    ]
    folder = f'<a href="{up}{EXERCISES}/">build/{EXERCISES}/</a>'
    return slides, folder + (" (" + ", ".join(exercises) + ")" if exercises else "")


def stage(toc: Toc, executed: dict[Path, Path]) -> list[str]:
    """Lay out build/book_src/; returns the pages in it (paths from the repository root)."""
    present = set()
    chapters = {p for p in toc.notebooks() if (ROOT / p).exists()}
    wanted: set[Path] = set()

    def put(rel: str, content: str | bytes) -> None:
        wanted.add(SRC / rel)
        write_if_changed(SRC / rel, content)

    for page in toc.pages():
        source = ROOT / page
        if not source.exists():
            log(f"{page} (listed in book/toc.yml) does not exist yet: left out of this build")
            continue
        present.add(page)
        if page.endswith(".ipynb"):
            put(page, book_notebook(executed[source]))
        else:
            text = source.read_text()
            if page == "book/slides_and_exercises.md":
                slides, exercises = slides_and_exercises_links(page, sorted(chapters))
                text = text.replace("{{SLIDES}}", slides).replace("{{EXERCISES}}", exercises)
            put(page, link_slides(text, page, chapters))
    for figure in sorted((ROOT / FIGURES).glob("*")):
        if figure.is_file():
            put(f"{FIGURES}/{figure.name}", figure.read_bytes())
    intro, notebooks = readme_parts()
    index = (BOOK / "index.md").read_text()
    index = re.sub(r"\A<!--.*?-->\s*", "", index, flags=re.S)  # the template's own comment
    index = (
        index.replace("{{README_INTRO}}", link_slides(intro, "index.md", chapters))
        .replace("{{README_NOTEBOOKS}}", link_slides(notebooks, "index.md", chapters))
        .replace("{{TOC}}", toctrees(toc, present))
    )
    put("index.md", index)
    for stale in [p for p in SRC.rglob("*") if p.is_file() and p not in wanted]:
        stale.unlink()  # a page that left the book
    return sorted(present)


# --------------------------------------------------------------------------------------------
# 3. Sphinx
# --------------------------------------------------------------------------------------------


def sphinx(strict: bool = False) -> list[str]:
    """Run sphinx-build; returns its warnings. Raises BookError when it fails."""
    warnings_file = BUILD / "book-warnings.txt"
    from sphinx.cmd.build import build_main

    arguments = [
        "-b",
        "html",
        "-q",
        "-c",
        str(BOOK),
        "-d",
        str(BUILD / "book_doctrees"),
        "-w",
        str(warnings_file),
        str(SRC),
        str(OUT),
    ]
    if strict:
        arguments += ["-W", "--keep-going"]
    # in this process: the imports it shares with the steps before (nbformat pulls in
    # jsonschema, seconds on a loaded machine) are paid once
    status = build_main(arguments)
    warnings = (
        [w for w in warnings_file.read_text().splitlines() if w.strip()]
        if (warnings_file.exists())
        else []
    )
    if status != 0:
        raise BookError(
            f"sphinx-build failed (exit status {status}); see {warnings_file.relative_to(ROOT)}"
        )
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks executed at once when they must be (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=1800,
        help="seconds one cell may take when a notebook is executed",
    )
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    parser.add_argument(
        "--execute-only", action="store_true", help="only bring build/executed/ up to date"
    )
    parser.add_argument(
        "--toc",
        type=Path,
        default=TOC,
        help="another table of contents, e.g. a few chapters while writing them "
        "(default book/toc.yml)",
    )
    args = parser.parse_args(argv)
    # `kill` ends the build through the `finally` blocks: nbclient shuts its kernel down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    started = time.monotonic()
    try:
        toc = read_toc(args.toc)
        notebooks = [ROOT / p for p in toc.notebooks() if (ROOT / p).exists()]
        executed = executed_notebooks(notebooks, args.jobs, args.timeout)
        if args.execute_only:
            return 0
        staged_at = time.monotonic()
        pages = stage(toc, executed)
        log(f"{len(pages)} pages laid out in {SRC.relative_to(ROOT)}/")
        warnings = sphinx(args.strict)
        log(
            f"sphinx-build took {time.monotonic() - staged_at:.1f} s, {len(warnings)} "
            f"warning(s)"
            + (f" (in {BUILD.relative_to(ROOT)}/book-warnings.txt)" if warnings else "")
        )
        for warning in warnings[:10]:
            print("   ", warning)
    except BookError as err:
        print(f"make book: {err}", file=sys.stderr)
        return 1
    log(f"{OUT.relative_to(ROOT)}/index.html built in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
