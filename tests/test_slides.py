"""The group-meeting talk: notebooks/talk.ipynb, notebooks/talk_zh.ipynb and their offline slides
(scripts/make_slides.py).

Nothing here executes a deck: nbval already runs both notebooks (every figure, every asserted
number). These tests guard what nbval cannot see, cheaply: that each deck is a slide deck with a
title and speaker notes on every slide; that the Chinese deck is the English one with only its
words changed (same slides, same code, same formulas, every label translated); that the deck
describes factor maps as the library computes them; and that the exported HTML, built from the
notebooks with a stand-in figure in every shown code cell, loads only local files that exist.
"""

import ast
import importlib.util
import inspect
import re
import string
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

import vismap as vm

ROOT = Path(__file__).resolve().parents[1]
TALK = ROOT / "notebooks" / "talk.ipynb"
TALK_ZH = ROOT / "notebooks" / "talk_zh.ipynb"
DECKS = [TALK, TALK_ZH]
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}
CJK = re.compile(r"[\u4e00-\u9fff]")
# a 1x1 PNG: stands in for a figure when the export is tested without running the deck
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
    "RU5ErkJggg=="
)


def _load_script():
    path = ROOT / "scripts" / "make_slides.py"
    spec = importlib.util.spec_from_file_location("make_slides", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_slides = _load_script()


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _slide_type(cell) -> str:
    return cell.metadata.get("slideshow", {}).get("slide_type", "-")


def _slides(nb) -> list[list]:
    """The cells of each slide (a "slide" or "subslide" cell starts one; skipped cells are
    left out)."""
    slides: list[list] = []
    for cell in nb.cells:
        kind = _slide_type(cell)
        if kind in ("slide", "subslide"):
            slides.append([cell])
        elif kind != "skip" and slides:
            slides[-1].append(cell)
    return slides


def _language_cell(nb):
    (cell,) = [c for c in nb.cells if "language" in c.metadata.get("tags", [])]
    return cell


def _language(nb) -> tuple[str, dict]:
    """LANG and TEXT as the deck's language cell assigns them (read, not run)."""
    values = {}
    for node in ast.parse(_language_cell(nb).source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            values[target.id] = ast.literal_eval(node.value)
    return values["LANG"], values["TEXT"]


def _code(source: str) -> ast.Module:
    return ast.parse("\n".join(line for line in source.splitlines() if not line.startswith("%")))


def _labels(nb) -> set[str]:
    """Every literal text the code cells pass to tr() or lab() (translated in the Chinese deck)."""
    found = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(_code(cell.source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("tr", "lab")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


def _fields(template: str) -> list[str]:
    return sorted(
        f"{name}:{spec}"
        for _, name, spec, _ in string.Formatter().parse(template)
        if name is not None
    )


def _math(text: str) -> list[str]:
    return re.findall(r"\$\$.+?\$\$|\$[^$\n]+\$", text, re.S)


# --------------------------------------------------------------------------------------------
# Each deck: a slide deck, committed clean, a title and speaker notes on every slide
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DECKS, ids=lambda p: p.name)
def test_deck_is_a_slide_deck(path):
    nb = _read(path)
    types = [_slide_type(cell) for cell in nb.cells]
    assert all(t in SLIDE_TYPES for t in types), types
    assert types[0] == "slide"
    assert 20 <= len(_slides(nb)) <= 30, "a 20-30 minute talk: about one minute a slide"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit it without outputs"
            # a code cell on a slide shows its figure, not its code
            shown = _slide_type(cell) != "skip"
            assert not shown or "remove_input" in cell.metadata.get("tags", []), cell.source[:60]
    text = "\n".join(cell.source for cell in nb.cells)
    assert "import vismap as vm" in text and "assert " in text and "$$" in text
    for name in ("shapes-cnn", "shapes-gap", "sprites-vae"):
        assert f'load_pretrained("{name}")' in text
    assert nb.metadata.get("rise"), "jupyterlab-rise settings kept"


@pytest.mark.parametrize("path", DECKS, ids=lambda p: p.name)
def test_every_slide_has_a_title_and_speaker_notes(path):
    for k, cells in enumerate(_slides(_read(path)), start=1):
        first = cells[0]
        assert first.cell_type == "markdown" and re.match(r"#{1,2} \S", first.source), (
            f"slide {k} starts without a title: {first.source[:60]!r}"
        )
        notes = [c for c in cells if _slide_type(c) == "notes"]
        said = " ".join(c.source for c in notes)
        assert len(said.split()) >= 15 or len(CJK.findall(said)) >= 40, (
            f"slide {k} ({first.source.splitlines()[0]}) has no speaker notes"
        )


# --------------------------------------------------------------------------------------------
# The two decks do not drift apart
# --------------------------------------------------------------------------------------------


def test_the_chinese_deck_has_the_same_slides_and_code():
    en, zh = _read(TALK), _read(TALK_ZH)
    assert len(en.cells) == len(zh.cells)
    for k, (a, b) in enumerate(zip(en.cells, zh.cells, strict=True)):
        assert a.cell_type == b.cell_type, f"cell {k}"
        assert a.metadata.get("slideshow") == b.metadata.get("slideshow"), f"cell {k}"
        assert a.metadata.get("tags") == b.metadata.get("tags"), f"cell {k}"
        if a.cell_type == "code" and "language" not in a.metadata.get("tags", []):
            assert a.source == b.source, f"code cell {k} differs: only the language cell may"
        if a.cell_type == "markdown":
            assert _math(a.source) == _math(b.source), f"cell {k}: the formulas differ"
            assert [
                line[: line.index(" ")] for line in a.source.splitlines() if line.startswith("#")
            ] == [line[: line.index(" ")] for line in b.source.splitlines() if line.startswith("#")]
            assert CJK.search(b.source), f"markdown cell {k} of the Chinese deck is not Chinese"
    assert _language(en) == ("en", {})
    assert en.metadata.get("language", "en") == "en" and zh.metadata["language"] == "zh"


def test_every_label_is_translated_with_the_same_numbers():
    lang, text = _language(_read(TALK_ZH))
    assert lang == "zh"
    labels = _labels(_read(TALK))
    assert len(labels) > 40, "the figures and printed results go through tr() / lab()"
    missing = sorted(labels - set(text))
    assert not missing, f"no Chinese for: {missing}"
    for english, chinese in text.items():
        assert _fields(english) == _fields(chinese), f"{english!r} -> {chinese!r}"
        if re.search(
            r"[a-z]{4}", re.sub(r"\{[^}]*\}|Grad-CAM|CAM|Liu et al\.|shapes-\w+", "", english)
        ):
            assert CJK.search(chinese), f"not translated: {english!r}"


def test_the_chinese_deck_uses_the_source_documents_terms():
    zh = "\n".join(c.source for c in _read(TALK_ZH).cells if c.cell_type == "markdown")
    for term in (
        "卷积",
        "序列数据",
        "细粒度",
        "粗粒度",
        "序列不变性",
        "梯度下降",
        "胸腔积液",
        "反卷积网络",
        "导向反向传播",
        "因子分布",
        "因子激活映射",
        "潜变量",
        "标签",
    ):
        assert term in zh, term
    glossary = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    for term in ("因子激活映射", "因子分布损失", "重构误差", "异常定位"):
        assert term in glossary, f"{term} is not in docs/glossary.md"


# --------------------------------------------------------------------------------------------
# The method as the library computes it
# --------------------------------------------------------------------------------------------


def test_the_talk_describes_factor_maps_as_the_library_computes_them():
    defaults = {
        k: p.default
        for k, p in inspect.signature(vm.explain.factor_cam).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for path in DECKS:
        nb = _read(path)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        # the deck reads the defaults from the library and asserts the ones its slides state
        assert "inspect.signature(vm.explain.factor_cam)" in code
        assert '("kl", "elementwise")' in code
        assert (defaults["statistic"], defaults["mode"]) == ("kl", "elementwise")
        assert defaults["layer"] in prose, "the notes name the layer the library uses"
        assert "HAVE_VAE" not in code, "no fallback: the checkpoints ship with the course"
        assert not re.search(r"encoder\.\d", prose.replace(defaults["layer"], "")), (
            "the prose names a layer the library does not use"
        )
        assert r"\mathrm{KL}_i" in prose and r"\odot A^k" in prose
        # ZF's occlusion and top-9 patches, and the negative finding, are in the deck
        for call in (
            "vm.explain.occlusion(",
            "vm.explain.zeiler_fergus(",
            "topk(TOP)",
            "vm.metrics.pixel_auroc(",
            "vae.reconstruct(",
        ):
            assert call in code, call


# --------------------------------------------------------------------------------------------
# The export: offline, both decks
# --------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """What a reveal.js page loads, its language, slides (leaf <section>s), images and notes."""

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.open_sections: list[bool] = []
        self.slides = self.images = self.notes = 0
        self.lang = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang")
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.loads.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])
        if tag == "img" and (attrs.get("src") or "").startswith("data:image/png;base64,"):
            self.images += 1
        if tag == "aside" and "notes" in (attrs.get("class") or ""):
            self.notes += 1
        if tag == "section":
            if self.open_sections:
                self.open_sections[-1] = True
            self.open_sections.append(False)

    def handle_endtag(self, tag):
        if tag == "section" and self.open_sections:
            self.slides += not self.open_sections.pop()


def _remote(url: str) -> bool:
    return re.match(r"^(https?:)?//", url.strip(), re.I) is not None


def _with_stand_in_figures(nb):
    """The deck as if executed: every code cell shows a 1x1 PNG."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PIXEL})]
    return nb


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    make_slides.vendor(folder / make_slides.ASSETS)
    return folder


@pytest.mark.slow  # an nbconvert export of each deck: a few seconds
@pytest.mark.parametrize("path", DECKS, ids=lambda p: p.name)
def test_export_opens_offline(path, assets):
    nb = _read(path)
    html = make_slides.export(_with_stand_in_figures(nb), path.stem)
    page = _Page()
    page.feed(html)

    slides = _slides(nb)
    assert page.slides == make_slides.count_slides(html) == len(slides)
    shown = [c for c in nb.cells if c.cell_type == "code" and _slide_type(c) != "skip"]
    assert page.images == len(shown), "each shown code cell's figure is embedded as a PNG"
    assert 'class="highlight hl-ipython3"' not in html, "figure code must not be on the slides"
    assert page.notes == len(slides), "speaker notes on every slide"
    assert page.lang == nb.metadata.get("language", "en")

    # Offline: nothing is loaded from the network, and every local file it loads is there.
    assert page.loads, "found no <script>/<link> at all"
    remote = [url for url in page.loads if _remote(url)]
    assert not remote, f"loaded from the network: {remote}"
    assert not re.search(r"""import\s[^;]*from\s*['"](https?:)?//""", html)  # ES modules
    assert not re.search(r"cdnjs|unpkg|jsdelivr|mermaid|require\.js|jquery", html, re.I)
    for url in page.loads:
        if not url.startswith("data:"):
            assert (assets / url.split("?")[0]).is_file(), f"{url} is referenced but not there"
    for part in (
        "reveal.js/plugin/notes/notes.js",
        "mathjax/config/Safe.js",
        "mathjax/jax/output/HTML-CSS/fonts/STIX-Web",
        "mathjax/fonts/HTML-CSS/STIX-Web/woff",
        "reveal.js/dist/theme/fonts/source-sans-pro/source-sans-pro.css",
    ):
        assert (assets / make_slides.ASSETS / part).exists(), part
    theme = re.search(r'href="(talk_files/reveal.js/dist/theme/[\w-]+\.css)"', html).group(1)
    assert not re.search(r"@import\s+url\(\s*['\"]?(https?:)?//", (assets / theme).read_text()), (
        "the theme would fetch web fonts"
    )


def test_the_libraries_come_from_python_packages():
    versions = make_slides.library_versions()
    assert int(versions["reveal.js"].split(".")[0]) >= 4
    assert versions["mathjax"].startswith("2.")


def test_a_missing_package_gets_one_line_saying_what_to_install(monkeypatch, capsys, tmp_path):
    entry = make_slides.SOURCES["sphinx_revealjs"]
    monkeypatch.setattr(make_slides, "SOURCES", {"vismap_no_such_package": entry})
    monkeypatch.setitem(make_slides.PIP_NAMES, "vismap_no_such_package", "vismap-no-such-package")
    with pytest.raises(make_slides.VendorError, match=r"vismap-no-such-package.*pip install"):
        make_slides.package_folder("vismap_no_such_package")
    with pytest.raises(SystemExit) as stop:
        make_slides.main(["--out", str(tmp_path), "--no-execute"])
    message = str(stop.value.code)
    assert message.startswith("make_slides: ") and "\n" not in message and "pip install" in message
