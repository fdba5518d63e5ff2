"""The course in a real browser: run notebooks in JupyterLab, driven by headless Chromium.

`make test-browser` runs this script. It

1. copies the notebooks it runs into a temporary folder (the browser never writes outputs into
   the repository's notebooks);
2. starts JupyterLab from the course environment on a free loopback port with a random token,
   in its own process group, and stops it at the end whatever happens;
3. drives Debian's Chromium (``/usr/bin/chromium``; installed with ``apt-get install -y
   chromium`` when missing) with Playwright for Python - never a downloaded browser;
4. opens each notebook, runs all cells from the Run menu, waits for the kernel to finish, and
   checks that no cell shows an error and that a figure image is displayed; in notebooks with
   an explorer widget (:mod:`vismap.widgets`) it checks that the widget renders and that
   changing its controls changes the figure;
5. saves screenshots and JupyterLab's log to ``build/browser/``;
6. opens the two talk decks, ``build/talk.slides.html`` and ``build/talk_zh.slides.html``
   (built first with ``scripts/make_slides.py`` when missing or older than their notebooks), the
   two ways a presenter opens them: from the disk (``file://``) and served by ``python -m
   http.server`` (started on a free loopback port in its own process, stopped at the end). Each
   time it checks that no request leaves the machine (and, served, that no file is missing),
   that the console shows no error, that MathJax typeset every formula, that every slide has its
   title and speaker notes, that the speaker view (key ``s``) opens and follows the deck, and
   that the Chinese deck's text is drawn in a real CJK font (the font Chromium used for each
   title, read through the DevTools protocol, must be a CJK one, and two different Chinese
   characters must not render as the same box). Debian's ``fonts-noto-cjk`` is installed with
   chromium when no CJK font is there. Screenshots of a few slides of each deck go to
   ``build/browser/`` (``talk-slide01.png`` from the disk, ``talk-http-slide01.png`` served).

The notebooks: ``notebooks/00_start_here.ipynb``, the notebook with ``vm.widgets.explorer``
(``notebooks/06_gradcam.ipynb`` once it has one) and the one with ``latent_explorer``
(``notebooks/07_*.ipynb``); for an explorer no course notebook has yet, a small generated
notebook stands in (the output says so). ``--notebook PATH`` (repeatable) runs other notebooks;
``--only-decks`` / ``--no-decks`` run only the decks' checks / only the notebooks';
``--chromium PATH`` drives another Chromium binary (to try another build; nothing is installed).

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "build" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CJK_FONTS = "fonts-noto-cjk"  # Debian's package of Noto Sans/Serif CJK
DECKS = [ROOT / "build" / "talk.slides.html", ROOT / "build" / "talk_zh.slides.html"]
CJK_TEXT = re.compile(r"[\u4e00-\u9fff]")
CJK_FAMILY = re.compile(
    r"CJK|Han Sans|Han Serif|WenQuanYi|Hei|Song|Ming|Droid Sans Fallback|"
    r"PingFang|YaHei|Noto Sans SC|Noto Serif SC",
    re.I,
)
JUPYTER = Path(sys.executable).with_name("jupyter")  # the course environment's

START_HERE = NOTEBOOKS / "00_start_here.ipynb"
EXPLORER_CALL = "widgets.explorer("
LATENT_CALL = "widgets.latent_explorer("
GENERATED = "widgets_demo.ipynb"

# JupyterLab's user settings for the run: every cell attached to the page (so that the page
# shows all outputs), and no request to the internet for news or updates.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def log(message: str) -> None:
    print(f"[browser-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Failed(Exception):
    """A check failed."""


# --------------------------------------------------------------------------------------------
# Chromium and Playwright
# --------------------------------------------------------------------------------------------


def has_cjk_font() -> bool:
    """Does fontconfig know a font with Chinese glyphs?"""
    try:
        found = subprocess.run(
            ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(found.strip())


def ensure_chromium(chromium: Path | None = None) -> Path:
    """``/usr/bin/chromium``, and a CJK font for the Chinese deck, installed with apt-get if
    missing. ``chromium``: another binary to drive instead (it must exist)."""
    if chromium is not None and Path(chromium) != CHROMIUM:
        if not Path(chromium).is_file():
            raise Failed(f"--chromium {chromium}: no such file")
        if not has_cjk_font():
            raise Failed(f"no CJK font; install Debian's: apt-get install -y {CJK_FONTS}")
        return Path(chromium)
    missing = ([] if CHROMIUM.exists() else ["chromium"]) + ([] if has_cjk_font() else [CJK_FONTS])
    if not missing:
        return CHROMIUM
    if os.geteuid() != 0:
        raise Failed(
            f"missing: {', '.join(missing)}; install Debian's packages: "
            f"sudo apt-get install -y {' '.join(missing)}"
        )
    log(f"missing: apt-get install -y {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    if not CHROMIUM.exists():
        raise Failed("apt-get could not install chromium; install it by hand and rerun")
    if not has_cjk_font():
        raise Failed(f"apt-get could not install {CJK_FONTS}; install it by hand and rerun")
    return CHROMIUM


# --------------------------------------------------------------------------------------------
# The notebooks, copied to a temporary folder
# --------------------------------------------------------------------------------------------


def generated_notebook(explorer: bool, latent: bool) -> dict:
    """A small notebook that shows the explorers no course notebook has yet."""
    import nbformat

    cells = [
        nbformat.v4.new_markdown_cell(
            "# Explorers (generated by scripts/browser_test.py)\n\nStands in for the course "
            "notebook that does not show this explorer yet."
        )
    ]
    code = [
        "import torch\n\nimport vismap as vm\nimport vismap.widgets\n"
        "from vismap.vae import SpritesVAE"
    ]
    if explorer:
        code.append("vm.widgets.explorer()")
    if latent:
        code.append(
            "torch.manual_seed(0)\nvae = SpritesVAE().eval()  # random weights: "
            "the widget is tested, not the model\nvm.widgets.latent_explorer(vae)"
        )
    cells += [nbformat.v4.new_code_cell(c) for c in code]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def choose_notebooks(given: list[str]) -> tuple[list[Path], dict | None]:
    """The notebooks to run, and the generated one (or None) for the missing explorers."""
    if given:
        return [Path(p).resolve() for p in given], None
    chosen = [START_HERE]
    gradcam = NOTEBOOKS / "06_gradcam.ipynb"
    if gradcam.exists() and EXPLORER_CALL in gradcam.read_text():
        chosen.append(gradcam)
        explorer = False
    else:
        log(
            f"{gradcam.relative_to(ROOT)} has no `vm.{EXPLORER_CALL}...)` yet: the explorer is "
            f"tested in the generated notebook {GENERATED}"
        )
        explorer = True
    factor = [p for p in sorted(NOTEBOOKS.glob("07_*.ipynb")) if LATENT_CALL in p.read_text()]
    if factor:
        chosen.append(factor[0])
        latent = False
    else:
        log(
            f"no notebooks/07_*.ipynb has `vm.{LATENT_CALL}...)` yet: the latent explorer is "
            f"tested in the generated notebook {GENERATED} (a VAE with random weights)"
        )
        latent = True
    return chosen, (generated_notebook(explorer, latent) if explorer or latent else None)


def copy_notebooks(paths: list[Path], generated: dict | None, folder: Path) -> list[str]:
    """Copy the notebooks into ``folder``, outputs cleared; their names there."""
    import nbformat

    names = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, folder / path.name)
        names.append(path.name)
    if generated is not None:
        nbformat.write(nbformat.from_dict(generated), folder / GENERATED)
        names.append(GENERATED)
    return names


# --------------------------------------------------------------------------------------------
# JupyterLab, in the background
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, token: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _stop_group(server: subprocess.Popen) -> None:
    """Stop ``server``'s process group: SIGTERM, then SIGKILL if it is still running."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if server.poll() is None:
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def _wait_until_up(
    server: subprocess.Popen,
    probe,
    what: str,
    url: str,
    logfile: Path,
    seconds: float,
    pause: float,
) -> None:
    """Poll ``probe()`` until it stops raising OSError; fail if ``server`` exits first or it
    does not answer within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            raise Failed(f"{what} exited with status {server.returncode}; see {logfile}")
        try:
            probe()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise Failed(
                    f"{what} did not answer on {url} within {seconds:.0f} s; see {logfile}"
                ) from None
            time.sleep(pause)


@contextmanager
def jupyterlab(root_dir: Path, home: Path, logfile: Path):
    """Run JupyterLab on ``root_dir``; yields ``(base_url, token)``. On exit, also after an
    error: ask the server to shut down (it stops its kernels), then end its process group and
    any kernel still running."""
    import psutil

    token, port = secrets.token_hex(24), free_port()
    for name, content in SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(home / "config"),  # no user config, no state left behind
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    command = [
        str(JUPYTER),
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if os.geteuid() == 0:  # a CI container runs as root
        command.append("--allow-root")
    url = f"http://127.0.0.1:{port}"
    with open(logfile, "w") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root_dir,
            start_new_session=True,
        )
    kernels: list = []
    try:
        _wait_until_up(
            server,
            lambda: _request(f"{url}/api/status", token),
            "JupyterLab",
            url,
            logfile,
            seconds=90,
            pause=0.5,
        )
        log(f"JupyterLab is up on {url} (pid {server.pid}), serving {root_dir}")
        yield url, token
    finally:
        try:  # the kernels it started (psutil checks a process is still the same one)
            kernels = psutil.Process(server.pid).children(recursive=True)
        except psutil.Error:
            pass
        try:
            _request(f"{url}/api/shutdown", token, method="POST")
            server.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _stop_group(server)
        for kernel in kernels:  # kernels run in their own process groups
            try:
                kernel.kill()
            except psutil.Error:
                pass
        log(f"JupyterLab stopped (exit status {server.returncode})")


# --------------------------------------------------------------------------------------------
# The checks, in the page
# --------------------------------------------------------------------------------------------

# The state of the current notebook, read from JupyterLab's own model of it: the kernel's
# status and, for each code cell, its execution count and a summary of its outputs.
STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return null;
  const cells = [];
  for (const cell of panel.content.model.cells) {
    if (cell.type !== 'code') continue;
    const json = cell.toJSON();
    const outputs = (json.outputs || []).map(o => ({
      type: o.output_type, ename: o.ename || null, evalue: o.evalue || null,
      stderr: o.output_type === 'stream' && o.name === 'stderr'
        ? String(Array.isArray(o.text) ? o.text.join('') : o.text).slice(0, 2000) : null,
      mimes: Object.keys(o.data || {})}));
    cells.push({count: json.execution_count, outputs,
                source: String(Array.isArray(json.source) ? json.source.join('') : json.source)
                  .slice(0, 80)});
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {status: kernel ? kernel.status : 'no kernel', cells};
}"""


def open_notebook(page, url: str, token: str, name: str) -> None:
    """Open ``name`` alone (``?reset``: a fresh workspace, no tab restored) and wait until it
    is the current tab and its kernel is up and idle: Run All before that runs nothing."""
    page.goto(f"{url}/lab/tree/{name}?reset&token={token}", wait_until="domcontentloaded")
    page.wait_for_function(
        """(name) => {
      const app = window.jupyterapp, w = app && app.shell.currentWidget;
      const s = w && w.sessionContext, kernel = s && s.session && s.session.kernel;
      return !!w && !!w.context && w.context.path === name && s.isReady && kernel
        && kernel.status === 'idle';
    }""",
        arg=name,
        timeout=120_000,
    )
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)


def run_all(page) -> None:
    """Run > Run All Cells, from the menu bar as a reader would."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_until_done(page, timeout: float) -> dict:
    """Poll the notebook until every code cell has run (or one failed) and the kernel has been
    idle for two polls in a row."""
    deadline, idle_polls = time.monotonic() + timeout, 0
    while True:
        state = page.evaluate(STATE_JS)
        cells = state["cells"]
        finished = all(c["count"] is not None for c in cells)
        failed = any(o["type"] == "error" for c in cells for o in c["outputs"])
        idle_polls = idle_polls + 1 if state["status"] == "idle" and (finished or failed) else 0
        if idle_polls >= 2:
            return state
        if time.monotonic() > deadline:
            ran = sum(c["count"] is not None for c in cells)
            raise Failed(
                f"the notebook did not finish within {timeout:.0f} s ({ran} of "
                f"{len(cells)} code cells ran, kernel {state['status']})"
            )
        time.sleep(1.0)


def check_outputs(page, state: dict) -> list[str]:
    """No cell shows an error, and a figure is displayed. Returns what was checked."""
    problems = []
    for i, cell in enumerate(state["cells"]):
        for o in cell["outputs"]:
            if o["type"] == "error":
                problems.append(
                    f"code cell {i} ({cell['source']!r}...) raised {o['ename']}: {o['evalue']}"
                )
            elif o["stderr"] and "Traceback" in o["stderr"]:
                problems.append(f"code cell {i} printed a traceback: {o['stderr'][-300:]}")
    not_run = [i for i, c in enumerate(state["cells"]) if c["count"] is None]
    if not_run:
        problems.append(f"code cells {not_run} did not run")
    # what the reader sees: no error output on the page, and figures
    shown_errors = page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
        has_text="Traceback",
    )
    if shown_errors.count():
        problems.append(
            f"{shown_errors.count()} error output(s) on the page: "
            f"{shown_errors.first.inner_text()[:300]}"
        )
    broken = page.locator(".jp-OutputArea-output", has_text="Error displaying widget")
    if broken.count():
        problems.append(f"a widget failed to display: {broken.first.inner_text()[:300]}")
    figures = page.locator(".jp-OutputArea-output img")
    if figures.count() == 0:
        problems.append("no figure image is displayed")
    if problems:
        raise Failed("; ".join(problems))
    return [
        f"{len(state['cells'])} code cells ran, no error output",
        f"{figures.count()} figure image(s) displayed",
    ]


def _src(widget) -> str:
    img = widget.locator("img").first
    img.wait_for(state="visible", timeout=60_000)
    return img.get_attribute("src") or ""


def _changes_figure(page, widget, action, what: str, timeout: float = 60.0) -> str:
    """Do ``action`` on the widget and wait until its figure's image changes."""
    before = _src(widget)
    action()
    deadline = time.monotonic() + timeout
    while _src(widget) == before:
        if time.monotonic() > deadline:
            text = widget.inner_text()[-300:]
            raise Failed(f"{what}: the figure did not change within {timeout:.0f} s ({text!r})")
        time.sleep(0.25)
    errors = widget.locator(".jp-OutputArea-output", has_text="ValueError")
    if errors.count():
        raise Failed(f"{what}: the widget shows an error: {errors.first.inner_text()[:300]}")
    return f"{what} -> the figure changed"


def check_explorer(page, stem: str) -> list[str]:
    widget = page.locator(".vismap-explorer").first
    widget.scroll_into_view_if_needed()
    for name in ("image", "target", "method", "layer"):  # the controls render
        if not widget.locator(f".vismap-{name}").first.is_visible():
            raise Failed(f"the explorer's {name} control is not on the page")
    widget.screenshot(path=str(OUT / f"{stem}-explorer-before.png"))
    method = widget.locator(".vismap-method select")
    current = method.evaluate("s => s.options[s.selectedIndex].text")
    choice = "guided backprop" if current != "guided backprop" else "gradient"
    done = [
        _changes_figure(
            page,
            widget,
            lambda: method.select_option(label=choice),
            f"explorer: method {current} -> {choice}",
        )
    ]
    done.append(
        _changes_figure(
            page,
            widget,
            lambda: widget.locator(".vismap-scene button, button.vismap-scene").first.click(),
            "explorer: new scene",
        )
    )
    handle = widget.locator(".vismap-image .noUi-handle").first
    done.append(
        _changes_figure(
            page,
            widget,
            lambda: (handle.focus(), handle.press("Home")),
            "explorer: image slider to 0",
        )
    )
    widget.screenshot(path=str(OUT / f"{stem}-explorer-after.png"))
    return done


def check_latent_explorer(page, stem: str) -> list[str]:
    widget = page.locator(".vismap-latent-explorer").first
    widget.scroll_into_view_if_needed()
    if widget.locator(".noUi-handle").count() < 2:
        raise Failed("the latent explorer's sliders are not on the page")
    widget.screenshot(path=str(OUT / f"{stem}-latent-before.png"))
    handle = widget.locator(".vismap-z0 .noUi-handle").first
    done = [
        _changes_figure(
            page,
            widget,
            lambda: (handle.focus(), handle.press("End")),
            "latent explorer: slider z0 to its maximum",
        )
    ]
    dim = widget.locator(".vismap-dim select")
    done.append(
        _changes_figure(
            page, widget, lambda: dim.select_option(index=1), "latent explorer: factor map of z1"
        )
    )
    widget.screenshot(path=str(OUT / f"{stem}-latent-after.png"))
    return done


def test_notebook(page, url: str, token: str, name: str, timeout: float) -> list[str]:
    stem = Path(name).stem
    start = time.monotonic()
    open_notebook(page, url, token, name)
    run_all(page)
    state = wait_until_done(page, timeout)
    ran = time.monotonic() - start
    page.screenshot(path=str(OUT / f"{stem}.png"))
    done = check_outputs(page, state)
    done.append(f"ran in {ran:.0f} s (opening and kernel start included)")
    if page.locator(".vismap-explorer").count():
        done += check_explorer(page, stem)
    if page.locator(".vismap-latent-explorer").count():
        done += check_latent_explorer(page, stem)
    return done


def shut_down_kernels(url: str, token: str) -> None:
    """End every session (and its kernel) of the server, so the next notebook runs alone."""
    for session in json.loads(_request(f"{url}/api/sessions", token)):
        _request(f"{url}/api/sessions/{session['id']}", token, method="DELETE", timeout=30)


# --------------------------------------------------------------------------------------------
# The talk's decks, opened from the disk
# --------------------------------------------------------------------------------------------


def ensure_decks() -> list[Path]:
    """The two decks, built with ``scripts/make_slides.py`` when missing or older than what they
    are made from (their notebooks, the build script, the library, the checkpoints)."""
    sources = [
        NOTEBOOKS / "talk.ipynb",
        NOTEBOOKS / "talk_zh.ipynb",
        ROOT / "scripts" / "make_slides.py",
        *(ROOT / "lib" / "vismap").rglob("*.py"),
        *(ROOT / "data").glob("*"),
    ]
    newest = max(p.stat().st_mtime for p in sources if p.exists())
    stale = [d for d in DECKS if not d.exists() or d.stat().st_mtime < newest]
    if stale:
        log(
            f"building the decks first (make slides): {', '.join(d.name for d in stale)} "
            f"missing or older than the notebooks, the library or the checkpoints"
        )
        if (
            subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "make_slides.py")], cwd=ROOT
            ).returncode
            != 0
        ):
            raise Failed("scripts/make_slides.py failed (see above): no decks to open")
    return DECKS


@contextmanager
def http_server(folder: Path, logfile: Path):
    """Serve ``folder`` as a presenter would, ``python -m http.server`` on a free loopback port,
    in its own process group; yields the base URL. On exit, also after an error, ends it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(folder),
    ]
    url = f"http://127.0.0.1:{port}"
    with open(logfile, "w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    try:

        def answers() -> None:
            with urllib.request.urlopen(f"{url}/", timeout=5):
                pass

        _wait_until_up(
            server, answers, "python -m http.server", url, logfile, seconds=30, pause=0.2
        )
        log(f"python -m http.server is up on {url} (pid {server.pid}), serving {folder}")
        yield url
    finally:
        _stop_group(server)
        log(f"python -m http.server stopped (exit status {server.returncode})")


# The state of a deck: per slide its title and whether it has speaker notes; per formula
# whether MathJax typeset it (MathJax 2 puts the typeset math in an element whose id is the
# source script's id + "-Frame").
DECK_STATE_JS = """() => {
  const slides = Reveal.getSlides();
  const sources = Array.from(document.querySelectorAll('script[type^="math/tex"]'));
  return {
    slides: slides.length,
    titles: slides.map(s => { const h = s.querySelector('h1, h2');
                              return h ? h.textContent.replace('\u00b6', '').trim() : ''; }),
    notes: slides.map(s => { const n = s.querySelector('aside.notes');
                             return n ? n.textContent.trim().length : 0; }),
    formulas: sources.length,
    untypeset: sources.filter(s => !document.getElementById(s.id + '-Frame'))
                      .map(s => s.textContent.slice(0, 60)),
    mathErrors: document.querySelectorAll('.MathJax_Error, .merror').length,
    rawTex: document.querySelector('.reveal .slides').innerText.includes('$$'),
    mathFont: MathJax.OutputJax['HTML-CSS'] ? MathJax.OutputJax['HTML-CSS'].fontInUse : null,
    lang: document.documentElement.lang,
    notesPlugin: !!Reveal.getPlugin('notes'),
  };
}"""

# Draws two different Chinese characters and an unassigned code point in a font family: with
# no font for them all three are the same "tofu" box.
GLYPHS_JS = """(family) => {
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 64;
  const g = canvas.getContext('2d');
  const draw = ch => { g.clearRect(0, 0, 64, 64); g.font = '48px ' + family;
                       g.fillText(ch, 4, 52); return g.getImageData(0, 0, 64, 64).data.join(); };
  const a = draw('\u56e0'), b = draw('\u5b50'), none = draw(String.fromCodePoint(0x10FFFD));
  return {distinct: a !== b, notTofu: a !== none && b !== none,
          inked: a.split(',').some(v => v !== '0')};
}"""

SELECTED_TITLE = ".reveal .slides section.present:not(.stack) :is(h1, h2)"


def platform_fonts(cdp, selector: str) -> list[dict]:
    """The fonts Chromium actually used to draw the first element matching ``selector``
    (DevTools protocol: CSS.getPlatformFontsForNode)."""
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    if not node:
        return []
    return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]


# The speaker view's notes (reveal.js' notes plugin writes them into this element).
SPEAKER_NOTES_JS = """() => { const v = document.querySelector('.speaker-controls-notes .value');
                              return v ? v.innerText.replace(/\\s+/g, ' ').trim() : ''; }"""
# The current slide's notes as the deck holds them.
CURRENT_NOTES_JS = """() => { const n = Reveal.getCurrentSlide().querySelector('aside.notes');
                              return n ? n.textContent.replace(/\\s+/g, ' ').trim() : ''; }"""


def check_speaker_view(context, page, timeout: float) -> str:
    """Press ``s`` on the second slide, as a presenter does: the speaker view opens and shows
    that slide's notes (before its fragments are shown), and the third slide's once the deck
    moves on."""
    page.evaluate("Reveal.slide(1, 0, -1)")
    with context.expect_page(timeout=timeout * 1000) as opened:
        page.keyboard.press("s")
    view = opened.value
    try:
        shown = []
        for step in range(2):
            if step:
                page.evaluate("Reveal.slide(2, 0, -1)")
            expected = page.evaluate(CURRENT_NOTES_JS)[:40]
            try:
                view.wait_for_function(
                    f"(expected) => ({SPEAKER_NOTES_JS})().startsWith(expected)",
                    arg=expected,
                    polling=250,
                    timeout=timeout * 1000,
                )  # a window behind: no frames
            except Exception:  # playwright's TimeoutError
                raise Failed(
                    f"the speaker view does not show the notes {expected!r}... of slide "
                    f"{page.evaluate('Reveal.getSlidePastCount() + 1')} (it shows "
                    f"{view.evaluate(SPEAKER_NOTES_JS)[:80]!r})"
                ) from None
            shown.append(page.evaluate("Reveal.getSlidePastCount() + 1"))
    finally:
        view.close()
    return f"the speaker view (key s) opens and follows the deck (notes of slides {shown})"


def check_deck(browser, path: Path, timeout: float, base: str | None = None) -> list[str]:
    """Open one deck from the disk (``base`` None) or from the server at ``base`` (its folder
    served there) and check it (see the module's docstring, point 6)."""
    stem = path.name.split(".")[0]
    url = path.as_uri() if base is None else f"{base}/{path.name}"
    local = ("file:",) if base is None else (f"{base}/",)
    shots = stem if base is None else f"{stem}-http"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    offsite, problems = [], []

    def route(request_route):
        request_url = request_route.request.url
        if request_url.startswith((*local, "data:", "blob:")):
            request_route.continue_()
        else:
            offsite.append(request_url)
            request_route.abort()

    # on the context, so that the speaker view (a second page) and its frames are watched too
    context.route("**/*", route)
    context.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text[:300]}") if m.type == "error" else None
        ),
    )
    context.on("weberror", lambda err: problems.append(f"page error: {err.error}"))
    context.on(
        "requestfailed",
        lambda r: r.url in offsite or problems.append(f"failed to load {r.url}: {r.failure}"),
    )
    context.on(
        "response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}")
    )
    try:
        # The DevTools session that reads the fonts used (below) starts before the deck loads:
        # its CSS agent then records the deck's style sheets as they are parsed. Enabled on a
        # page already loaded, the agent fetches the page again for their text, a request that
        # Chromium (150 at least) refuses for a file: page - "Unsafe attempt to load URL ...
        # 'file:' URLs are treated as unique security origins" in the page's console.
        cdp = context.new_cdp_session(page)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        page.goto(url, wait_until="load", timeout=timeout * 1000)
        page.wait_for_function("window.Reveal && Reveal.isReady()", timeout=timeout * 1000)
        page.wait_for_function(
            "window.MathJax && MathJax.isReady && MathJax.Hub.queue.pending === 0"
            " && !MathJax.Hub.queue.running",
            timeout=timeout * 1000,
        )
        state = page.evaluate(DECK_STATE_JS)
        untitled = [i + 1 for i, t in enumerate(state["titles"]) if not t]
        silent = [i + 1 for i, n in enumerate(state["notes"]) if n < 20]
        if untitled:
            problems.append(f"slides without a title: {untitled}")
        if silent:
            problems.append(f"slides without speaker notes: {silent}")
        if not state["notesPlugin"]:
            problems.append("the speaker-notes plugin is not loaded")
        if not state["formulas"] or state["untypeset"] or state["mathErrors"] or state["rawTex"]:
            problems.append(
                f"MathJax: {state['formulas']} formulas, not typeset "
                f"{state['untypeset'][:3]}, {state['mathErrors']} errors, raw $$ "
                f"left: {state['rawTex']}"
            )
        done = [
            f"{state['slides']} slides, each with its title and speaker notes",
            f"{state['formulas']} formulas typeset by MathJax ({state['mathFont']} fonts)",
        ]

        chinese = state["lang"].startswith("zh")
        slides = page.evaluate("Reveal.getSlides().map(s => Reveal.getIndices(s))")
        wanted = {0, 1, len(slides) // 2, len(slides) - 3}
        fonts_seen: set[str] = set()
        for k, where in enumerate(slides):
            page.evaluate("([h, v]) => Reveal.slide(h, v)", [where["h"], where.get("v") or 0])
            if chinese and CJK_TEXT.search(state["titles"][k]):
                used = platform_fonts(cdp, SELECTED_TITLE)
                cjk = [
                    f["familyName"]
                    for f in used
                    if CJK_FAMILY.search(f["familyName"]) and f["glyphCount"] > 0
                ]
                fonts_seen.update(cjk)
                if not cjk:
                    problems.append(
                        f"slide {k + 1} ({state['titles'][k]!r}): its title is not "
                        f"drawn in a CJK font (fonts used: "
                        f"{[f['familyName'] for f in used]})"
                    )
            if k in wanted:
                page.wait_for_timeout(300)
                page.screenshot(path=str(OUT / f"{shots}-slide{k + 1:02d}.png"))
        if chinese:
            family = page.evaluate(
                f"getComputedStyle(document.querySelector({SELECTED_TITLE!r})).fontFamily"
            )
            glyphs = page.evaluate(GLYPHS_JS, family)
            if not all(glyphs.values()):
                problems.append(f"Chinese characters render as boxes in {family}: {glyphs}")
            done.append(
                f"the Chinese titles are drawn in {', '.join(sorted(fonts_seen))}; "
                f"distinct glyphs, no tofu"
            )
        done.append(
            f"screenshots of slides {sorted(k + 1 for k in wanted)} in "
            f"{OUT.relative_to(ROOT)}/{shots}-slide*.png"
        )
        done.append(check_speaker_view(context, page, min(timeout, 60)))
    finally:
        context.close()
    if offsite:
        problems.append(f"requests off the machine (blocked): {offsite[:5]}")
    if problems:
        raise Failed("; ".join(problems))
    done.append(
        "no request off the machine, no console error"
        + ("" if base is None else ", no file missing")
    )
    return done


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--notebook",
        action="append",
        default=[],
        help="a notebook to run instead of the default ones (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds a notebook may take to run (default 300)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder with the executed copies"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--only-decks",
        action="store_true",
        help="check only the talk's decks (build/talk*.slides.html)",
    )
    which.add_argument("--no-decks", action="store_true", help="run only the notebooks")
    parser.add_argument(
        "--chromium",
        type=Path,
        default=CHROMIUM,
        help=f"the Chromium binary to drive (default {CHROMIUM}, installed with "
        f"apt-get when missing)",
    )
    args = parser.parse_args(argv)

    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        print(
            "Playwright for Python is missing: `make test-browser` installs the course's "
            "dev dependencies, or run .venv/bin/pip install playwright",
            file=sys.stderr,
        )
        return 1

    # `kill` (a CI timeout) ends the run through the `finally` blocks, which stop JupyterLab
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix="vismap-browser-"))
    results: dict[str, list[str] | str] = {}
    try:
        chromium = ensure_chromium(args.chromium)
        if not args.only_decks:
            run_notebooks(chromium, args, temp, results)
        if not args.no_decks:
            decks = ensure_decks()
            folder = decks[0].parent
            with (
                http_server(folder, OUT / "http-server.log") as base,
                sync_playwright() as playwright,
            ):
                browser = playwright.chromium.launch(
                    executable_path=str(chromium),
                    headless=True,
                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
                )
                log(f"Chromium {browser.version} ({chromium}), driven by Playwright")
                try:
                    for deck in decks:
                        for where, served in (("from the disk", None), (f"from {base}/", base)):
                            name = f"{deck.name} ({'file' if served is None else 'http'})"
                            log(f"{deck.relative_to(ROOT)}: opening {where}")
                            try:
                                results[name] = check_deck(browser, deck, args.timeout, served)
                                for line in results[name]:
                                    log(f"  ok  {line}")
                            except (Failed, PlaywrightError) as err:
                                results[name] = f"FAILED: {err}"
                                log(f"  FAILED {name}: {err}")
                finally:
                    browser.close()
    except Failed as err:
        results["setup"] = f"FAILED: {err}"
        log(f"FAILED: {err}")
    finally:
        if args.keep:
            log(f"kept the executed copies in {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)
    failed = [name for name, r in results.items() if isinstance(r, str)]
    log(
        f"{len(results) - len(failed)} of {len(results)} notebook(s) and deck(s) passed in "
        f"{time.monotonic() - started:.0f} s; screenshots and logs in {OUT.relative_to(ROOT)}/"
    )
    return 1 if failed or not results else 0


def run_notebooks(chromium: Path, args, temp: Path, results: dict) -> None:
    """Run the notebooks in JupyterLab in Chromium (points 1-5 of the module's docstring)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    paths, generated = choose_notebooks(args.notebook)
    work = temp / "notebooks"
    work.mkdir()
    names = copy_notebooks(paths, generated, work)
    with jupyterlab(work, temp, OUT / "jupyterlab.log") as (url, token):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium),
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
            log(f"Chromium {browser.version} ({chromium}), driven by Playwright")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console = []
            page.on("pageerror", lambda err: console.append(f"page error: {err}"))
            try:
                for name in names:
                    log(f"{name}: opening, Run > Run All Cells")
                    try:
                        results[name] = test_notebook(page, url, token, name, args.timeout)
                        for line in results[name]:
                            log(f"  ok  {line}")
                    except (Failed, PlaywrightError) as err:
                        results[name] = f"FAILED: {err}"
                        log(f"  FAILED {name}: {err}")
                        page.screenshot(path=str(OUT / f"{Path(name).stem}-failed.png"))
                    finally:
                        page.goto("about:blank")
                        shut_down_kernels(url, token)
            finally:
                (OUT / "browser-console.log").write_text("\n".join(console))
                browser.close()


if __name__ == "__main__":
    sys.exit(main())
