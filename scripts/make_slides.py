"""Build the group-meeting talk, in English and in Chinese, as slides that open offline
(``make slides``).

    python scripts/make_slides.py [--out build] [--notebook PATH ...] [--no-execute]

1. **Execute** each deck (``notebooks/talk.ipynb`` and ``notebooks/talk_zh.ipynb``) in a
   temporary copy (nbclient), so that every figure and every number is computed now from the
   library and the shipped checkpoints. The notebooks in the repository are only read.
2. **Export** each with nbconvert's ``SlidesExporter`` (reveal.js). Cells tagged
   ``remove_input`` show their figure but not their code; slide types and speaker notes come
   from each cell's ``slideshow`` metadata (``notes`` cells become ``<aside class="notes">``,
   shown by reveal.js' speaker view, key ``s``). Figures are PNGs embedded in the HTML.
3. **Copy** what the pages load next to them, from two Python packages of the course's dev
   dependencies, so that no Node.js, npm or network is needed:

   * reveal.js (``dist/``, the white theme and its fonts, the notes plugin) from
     ``sphinx-revealjs``, which ships it under ``sphinx_revealjs/_static/revealjs``;
   * MathJax 2 (the ``MathJax.Hub`` API the reveal template calls, HTML-CSS output with the
     STIX-Web fonts) from ``jupyter-server-mathjax``, which ships it under
     ``jupyter_server_mathjax/static``.

   ::

       build/talk.slides.html  build/talk_zh.slides.html
       build/talk_files/reveal.js/  mathjax/

   The pages point at them by relative paths and load nothing else (no jQuery, require.js or
   mermaid, which nbconvert's template would fetch from a CDN), so a deck opens from the disk,
   or from a USB stick with ``talk_files/`` beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TALKS = [ROOT / "notebooks" / "talk.ipynb", ROOT / "notebooks" / "talk_zh.ipynb"]
BUILD = ROOT / "build"
ASSETS = "talk_files"  # folder next to the HTML files that holds reveal.js and MathJax

# Python package -> (folder inside it, the files or folders to copy, where they go in ASSETS,
# a file and a regular expression that finds the library's version in it, the oldest major)
SOURCES: dict[str, tuple[str, list[str], str, str, str, int]] = {
    "sphinx_revealjs": (
        "_static/revealjs",
        [
            "LICENSE",
            "dist/reveal.js",
            "dist/reveal.css",
            "dist/reset.css",
            "dist/theme/white.css",
            "dist/theme/fonts/source-sans-pro",
            "plugin/notes/notes.js",
        ],
        "reveal.js",
        "dist/reveal.js",
        r"reveal\.js (\d+)\.(\d+)\.(\d+)",
        4,
    ),
    "jupyter_server_mathjax": (
        "static",
        [
            "LICENSE",
            "MathJax.js",
            "config",
            "extensions",
            "localization/en",
            "jax/input/TeX",
            "jax/element",
            "jax/output/HTML-CSS",
            "fonts/HTML-CSS/STIX-Web/woff",
        ],
        "mathjax",
        "MathJax.js",
        r'MathJax\.version="(\d+)\.(\d+)\.(\d+)"',
        2,
    ),
}
PIP_NAMES = {
    "sphinx_revealjs": "sphinx-revealjs",
    "jupyter_server_mathjax": "jupyter-server-mathjax",
}

# Where a page looks for each library, relative to the HTML file.
REVEAL = f"{ASSETS}/reveal.js"
MATHJAX = f"{ASSETS}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"

# nbconvert's reveal template with what it loads replaced: no jQuery, require.js or mermaid
# (from CDNs, and unused by the talk), reveal.js and its notes plugin as plain scripts, MathJax
# with the fonts the package ships (STIX-Web), headings in the case they are written in, and a
# font list that reaches a real CJK font for the Chinese deck; printed results smaller than
# nbconvert's 19 px, so that a measured line fits the slide.
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_jquery -%}{%- endblock html_head_js_jquery -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]],
            displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], webFont: "STIX-Web", imageFont: null, preferredFont: null,
               // MathJax's blank test font is url(about:blank), which a page opened from the
               // disk may not load (a console error); a local() name that matches no font is
               // just as blank
               styles: {"@font-face": {"font-family": "MathJax_Blank",
                                       src: "local('vismap no such font')"}}},
  displayAlign: "center", messageStyle: "none",
  // no hidden MathML copy: its styles would ask for TeX fonts the package does not ship
  menuSettings: {zoom: "None", assistiveMML: false}
});
</script>
<script src="{{ resources.vismap_mathjax }}"></script>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_css -%}
<style type="text/css">
.reveal .slides h1, .reveal .slides h2, .reveal .slides h3 { text-transform: none; }
.reveal div.jp-OutputArea-output > pre { font-size: 14px; line-height: 1.35; width: 100%; }
.reveal {  /* the theme's fonts, then Chinese ones (variables on .reveal beat the theme's :root) */
  --r-main-font: "Source Sans Pro", "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
    "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", Helvetica, sans-serif;
  --r-heading-font: var(--r-main-font); }
.reveal .jp-OutputArea-output pre {
  font-family: "DejaVu Sans Mono", "Noto Sans Mono CJK SC", "Noto Sans CJK SC", monospace; }
</style>
{%- endblock html_head_css -%}
{% block footer_js %}
<script src="{{ reveal_url_prefix }}/dist/reveal.js"></script>
<script src="{{ reveal_url_prefix }}/plugin/notes/notes.js"></script>
<script>
// nbconvert puts a notes cell that follows a fragment inside that fragment, where the speaker
// view shows it only while the fragment is the current one: the notes belong to the slide
document.querySelectorAll(".reveal .slides .fragment aside.notes").forEach(function (notes) {
  notes.closest("section").appendChild(notes);
});
Reveal.initialize({
  controls: true, progress: true, history: true,
  transition: "{{ reveal_transition }}", slideNumber: "{{ reveal_number }}",
  plugins: [RevealNotes], width: {{ reveal_width }}, height: {{ reveal_height }}
});
// MathJax typesets while most slides are hidden; typeset the current one again when shown
Reveal.on("slidechanged", function () {
  if (window.MathJax && MathJax.Hub) {
    MathJax.Hub.Queue(["Rerender", MathJax.Hub, Reveal.getCurrentSlide()]);
  }
});
// a slide taller than the window scrolls instead of being cut off
Reveal.on("slidechanged", function () {
  if (!{{ reveal_scroll }}) { return; }
  var limit = document.querySelector(".reveal").clientHeight * 0.95;
  document.querySelectorAll("section.present section, section.present").forEach(function (s) {
    if (s.scrollHeight > limit && !s.querySelector("section")) {
      s.style.height = "95vh"; s.style.overflowY = "scroll"; s.style.marginTop = "20px"; }
  });
});
</script>
{% endblock footer_js %}
"""


class VendorError(RuntimeError):
    """A Python package that ships the files the slides load is missing or too old."""


# --------------------------------------------------------------------------------------------
# reveal.js and MathJax, from Python packages
# --------------------------------------------------------------------------------------------


def package_folder(module: str) -> Path:
    """The folder of ``module``'s shipped web files (see :data:`SOURCES`), checked.

    Raises:
        VendorError: the package is not installed, lacks the files, or ships a version older
            than the slides need.
    """
    inside, _, _, version_file, pattern, oldest = SOURCES[module]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise VendorError(
            f"the slides load their libraries from the Python package {PIP_NAMES[module]}, which "
            f"is not installed; install the course's dev dependencies: "
            f"{sys.executable} -m pip install -e '.[dev]'"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / inside
    found = folder / version_file
    match = (
        re.search(pattern, found.read_text(errors="replace")[:200_000]) if found.is_file() else None
    )
    if match is None:
        raise VendorError(
            f"{PIP_NAMES[module]} has no {inside}/{version_file} with a version "
            f"in it; reinstall it ({sys.executable} -m pip install --force-reinstall "
            f"{PIP_NAMES[module]})"
        )
    if int(match.group(1)) < oldest:
        raise VendorError(
            f"{PIP_NAMES[module]} ships version {'.'.join(match.groups())} of its "
            f"library; the slides need {oldest}.x or newer: upgrade the package"
        )
    return folder


def library_versions() -> dict[str, str]:
    """The versions of reveal.js and MathJax that :func:`vendor` copies."""
    versions = {}
    for module, (_, _, target, version_file, pattern, _) in SOURCES.items():
        text = (package_folder(module) / version_file).read_text(errors="replace")[:200_000]
        versions[target] = ".".join(re.search(pattern, text).groups())
    return versions


def vendor(assets: Path) -> None:
    """Copy reveal.js and MathJax from their Python packages into ``assets``."""
    folders = {module: package_folder(module) for module in SOURCES}  # all checked first
    if assets.exists():
        shutil.rmtree(assets)
    for module, (_, paths, target, _, _, _) in SOURCES.items():
        for path in paths:
            source, dest = folders[module] / path, assets / target / path
            if not source.exists():
                raise VendorError(
                    f"{PIP_NAMES[module]} has no {source.relative_to(folders[module])}"
                    f"; reinstall it"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, dest)
            else:
                shutil.copy2(source, dest)


# --------------------------------------------------------------------------------------------
# Execute and export
# --------------------------------------------------------------------------------------------


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """Run the notebook top to bottom in a fresh kernel, in a temporary folder, and return the
    executed copy (the file in the repository is not touched)."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as tmp:
        nbformat.write(nb, Path(tmp) / "talk.ipynb")
        executed = nbformat.read(Path(tmp) / "talk.ipynb", as_version=4)
        kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
        NotebookClient(
            executed, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": tmp}}
        ).execute()
    return executed


def export(nb: nbformat.NotebookNode, name: str = "talk") -> str:
    """The reveal.js HTML of ``nb``, pointing at the copied libraries by relative paths. The
    page's ``lang`` is the notebook's ``metadata.language`` (default ``en``), so that the
    browser picks fonts for that language."""
    from nbconvert.exporters import SlidesExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    config.TagRemovePreprocessor.remove_cell_tags = {"remove_cell"}
    config.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    config.SlidesExporter.exclude_input_prompt = True
    config.SlidesExporter.exclude_output_prompt = True
    config.SlidesExporter.reveal_scroll = True  # a tall slide scrolls instead of being cut off
    config.SlidesExporter.reveal_theme = "white"  # its fonts ship with it
    config.SlidesExporter.reveal_transition = "none"
    config.SlidesExporter.reveal_number = "c/t"
    config.SlidesExporter.reveal_url_prefix = REVEAL
    config.SlidesExporter.language_code = str(nb.metadata.get("language", "en")).split("-")[0]
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)  # widget state would pull the widget manager from a CDN
    exporter = SlidesExporter(config=config, raw_template=TEMPLATE)
    html, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": name}, "vismap_mathjax": MATHJAX}
    )
    return html


class _Sections(HTMLParser):
    """Counts reveal.js slides: ``<section>`` elements with no ``<section>`` inside."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []  # per open section: does it contain a section?
        self.slides = 0

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            if self.stack:
                self.stack[-1] = True
            self.stack.append(False)

    def handle_endtag(self, tag):
        if tag == "section" and self.stack:
            self.slides += not self.stack.pop()


def count_slides(html: str) -> int:
    """The number of slides of a reveal.js page (vertical sub-slides included)."""
    parser = _Sections()
    parser.feed(html)
    return parser.slides


def html_name(notebook: Path) -> str:
    """``talk.ipynb`` -> ``talk.slides.html``."""
    return f"{Path(notebook).stem}.slides.html"


def build(out: Path = BUILD, notebooks: list[Path] | None = None, run: bool = True) -> list[Path]:
    """Execute (unless ``run=False``) and export each deck to ``out/<name>.slides.html``, with
    the libraries they load in ``out/talk_files/``. Returns the HTML files' paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vendor(out / ASSETS)  # first: fail early, before the long execution, if a package is missing
    paths = []
    for notebook in notebooks or TALKS:
        nb = nbformat.read(notebook, as_version=4)
        if run:
            nb = execute(nb)
        path = out / html_name(notebook)
        path.write_text(export(nb, Path(notebook).stem), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BUILD, help="output folder (default build/)")
    parser.add_argument(
        "--notebook",
        type=Path,
        action="append",
        default=None,
        help="a deck to build (repeatable; default: talk.ipynb and talk_zh.ipynb)",
    )
    parser.add_argument(
        "--no-execute",
        dest="run",
        action="store_false",
        help="export the notebooks as they are (no figures unless they have outputs)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        versions = library_versions()
        for notebook in args.notebook or TALKS:
            begun = time.perf_counter()
            (path,) = build(args.out, [notebook], args.run)
            html = path.read_text(encoding="utf-8")
            print(
                f"{path} ({len(html) / 1e6:.1f} MB, {count_slides(html)} slides) in "
                f"{time.perf_counter() - begun:.0f} s"
            )
    except VendorError as err:
        sys.exit(f"make_slides: {err}")
    print(
        f"reveal.js {versions['reveal.js']} and MathJax {versions['mathjax']} copied to "
        f"{args.out / ASSETS}/ from their Python packages; {time.perf_counter() - start:.0f} s "
        f"in all. The decks open offline: open an HTML file in a browser (keep {ASSETS}/ beside "
        f"it); press s for the speaker notes."
    )


if __name__ == "__main__":
    main()
