"""Build the group-meeting talk as slides that open offline (``make slides``).

    python scripts/make_slides.py [--out build] [--no-execute]

1. **Execute** ``notebooks/talk.ipynb`` in a temporary copy (nbclient), so every figure is
   computed now from the library and the shipped checkpoints. The notebook in the repository
   is only read, never written.
2. **Export** it with nbconvert's ``SlidesExporter`` (reveal.js). Cells tagged ``remove_input``
   show their figure but not their code (``TagRemovePreprocessor``); slide types come from each
   cell's ``slideshow`` metadata. Figures are PNGs embedded in the HTML.
3. **Vendor** what the page loads: reveal.js, MathJax 2, require.js and jQuery, at the versions
   pinned in :data:`PACKAGES`, fetched from the npm registry with ``npm pack`` and checked
   against the sha512 integrity the registry publishes. They are copied next to the HTML::

       build/talk.slides.html
       build/talk_files/reveal.js/  mathjax/  requirejs/  jquery/

   and the HTML points at them by relative paths, so the deck opens from the disk (or a USB
   stick: copy both) with no network. The checked tarballs are kept in ``build/.vendor/``, so
   later builds need no network at all.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TALK = ROOT / "notebooks" / "talk.ipynb"
BUILD = ROOT / "build"
ASSETS = "talk_files"  # folder next to the HTML that holds the vendored libraries

# npm package -> (pinned version, the registry's sha512 integrity of its tarball, the paths
# inside the package to copy to ASSETS/<package>/)
PACKAGES: dict[str, tuple[str, str, list[str]]] = {
    "reveal.js": (
        "4.6.1",
        "sha512-1CW0auaXNPmwmvQ7TwpszwVxMi2Xr5cTS3J3EBC/HHgbPF32Dn7ai"
        "u/LKWDOGjMbaDwKQiGmfqcoGQ74HUHCMw==",
        ["LICENSE", "dist", "plugin/notes"]),
    "mathjax": (  # MathJax 2: the API (MathJax.Hub) that nbconvert's reveal template calls
        "2.7.9",
        "sha512-NOGEDTIM9+MrsqnjPEjVGNx4q0GQxqm61yQwSK+/5S59i26wId5IC"
        "5gNu9/bu8+CCVl5p9G2IHcAl/wJa+5+BQ==",
        ["LICENSE", "MathJax.js", "config/TeX-AMS_CHTML-full.js", "config/Safe.js", "extensions",
         "localization/en", "jax/element", "jax/input/TeX", "jax/output/CommonHTML",
         "jax/output/PreviewHTML", "fonts/HTML-CSS/TeX/woff", "fonts/HTML-CSS/TeX/otf"]),
    "requirejs": (
        "2.3.7",
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38Hd"
        "TLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        ["require.js"]),
    "jquery": (
        "3.7.1",
        "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAyn"
        "V2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
        ["LICENSE.txt", "dist/jquery.min.js"]),
}

# Where the exported page looks for each library, relative to the HTML file.
URLS = {
    "reveal_url_prefix": f"{ASSETS}/reveal.js",
    "mathjax_url": f"{ASSETS}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
    "require_js_url": f"{ASSETS}/requirejs/require.js",
    "jquery_url": f"{ASSETS}/jquery/dist/jquery.min.js",
}

# nbconvert's reveal template, minus the one script it always loads from a CDN (mermaid: the
# talk has no diagrams), with headings in the case they are written in (the white theme
# capitalises them) and printed results a little smaller than code.
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}
<style type="text/css">
.reveal .slides h1, .reveal .slides h2, .reveal .slides h3 { text-transform: none; }
.reveal .jp-OutputArea-output pre { font-size: 17px; }
</style>
{%- endblock html_head_css -%}
"""


class VendorError(RuntimeError):
    """A library for the slides could not be fetched from the npm registry, or is not the one
    pinned."""


# --------------------------------------------------------------------------------------------
# Vendoring: npm pack -> sha512 check -> copy
# --------------------------------------------------------------------------------------------


def integrity(path: Path) -> str:
    """npm's integrity string of a file: ``sha512-`` + base64 of its SHA-512 digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch_package(name: str, cache: Path, npm: str = "npm") -> Path:
    """The pinned tarball of npm package ``name``, from ``cache`` or fetched with ``npm pack``.

    Raises:
        VendorError: npm is missing, the registry cannot be reached, or the tarball's sha512 is
            not the pinned one.
    """
    version, expected, _ = PACKAGES[name]
    spec = f"{name}@{version}"
    tarball = cache / f"{name}-{version}.tgz"
    if tarball.exists() and integrity(tarball) == expected:
        return tarball
    executable = shutil.which(npm)
    if executable is None:
        raise VendorError(
            f"the slides need {spec} from the npm registry, fetched with `npm pack`, but `{npm}` "
            f"is not installed. Install Node.js and npm (Debian/Ubuntu: `apt-get install npm`; "
            f"conda: `conda install nodejs`), or put the tarball at {tarball}.")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run([executable, "pack", spec, "--pack-destination", tmp,
                                   "--loglevel=error", "--fetch-retries=1"],
                                  capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            done = None
        packed = sorted(Path(tmp).glob("*.tgz"))
        if done is None or done.returncode != 0 or len(packed) != 1:
            said = "timed out after 300 s" if done is None else (
                f"exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
            raise VendorError(
                f"could not fetch {spec} from the npm registry (`npm pack {spec}` {said}). The "
                f"slides must load reveal.js and MathJax from a local copy, so building them "
                f"needs the npm registry once (later builds reuse {cache}). Check the network "
                f"and `npm config get registry`.")
        got = integrity(packed[0])
        if got != expected:
            raise VendorError(f"{spec} from the npm registry has integrity {got[:27]}..., "
                              f"pinned {expected[:27]}...: refusing to use it")
        shutil.move(str(packed[0]), tarball)
    return tarball


def unpack(tarball: Path, paths: list[str], dest: Path) -> None:
    """Copy ``paths`` (files or folders, relative to the package root) of an npm tarball, whose
    members all sit under ``package/``, into ``dest``, keeping their relative paths."""
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        for wanted in paths:
            inside = f"package/{wanted}"
            chosen = [m for m in members if m.isfile()
                      and (m.name == inside or m.name.startswith(inside + "/"))]
            if not chosen:
                raise VendorError(f"{tarball.name} has no {wanted}")
            for member in chosen:
                target = dest / Path(member.name).relative_to("package")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)


def vendor(assets: Path, cache: Path) -> None:
    """Fetch (or reuse) every pinned package and copy its files into ``assets``."""
    if assets.exists():
        shutil.rmtree(assets)
    for name, (_, _, paths) in PACKAGES.items():
        unpack(fetch_package(name, cache), paths, assets / name)


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
        NotebookClient(executed, timeout=timeout, kernel_name=kernel,
                       resources={"metadata": {"path": tmp}}).execute()
    return executed


def export(nb: nbformat.NotebookNode) -> str:
    """The reveal.js HTML of ``nb``, pointing at the vendored libraries by relative paths."""
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
    config.SlidesExporter.reveal_theme = "white"  # its fonts are local ("simple" loads web fonts)
    config.SlidesExporter.reveal_transition = "none"
    config.SlidesExporter.reveal_number = "c/t"
    for trait, url in URLS.items():
        config.SlidesExporter[trait] = url
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)  # widget state would pull the widget manager from a CDN
    exporter = SlidesExporter(config=config, raw_template=TEMPLATE)
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": "talk"}})
    return html


class _Sections(HTMLParser):
    """Counts reveal.js slides: ``<section>`` elements with no ``<section>`` inside."""

    def __init__(self):
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


def build(out: Path = BUILD, notebook: Path = TALK, run: bool = True,
          cache: Path | None = None) -> Path:
    """Execute (unless ``run=False``) and export the talk to ``out/talk.slides.html``, with the
    libraries it loads in ``out/talk_files/``. Returns the HTML's path."""
    out = Path(out)
    cache = Path(cache) if cache is not None else BUILD / ".vendor"
    out.mkdir(parents=True, exist_ok=True)
    vendor(out / ASSETS, cache)  # first: fail early, before the long execution, if offline
    nb = nbformat.read(notebook, as_version=4)
    if run:
        nb = execute(nb)
    path = out / "talk.slides.html"
    path.write_text(export(nb), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BUILD, help="output folder (default build/)")
    parser.add_argument("--notebook", type=Path, default=TALK, help="the talk notebook")
    parser.add_argument("--no-execute", dest="run", action="store_false",
                        help="export the notebook as it is (no figures unless it has outputs)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = build(args.out, args.notebook, args.run)
    except VendorError as err:
        sys.exit(f"make_slides: {err}")
    html = path.read_text(encoding="utf-8")
    print(f"{path} ({len(html) / 1e6:.1f} MB, {count_slides(html)} slides) and "
          f"{path.parent / ASSETS}/ in {time.perf_counter() - start:.0f} s. It opens offline: "
          f"open the HTML file in a browser (keep {ASSETS}/ beside it).")


if __name__ == "__main__":
    main()
