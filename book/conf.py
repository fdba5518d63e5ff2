"""Sphinx configuration of the vismap book (built by ``make book``, i.e. scripts/make_book.py).

The book is Sphinx with MyST-NB (notebooks as pages) and sphinx-book-theme: the stack Jupyter
Book 1 wraps, used directly. scripts/make_book.py executes the notebooks (or reuses the copies
that nbval executed in ``make test``), lays the pages out in ``build/book_src/`` and runs
``sphinx-build -c book build/book_src build/book``; Sphinx itself never executes a notebook
(``nb_execution_mode = "off"``).

Everything a page loads is local, so the book opens offline and sends no request off the
machine: MathJax 2.7 from the jupyter-server-mathjax package (its STIX web fonts included),
the theme's own fonts and icons, Sphinx's local search index, and no ipywidgets JavaScript
(widget outputs are replaced by a note when the pages are laid out).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

project = "vismap"
author = "the vismap course"
copyright = "the vismap course authors"
html_title = "vismap: seeing why a CNN decides what it decides"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# --- notebooks: already executed by make_book.py; never run here --------------------------
nb_execution_mode = "off"
nb_merge_streams = True
nb_ipywidgets_js: dict = {}  # MyST-NB would load the widget manager from a CDN
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_update_mathjax = False  # our MathJax 2 configuration below, not MyST's MathJax 3 one

# --- math: MathJax 2.7 shipped by jupyter-server-mathjax, copied into _static ---------------
# found without importing the package: its __init__ imports all of jupyter_server (seconds)
_spec = importlib.util.find_spec("jupyter_server_mathjax")
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("the book needs MathJax from the package jupyter-server-mathjax: "
                      "pip install jupyter-server-mathjax (a dev dependency of the course)")
MATHJAX_DIR = Path(list(_spec.submodule_search_locations)[0]) / "static"
html_static_path = [str(MATHJAX_DIR), "static"]
mathjax_path = "MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    # Sphinx writes math as \( \) and \[ \] inside elements of class "math"; typeset only those
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": True, "ignoreClass": "document", "processClass": "math"},
    # the package ships only the STIX web fonts: use them, never a font from elsewhere
    # MathJax measures web fonts against a "MathJax_Blank" font loaded from about:blank, a load
    # Chromium refuses with a console error: the same blank font, looked up locally instead
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None,
                 "styles": {"@font-face": {"font-family": "MathJax_Blank",
                                           "src": "local('MathJax_Blank')"}}},
    "showMathMenu": False,
    "messageStyle": "none",
}

# --- look and navigation ----------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "show_navbar_depth": 1,
}
html_css_files = ["book.css"]
html_favicon = "static/favicon.svg"  # else the browser asks the server for /favicon.ico
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
# Sphinx's search fetches each hit's page for a summary: a fetch that Chromium refuses when the
# book is opened from disk (file://). Without summaries, search works there too.
html_show_search_summary = False
html_context = {"default_mode": "light"}  # pydata-sphinx-theme otherwise logs an error
suppress_warnings = ["mystnb.unknown_mime_type"]
