"""The group-meeting talk: notebooks/talk.ipynb and its offline slides (scripts/make_slides.py).

`test_build_executes_and_exports_offline` is the slow one (it runs the talk, about a minute):
it builds the deck into a temporary folder exactly as `make slides` does, counts the slides and
checks that nothing the page loads comes from the network. The libraries come from the npm
registry the first time and are then reused from build/.vendor/.
"""

import hashlib
import importlib.util
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TALK = ROOT / "notebooks" / "talk.ipynb"
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


def _load_script():
    path = ROOT / "scripts" / "make_slides.py"
    spec = importlib.util.spec_from_file_location("make_slides", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_slides = _load_script()


class _Page(HTMLParser):
    """What a reveal.js page loads and how many slides it has (leaf <section> elements)."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []  # src / href of <script>, <link>, <img>, <iframe>
        self.open_sections: list[bool] = []  # per open <section>: has a <section> inside?
        self.slides = 0
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])
        if tag == "img" and (attrs.get("src") or "").startswith("data:image/png;base64,"):
            self.images += 1
        if tag == "section":
            if self.open_sections:
                self.open_sections[-1] = True
            self.open_sections.append(False)

    def handle_endtag(self, tag):
        if tag == "section" and self.open_sections:
            self.slides += not self.open_sections.pop()


def _remote(url: str) -> bool:
    return re.match(r"^(https?:)?//", url.strip(), re.I) is not None


# --------------------------------------------------------------------------------------------
# The notebook: committed clean, slide types set, figure code hidden
# --------------------------------------------------------------------------------------------


def test_talk_notebook_is_a_slide_deck():
    nb = nbformat.read(TALK, as_version=4)
    types = [cell.metadata.get("slideshow", {}).get("slide_type") for cell in nb.cells]
    assert all(t in SLIDE_TYPES for t in types), types
    assert types[0] == "slide"
    assert 18 <= sum(t in ("slide", "subslide") for t in types) <= 26
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit it without outputs"
            shown = cell.metadata["slideshow"]["slide_type"] != "skip"
            # a code cell on a slide shows its figure, not its code
            assert not shown or "remove_input" in cell.metadata.get("tags", []), cell.source[:60]
    text = "\n".join(cell.source for cell in nb.cells)
    assert "import vismap as vm" in text and "assert " in text and "$$" in text
    for name in ("shapes-cnn", "shapes-gap"):
        assert f'load_pretrained("{name}")' in text


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("npm") is None,
                    reason="make slides fetches reveal.js and MathJax with npm, not installed here")
def test_build_executes_and_exports_offline(tmp_path):
    before = hashlib.sha256(TALK.read_bytes()).hexdigest()
    html_path = make_slides.build(tmp_path)  # executes the talk in a temporary copy
    assert hashlib.sha256(TALK.read_bytes()).hexdigest() == before, "the notebook was written"
    assert html_path == tmp_path / "talk.slides.html"
    html = html_path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)

    assert 18 <= page.slides <= 26, page.slides  # about twenty slides
    assert make_slides.count_slides(html) == page.slides
    assert page.images >= 10, "the figures are computed live and embedded as PNG"
    assert 'class="highlight hl-ipython3"' not in html, "figure code must not be on the slides"
    assert '<aside class="notes">' in html  # speaker notes

    # Offline: nothing is loaded from the network, and every local file it loads is there.
    assert page.loads, "found no <script>/<link> at all"
    remote = [url for url in page.loads if _remote(url)]
    assert not remote, f"loaded from the network: {remote}"
    assert not re.search(r"""import\s[^;]*from\s*['"](https?:)?//""", html)  # ES modules
    assert not re.search(r"cdnjs|unpkg|jsdelivr", html)
    required = [url.split("?")[0] for url in page.loads if not url.startswith("data:")]
    required += re.findall(r'"(talk_files/[^"]+\.js)"', html)  # what require() loads
    for url in required:
        assert (tmp_path / url).is_file(), f"{url} is referenced but not there"
    assets = tmp_path / "talk_files"
    for path in ("reveal.js/dist/reveal.js", "reveal.js/dist/reveal.css",
                 "reveal.js/dist/theme/white.css", "reveal.js/plugin/notes/notes.js",
                 "mathjax/MathJax.js", "mathjax/config/TeX-AMS_CHTML-full.js",
                 "mathjax/jax/output/CommonHTML/jax.js", "requirejs/require.js",
                 "jquery/dist/jquery.min.js"):
        assert (assets / path).is_file(), path
    theme = re.search(r'href="(talk_files/reveal.js/dist/theme/[\w-]+\.css)"', html).group(1)
    assert not re.search(r"@import\s+url\(\s*['\"]?(https?:)?//", (tmp_path / theme).read_text()), \
        "the theme would fetch web fonts"


def test_without_npm_the_build_says_what_it_needs(tmp_path):
    with pytest.raises(make_slides.VendorError, match=r"reveal\.js@4\.6\.1.*npm.*not installed"):
        make_slides.fetch_package("reveal.js", tmp_path, npm="vismap-no-such-npm")


def test_a_tampered_cached_tarball_is_not_used(tmp_path):
    version = make_slides.PACKAGES["requirejs"][0]
    (tmp_path / f"requirejs-{version}.tgz").write_bytes(b"not the pinned tarball")
    with pytest.raises(make_slides.VendorError, match="npm"):
        make_slides.fetch_package("requirejs", tmp_path, npm="vismap-no-such-npm")
