"""The built book in a real browser: every page loads offline, with figures, math and search.

Run after ``make book``: ``python -m scripts.browser_test_book``. It serves ``build/`` on a free
loopback port (so the book's links to the slides and the exercises in ``build/`` resolve too),
drives Debian's Chromium (``/usr/bin/chromium``) with Playwright, with the helpers of
``scripts/browser_test.py``, and checks that

1. the start page and every page of the table of contents load with no console error, no page
   error, no failed or missing (HTTP >= 400) local file, and **no request off the machine**:
   every request to any host but the loopback one is recorded and blocked;
2. every chapter (each notebook of ``book/toc.yml``) shows at least one figure from its outputs,
   loaded (``naturalWidth > 0``), and no error output;
3. math is rendered by the local MathJax (no raw ``\\(`` left, no "Math Processing Error"), on
   every page that has math, and at least one chapter has some;
4. the sidebar links every chapter, and searching "Grad-CAM" lists chapter 06;
5. the start page and the search also work from ``file://`` (the book opened from disk).

Screenshots go to ``build/browser/book-*.png``. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from scripts import browser_test as bt  # ensure_chromium, free_port, Failed, OUT
from scripts import make_book  # the table of contents and the build's paths

ROOT = make_book.ROOT
BUILD = make_book.BUILD
BOOK = make_book.OUT
OUT = bt.OUT
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
SEARCH_WORD = "Grad-CAM"
SEARCH_CHAPTER = "06_gradcam"

# MathJax 2 has finished typesetting; the number of typeset formulas and of errors.
MATH_JS = """() => {
  const sources = document.querySelectorAll('.math.notranslate');  // Sphinx's math elements
  const math = sources.length;
  if (!math) return {math: 0, done: true, rendered: 0, errors: 0, raw: 0};
  const hub = window.MathJax && window.MathJax.Hub;
  const done = !!hub && hub.queue.running === 0 && hub.queue.pending === 0
               && !!document.querySelector('.MathJax, .MathJax_Display, .MathJax_CHTML');
  const rendered = document.querySelectorAll('script[type^="math/tex"]').length;
  const errors = document.querySelectorAll('.MathJax_Error, .merror').length
                 + (document.body.innerText.includes('Math Processing Error') ? 1 : 0);
  const raw = [...sources].filter(e => /\\\\[\\(\\[]/.test(e.innerText)).length;
  return {math, done, rendered, errors, raw};
}"""

# The figures in a chapter's outputs: how many, and how many loaded.
FIGURES_JS = """() => {
  const imgs = [...document.querySelectorAll('.cell_output img, .output img')];
  return {count: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          errors: document.querySelectorAll('.output.traceback, .output.error').length};
}"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request
        pass


@contextmanager
def serve(folder: Path):
    """Serve ``folder`` on a free loopback port in a thread; yields the base URL."""
    port = bt.free_port()
    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


class Watch:
    """Everything a page did that a check forbids: console errors, page errors, requests off
    the machine (blocked), failed local requests, local files missing."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.outside: list[str] = []

    def attach(self, context, page) -> None:
        context.route("**/*", self._route)
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console error: {m.text[:300]}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r: (
                r.url not in self.outside
                and self.problems.append(f"request failed: {r.url} ({r.failure})")
            ),
        )
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )

    def _route(self, route) -> None:
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS:
            self.outside.append(url)
            route.abort()
        else:
            route.continue_()

    def take(self) -> list[str]:
        problems = self.problems + [f"request off the machine (blocked): {u}" for u in self.outside]
        self.problems, self.outside = [], []
        return problems


def html_of(page: str) -> str:
    return page.rsplit(".", 1)[0] + ".html"


TYPESET: dict[str, int] = {}  # page -> formulas MathJax typeset there


def check_page(
    page, watch: Watch, url: str, name: str, chapter: bool, timeout: float = 180
) -> list[str]:
    """Load one page and check it; returns what was checked, raises bt.Failed otherwise."""
    page.goto(url, wait_until="load", timeout=60_000)
    deadline = time.monotonic() + timeout
    math = page.evaluate(MATH_JS)
    while not math["done"] and time.monotonic() < deadline:
        time.sleep(0.25)
        math = page.evaluate(MATH_JS)
    TYPESET[name] = math["rendered"] if math["done"] else 0
    problems = []
    if not math["done"]:
        problems.append(f"MathJax did not finish typesetting within {timeout:.0f} s ({math})")
    if math["errors"] or math["raw"]:
        problems.append(
            f"math not rendered: {math['errors']} error(s), {math['raw']} formula(s) "
            f"left as raw TeX"
        )
    done = []
    if math["math"]:
        done.append(f"{math['math']} formulas, {math['rendered']} typeset by MathJax")
    if chapter:
        figures = page.evaluate(FIGURES_JS)
        if figures["count"] == 0:
            problems.append("no figure in the chapter's outputs")
        elif figures["loaded"] < figures["count"]:
            problems.append(
                f"{figures['count'] - figures['loaded']} of {figures['count']} figures did not load"
            )
        if figures["errors"]:
            problems.append(f"{figures['errors']} error output(s) on the page")
        done.append(f"{figures['loaded']} figure(s) shown")
    page.screenshot(path=str(OUT / f"book-{name}.png"))
    problems += watch.take()
    if problems:
        raise bt.Failed("; ".join(problems))
    return done


def check_navigation(page, chapters: list[str]) -> str:
    hrefs = page.eval_on_selector_all(".bd-sidebar a, nav a", "as => as.map(a => a.href)")
    missing = [c for c in chapters if not any(html_of(c) in h for h in hrefs)]
    if missing:
        raise bt.Failed(f"the sidebar does not link {missing}")
    if not page.locator(".prev-next-area a, a.right-next").count():
        raise bt.Failed("no link to the next chapter on the start page")
    return f"the sidebar links all {len(chapters)} chapters; a 'next' link leads on"


def check_search(page, watch: Watch, base: str, name: str) -> str:
    page.goto(f"{base}/search.html?q={SEARCH_WORD}", wait_until="load", timeout=60_000)
    try:
        page.wait_for_function(  # Sphinx's search lists its hits, then writes a summary
            "() => { const s = document.querySelector('.search-summary, #search-results p');"
            " return !!s && /finished|found|did not match/i.test(s.innerText); }",
            timeout=60_000,
        )
    except Exception as err:  # playwright's TimeoutError
        raise bt.Failed(
            f"the search for {SEARCH_WORD!r} gave no answer within 60 s: {err}"
        ) from None
    links = page.eval_on_selector_all(
        "#search-results li a, ul.search li a", "as => as.map(a => a.getAttribute('href'))"
    )
    page.screenshot(path=str(OUT / f"book-search-{name}.png"))
    problems = watch.take()
    if problems:
        raise bt.Failed("; ".join(problems))
    hits = [h for h in links if h and SEARCH_CHAPTER in h]
    if not hits:
        raise bt.Failed(
            f"searching {SEARCH_WORD!r} does not list chapter {SEARCH_CHAPTER} "
            f"(it lists {links[:10]})"
        )
    return f"search {SEARCH_WORD!r}: {len(links)} result(s), chapter 06 among them"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--book",
        type=Path,
        default=BOOK,
        help=f"the built book (default {BOOK.relative_to(ROOT)}); its parent folder is served",
    )
    parser.add_argument(
        "--toc",
        type=Path,
        default=make_book.TOC,
        help="the table of contents the book was built from (make_book.py --toc)",
    )
    args = parser.parse_args(argv)
    book_dir = args.book.resolve()
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("Playwright for Python is missing: .venv/bin/pip install playwright", file=sys.stderr)
        return 1
    if not (book_dir / "index.html").exists():
        print(f"{book_dir}/index.html is missing: run `make book` first", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    toc = make_book.read_toc(args.toc)
    pages = [p for p in toc.pages() if (ROOT / p).exists()]
    chapters = [p for p in pages if p.endswith(".ipynb")]
    results: dict[str, list[str] | str] = {}
    started = time.monotonic()
    try:
        chromium = bt.ensure_chromium()
        with serve(book_dir.parent) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium),
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
            bt.log(f"Chromium {browser.version}; the book served from {base}/{book_dir.name}/")
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            page = context.new_page()
            watch = Watch()
            watch.attach(context, page)
            book = f"{base}/{book_dir.name}"
            targets = [("index", f"{book}/index.html", False)] + [
                (Path(p).stem, f"{book}/{html_of(p)}", p in chapters) for p in pages
            ]
            for name, url, chapter in targets:
                try:
                    results[name] = check_page(page, watch, url, name, chapter)
                    if name == "index":
                        results[name].append(check_navigation(page, chapters))
                except (bt.Failed, PlaywrightError) as err:
                    results[name] = f"FAILED: {err}"
                    watch.take()
            with_math = [n for n in chapters if TYPESET.get(Path(n).stem)]
            results["math"] = (
                f"FAILED: no chapter has typeset math ({TYPESET})"
                if not with_math
                else [f"MathJax typeset math in {len(with_math)} of {len(chapters)} chapters"]
            )
            for name, base_url in (("search", book), ("search-file", book_dir.as_uri())):
                try:
                    results[name] = [check_search(page, watch, base_url, name)]
                except (bt.Failed, PlaywrightError) as err:
                    results[name] = f"FAILED: {err}"
            try:  # the book opened from disk
                results["index-file"] = check_page(
                    page, watch, (book_dir / "index.html").as_uri(), "index-file", False
                )
            except (bt.Failed, PlaywrightError) as err:
                results["index-file"] = f"FAILED: {err}"
            browser.close()
    except bt.Failed as err:
        results["setup"] = f"FAILED: {err}"
    for name, result in results.items():
        if isinstance(result, str):
            bt.log(f"FAILED {name}: {result[8:]}")
        else:
            bt.log(
                f"ok  {name}: " + ("; ".join(result) or "loaded, no error, nothing off the machine")
            )
    failed = [n for n, r in results.items() if isinstance(r, str)]
    bt.log(
        f"{len(results) - len(failed)} of {len(results)} check(s) passed in "
        f"{time.monotonic() - started:.0f} s; screenshots in {OUT.relative_to(ROOT)}/book-*.png"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
