"""JupyterLab driven by a real browser: a server on a loopback port with a token, headless Chromium from Debian
(`apt-get install chromium chromium-driver`; scripts/test.sh installs them as root), Selenium pointed at both.

`open_lab(notebooks, env, tmp)` starts the server the way the README does (`jupyter lab notebooks/`), with its own
config, runtime, settings and workspace folders under tmp, autosave off (a run must not write outputs into the
committed notebooks) and every cell attached to the DOM (JupyterLab 4 otherwise renders only the visible ones).
"""

import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from workshop.launch import free_port  # below the ephemeral range: no outgoing connection takes it first

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("WORKSHOP_TEST_ARTIFACTS", REPO / "test-artifacts"))
SETTINGS = {  # JupyterLab user settings: plugin id -> values
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def browser_problem():
    """None when Chromium, its driver and Selenium are here, else what is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver (scripts/test.sh does, as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e .[dev]"
    return None


def require_browser():
    problem = browser_problem()
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"no browser: {problem}")  # CI promises one: a missing browser is a failure, not a skip
    if problem:
        pytest.skip(f"no browser: {problem}")


def wait_for_server(url, server, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"jupyter lab did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def lab_server(root, env, tmp):
    """(base URL, token) of `jupyter lab root` on a free loopback port; stopped (and its kernels) on exit."""
    settings = tmp / "settings"
    for plugin, values in SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, **env, "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    log = tmp / "jupyter-lab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", str(root), "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             "--ServerApp.allow_root=True"],  # CI runs as root
            env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={token}", server, log)
        yield base, token, log
    finally:
        server.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def chromium(width=1500, height=1400):
    """Headless Chromium through Selenium, with the driver path given so Selenium Manager downloads nothing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must not reach the network
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout, what):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # JupyterLab re-renders menus and cells: an element found a moment ago may be gone; look again
    return WebDriverWait(driver, timeout, poll_frequency=1, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(condition, message=f"timed out: {what}")


NOTEBOOK_STATE = """
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
    const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
    const errors = [...document.querySelectorAll(
        '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .filter(o => o.innerText.includes('Traceback') || o.innerText.includes('Error'));
    return {prompts: prompts.map(p => p.textContent.trim()),
            status: status ? status.getAttribute('data-status') : null,
            errors: errors.length,
            dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText.slice(0, 300))};
"""


def run_all_cells(driver, timeout, attempts=3):
    """Run > Run All Cells from the menu bar, then wait until every code cell has run and the kernel is idle, or
    until a cell failed (JupyterLab stops a Run All at the first error: the other prompts would stay empty).

    The notebook is clicked first so it is JupyterLab's current widget: while the launcher or the file browser
    has focus, the menu's Run All Cells is disabled and clicking it does nothing (seen on a loaded CI machine).
    If no cell has started a minute after the click, the menu is used again."""
    from selenium.common.exceptions import (ElementClickInterceptedException, StaleElementReferenceException,
                                            TimeoutException)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def state(d):
        return d.execute_script(NOTEBOOK_STATE)

    def started(d):
        return any(re.fullmatch(r"\[(\d+|\*)\]:", p) for p in state(d)["prompts"])

    def finished(d):
        now = state(d)
        done = now["prompts"] and all(re.fullmatch(r"\[\d+\]:", p) for p in now["prompts"])
        return now if now["status"] == "idle" and (done or now["errors"]) else None

    def no_spinner(d):
        return not any(spinner.is_displayed() for spinner in d.find_elements(By.CSS_SELECTOR, ".jp-Spinner"))

    def click_run_all():
        try:  # JupyterLab's loading spinner lies over the notebook until it is ready, and takes the click
            wait(driver, no_spinner, 60, "JupyterLab's loading spinner to go")
        except TimeoutException:
            pass  # a click it intercepts is tried again below
        driver.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell").click()
        menu = wait(driver, lambda d: next((m for m in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                                            if m.text.strip() == "Run"), None), 60, "the Run menu")
        menu.click()
        item = wait(driver, lambda d: next((i for i in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-item")
                                            if i.text.strip().startswith("Run All Cells")
                                            and "lm-mod-disabled" not in (i.get_attribute("class") or "")), None),
                    30, "an enabled Run All Cells in the Run menu")
        item.click()

    for attempt in range(1, attempts + 1):
        try:
            click_run_all()
        except (StaleElementReferenceException, ElementClickInterceptedException):
            pass  # re-rendered under the click, or covered (a spinner): see whether a cell started, else try again
        try:
            wait(driver, started, 60, "a cell to start")
            break
        except TimeoutException:
            driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # close the menu if it stayed open
            if attempt == attempts:
                raise AssertionError(f"Run All Cells started no cell in {attempts} tries: {state(driver)}")
    try:
        return wait(driver, finished, timeout, "every cell run and the kernel idle")
    except TimeoutException:
        raise AssertionError(f"cells still running after {timeout} s: {state(driver)}") from None


def open_notebook(driver, base, token, name):
    """Open notebooks/<name> in JupyterLab and wait until its kernel (the one the notebook names) is idle."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/lab/tree/{name}?token={token}")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"), 120, f"{name}'s cells")
    wait(driver, lambda d: d.execute_script(
        "const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        "return s && s.getAttribute('data-status') === 'idle';"), 120, "the kernel to start")


def page_report(driver):
    """What the rendered notebook shows: its output text, tables (and their header cells), images, stderr/error
    outputs, and `wide`: every output, table or image that reaches past the notebook panel's right edge or
    scrolls sideways inside its output area (what a reader would have to scroll to see)."""
    return driver.execute_script("""
        const outputs = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')];
        const images = [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img')];
        const panel = document.querySelector('.jp-NotebookPanel .jp-Notebook').getBoundingClientRect();
        const shown = e => (e.innerText || e.getAttribute('src') || '').slice(0, 100);
        const past = [...document.querySelectorAll(
            '.jp-Notebook .jp-OutputArea-output, .jp-Notebook .jp-OutputArea-output table, '
            + '.jp-Notebook .jp-OutputArea-output img')]
            .filter(e => e.getBoundingClientRect().right > panel.right + 1)
            .map(e => ({tag: e.tagName, right: e.getBoundingClientRect().right, room: panel.right, text: shown(e)}));
        const scrolls = outputs.filter(o => o.scrollWidth > o.clientWidth + 1)
            .map(o => ({tag: 'scrolls', right: o.scrollWidth, room: o.clientWidth, text: shown(o)}));
        return {
          wide: past.concat(scrolls),
          headers: [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output table')]
              .map(t => [...t.querySelectorAll('th')].map(th => th.innerText.trim())),
          text: outputs.map(o => o.innerText).join('\\n'),
          headings: [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output h4')].map(h => h.innerText),
          tables: [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output table')].map(t => t.innerText),
          images: images.map(i => ({png: i.src.startsWith('data:image/png;base64,'), width: i.naturalWidth,
                                    height: i.naturalHeight})),
          stderr: [...document.querySelectorAll(
              '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
              .map(o => o.innerText),
        };
    """)


def screenshot(driver, name):
    """Save the whole notebook as test-artifacts/<name>.png (or under $WORKSHOP_TEST_ARTIFACTS) and say where:
    JupyterLab's bars, then the notebook scrolled a screen at a time and the pieces stitched under them."""
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    scroll = "const o = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');"
    left, top, width, height, total = driver.execute_script(scroll + """
        if (!o) return [0, 0, 0, 0, 0];
        o.scrollTop = 0;
        const r = o.getBoundingClientRect();
        return [r.left, r.top, r.width, o.clientHeight, o.scrollHeight];""")
    page = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
    if not total:  # no notebook on the page: keep what the browser shows
        page.save(path)
    else:
        box = [round(v) for v in (left, top, left + width, top + height)]
        canvas = Image.new("RGB", (page.width, box[1] + total), "white")
        canvas.paste(page.crop((0, 0, page.width, box[1])), (0, 0))
        for offset in range(0, total, height):
            shown = driver.execute_script(scroll + f"o.scrollTop = {offset}; return o.scrollTop;")
            time.sleep(0.3)
            canvas.paste(Image.open(io.BytesIO(driver.get_screenshot_as_png())).crop(box), (box[0], box[1] + shown))
        canvas.save(path)
    print(f"[browser test] screenshot: {path}")
    return path


def copy_log(log, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(log, ARTIFACTS / f"{name}-jupyter-lab.log")
