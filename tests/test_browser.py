"""The notebooks as a person uses them: JupyterLab in headless Chromium (Debian's, driven by Playwright), Run All,
then the interactive parts — uploads in 03, the k/p explorer's sliders in 02 — and a look at what is on screen.

Asserts no error output, nothing on stderr, no "Error displaying widget", figures present. Screenshots go to
``runs/browser/`` (git-ignored) to be looked at. JupyterLab runs on a copy of the notebooks, so nothing here
changes the repository. Never skipped: without Chromium it fails naming the fix (``make test`` installs it).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "runs" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync", "--disable-quic"]
TOKEN = "asif-browser-test"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of the notebooks; yields its base URL."""
    # never skipped: a missing browser is a failing test that names the fix
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make browser` (or `sudo apt-get install chromium`)"
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    settings = work / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    # every cell stays in the page (JupyterLab 4 otherwise leaves off-screen cells out of the DOM)
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "ASIF_RESULTS": str(work / "results"),
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
    # a workspace of its own: JupyterLab reopens a workspace's documents, and a notebook of an earlier test
    # (another kernel, other cells) must not be on the page
    page.goto(f"{lab['url']}/lab/workspaces/{uuid.uuid4().hex}/tree/{name}?token={TOKEN}")
    page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=120_000)
    _wait_idle(page)
    return page


def _wait_idle(page):
    page.wait_for_function("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                           ".some(e => /Idle/.test(e.textContent))", timeout=120_000)


_STATE = f"""() => [...document.querySelector('{PANEL}').querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
               .map(p => p.textContent.trim())"""


def run_all(page, timeout_s: float = 900) -> float:
    """Run → Run All Cells, then wait until every code cell shows an execution count and none is running;
    returns the seconds it took."""
    started = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        prompts = page.evaluate(_STATE)
        if prompts and all(re.fullmatch(r"\[\d+\]:", text) for text in prompts):
            break
        page.wait_for_timeout(1000)
    else:
        pytest.fail(f"Run All did not finish within {timeout_s:.0f} s: prompts {page.evaluate(_STATE)}")
    page.wait_for_timeout(1500)  # the last outputs render
    return time.monotonic() - started


def problems_on_screen(page) -> list[str]:
    """What a person would call broken: error outputs, stderr, widgets that failed to render."""
    found = page.evaluate("""(selector) => {
        const out = [], panel = document.querySelector(selector);
        panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
            .forEach(e => out.push('stderr: ' + e.textContent.slice(0, 200)));
        panel.querySelectorAll('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')
            .forEach(e => out.push('error: ' + e.textContent.slice(0, 300)));
        if (panel.innerText.includes('Error displaying widget')) out.push('Error displaying widget');
        return out;
    }""", PANEL)
    return found


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def figures(page) -> int:
    """The pictures in the notebook's outputs; fails on one that is blank (a single colour: nothing drawn)."""
    import base64
    import io

    from PIL import Image

    sources = page.locator(PANEL).locator(".jp-OutputArea-output img").evaluate_all("imgs => imgs.map(i => i.src)")
    for number, source in enumerate(sources):
        if source.startswith("data:image/png;base64,"):
            picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGBA")
            lowest, highest = zip(*picture.getextrema())
            assert lowest != highest, f"picture {number} of the page is blank: {picture.size}"
    return len(sources)


@pytest.mark.parametrize("name", ["00_setup.ipynb", "04_interpretability.ipynb", "05_webcam_classifier.ipynb"])
def test_run_all_renders_clean(browser, lab, name):
    page = open_notebook(browser, lab, name)
    seconds = run_all(page)
    screenshot(page, name.replace(".ipynb", "-end"))
    assert problems_on_screen(page) == []
    assert figures(page) >= 1
    print(f"{name}: Run All in {seconds:.1f} s")
    page.close()


def _png(path: Path, colour) -> Path:
    from PIL import Image

    Image.new("RGB", (96, 96), colour).save(path)
    return path


def test_uploads_in_03_survive_a_rerun_and_a_bad_file_is_named(browser, lab, tmp_path):
    page = open_notebook(browser, lab, "03_image_text_similarity.ipynb")
    first = run_all(page)
    good = _png(tmp_path / "green.png", "green")
    bad = tmp_path / "drawing.svg"
    bad.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    with page.expect_file_chooser() as chooser:
        page.locator(PANEL).locator("button.asif-upload").first.click()
    chooser.value.set_files([str(good), str(bad)])
    page.wait_for_timeout(1500)
    second = run_all(page)  # the notebook says: run it again to use the uploads
    status = page.locator(PANEL).locator(".asif-upload-status").first
    status.scroll_into_view_if_needed()
    screenshot(page, "03_image_text_similarity-uploads")
    status = status.inner_text()
    assert "green.png" in status and "drawing.svg" in status and "Skipped" in status, status
    assert page.locator(PANEL).locator("button.asif-upload").count() == 1  # the same app, re-displayed, never a second one
    assert problems_on_screen(page) == []
    assert "green.png" in page.locator(PANEL).inner_text()
    print(f"03: Run All {first:.1f} s, again with uploads {second:.1f} s")
    page.close()


def test_the_explorer_in_02_recomputes_when_a_slider_moves(browser, lab):
    page = open_notebook(browser, lab, "02_zero_shot_classification.ipynb")
    seconds = run_all(page)
    slider = page.locator(PANEL).locator(".widget-slider").filter(has=page.locator(".widget-label", has_text="k")).first
    slider.scroll_into_view_if_needed()
    before = page.locator(PANEL).locator(".jp-OutputArea-output").filter(has_text="k = ").last.inner_text()
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("7")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.body.innerText.includes('k = 7,')", timeout=120_000)
    _wait_idle(page)
    # the recomputed figure, under the sliders
    figure = page.locator(PANEL).locator(".jp-OutputArea-output").filter(has_text="ASIF k/p explorer").locator("img")
    figure.first.wait_for(state="visible", timeout=60_000)
    figure.first.evaluate("img => img.decode()")  # decoded; Chromium without a GPU then rasterises it in tiles
    page.wait_for_timeout(3000)
    figure.first.screenshot(path=str(SHOTS / "02_zero_shot_classification-explorer-figure.png"))
    assert figures(page) >= 1
    readout.scroll_into_view_if_needed()
    page.mouse.wheel(0, 350)
    page.wait_for_timeout(1000)
    screenshot(page, "02_zero_shot_classification-explorer")
    assert "k = 7," not in before
    assert problems_on_screen(page) == []
    print(f"02: Run All {seconds:.1f} s; the explorer answered a slider move")
    page.close()


def test_a_saved_notebook_reopens_without_broken_widgets(browser, lab):
    page = open_notebook(browser, lab, "00_setup.ipynb")
    run_all(page)
    page.keyboard.press("Control+S")
    page.wait_for_timeout(1500)
    page.close()
    again = open_notebook(browser, lab, "00_setup.ipynb")
    again.wait_for_timeout(2000)
    screenshot(again, "00_setup-reopened")
    assert problems_on_screen(again) == []
    again.close()
