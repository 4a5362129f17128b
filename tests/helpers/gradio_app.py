"""The browser app in tests: a real `gradio_main.py` process as a user starts it, Debian's headless Chromium (or
Chrome/Edge on Windows; never a downloaded browser) driven by Playwright, and `Page`, one browser page on the app
that records console errors and any request leaving this machine. Screenshots go to test-artifacts/ui/."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers.repo import ROOT_DIR as ROOT
from tests.helpers.servers import free_port
from tests.helpers.viewer_console import compile_reports, unexpected_errors


def find_chromium():
    """A Chromium-family browser already on this machine (never a downloaded one): $TRELLIS_TEST_BROWSER,
    Debian's /usr/bin/chromium, then Chrome / Edge where Windows and macOS install them."""
    import shutil

    candidates = [os.environ.get("TRELLIS_TEST_BROWSER"), "/usr/bin/chromium",
                  *(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome", "msedge"))]
    for base in filter(None, (os.environ.get(v) for v in ("PROGRAMFILES", "PROGRAMFILES(X86)", "LOCALAPPDATA"))):
        candidates += [os.path.join(base, "Google", "Chrome", "Application", "chrome.exe"),
                       os.path.join(base, "Microsoft", "Edge", "Application", "msedge.exe")]
    candidates.append("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
    return next((c for c in candidates if c and os.path.isfile(c)), None)


CHROMIUM = find_chromium()
SHOTS = os.path.join(ROOT, "test-artifacts", "ui")
EXAMPLES = os.path.join(ROOT, "assets", "examples")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TINY = {"td-ss_steps": 2, "td-slat_steps": 2, "td-texture_size": 64, "td-bake_views": 4,
        "td-bake_resolution": 64, "td-video_frames": 8, "td-video_resolution": 64}
FINISHED = ("done", "failed", "cancelled", "partial", "error")
JOB_TIMEOUT = 90
ROUND_TRIP_MS = 60000       # a wait on the page's answer from the server: generous, for a loaded machine


@contextlib.contextmanager
def headless_chromium():
    """Playwright's handle on CHROMIUM, headless, until the block ends; fails with what to install without one."""
    if CHROMIUM is None:
        pytest.fail("no Chromium-family browser found: the browser tests need one. On Debian/Ubuntu "
                    "`apt-get install chromium` (./run.sh test does so when run as root); on Windows install "
                    "Chrome or Edge, or set TRELLIS_TEST_BROWSER to a chrome.exe.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -r requirements_test.txt")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def launch_app(args: list, gradio_tmp) -> tuple:
    """`gradio_main.py ARGS --no-browser --device cpu` on a free port, as a user starts it: (process, its output
    lines so far, which keep growing, and the address it printed). Killed, with its log, if it does not start."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "GRADIO_TEMP_DIR": str(gradio_tmp)}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "gradio_main.py"), *args, "--port", str(port),
                             "--no-browser", "--device", "cpu"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, ready = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "running at http://" in line:
                ready.set()
    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        proc.wait(10)
        raise AssertionError("the app did not start within 120 s:\n" + "".join(lines))
    url = re.search(r"running at (http://\S+)", "".join(lines)).group(1)
    assert url.startswith(f"http://127.0.0.1:{port}"), url
    return proc, lines, url


@contextlib.contextmanager
def running_app(tiny_pipeline_dir, outputs, tmp_path_factory):
    """The app as a user starts it, over `outputs`, until the block ends with Ctrl-C (checked to stop cleanly)."""
    proc, lines, url = launch_app(["--model", tiny_pipeline_dir, "--host", "127.0.0.1", "--outputs", str(outputs)],
                                  tmp_path_factory.mktemp("gradio_tmp"))
    try:
        yield url
    finally:
        if os.name == "posix":
            proc.send_signal(signal.SIGINT)           # Ctrl-C: the app closes its server and its runner
        else:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if os.name == "posix":
        assert proc.returncode == 0, "the app did not stop cleanly on Ctrl-C:\n" + "".join(lines[-30:])


@contextlib.contextmanager
def running_text_app(tiny_text_models_dir, outputs, tmp_path_factory):
    """The app on the tiny text pipeline (`--text-model`) beside the tiny image pipeline, over `outputs`, until the
    block ends with Ctrl-C."""
    proc, _, url = launch_app(["--model", os.path.join(tiny_text_models_dir, "TRELLIS-image-large"),
                               "--text-model", os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"),
                               "--outputs", str(outputs)], tmp_path_factory.mktemp("gradio_tmp"))
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGINT) if os.name == "posix" else proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def job_dirs(outputs):
    return sorted(p for p in outputs.iterdir() if p.is_dir())


class Page:
    """A fresh browser page on the app that records console errors and any request leaving this machine."""

    def __init__(self, browser, url, init_script=None):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        if init_script:                 # run in the page before its own scripts (tests/helpers/late_stream_close.py)
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.errors, self.external = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                     else self.external.append(r.url))
        self.page.goto(url)
        self.page.wait_for_selector("#td-generate")

    def check_clean(self):
        deadline = time.monotonic() + 10          # a compile report's lines arrive one by one: let it finish
        while compile_reports(self.errors)[1] and time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
        unexpected = unexpected_errors(self.errors)
        assert unexpected == [], unexpected
        assert self.external == [], f"the page fetched from the internet: {self.external}"

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        try:
            self.page.screenshot(path=os.path.join(SHOTS, name), full_page=True, timeout=60000)
        except Exception:        # a busy machine: the WebGL viewer can starve a full-page capture
            self.page.screenshot(path=os.path.join(SHOTS, name), timeout=60000)

    def close(self):
        self.context.close()

    # ---------------------------------------------------------------- controls
    def upload(self, path):
        box = self.page.locator("#td-single")
        if box.locator("input[type=file]").count() == 0:         # an image is shown: clear it first
            box.get_by_label("Clear").click()
        box.locator("input[type=file]").set_input_files(path)

    def open_settings(self):
        for acc, inside in [("td-gen-settings", "td-ss_steps"), ("td-out-settings", "td-formats"),
                            ("td-mem-settings", "td-precision")]:
            if not self.page.locator(f"#{inside}").is_visible():
                self.page.locator(f"#{acc} .label-wrap").first.click()
                self.page.locator(f"#{inside}").wait_for(state="visible")

    def set_number(self, elem_id, value):
        box = self.page.locator(f"#{elem_id} input[data-testid=number-input]")
        held = "([id, v]) => document.querySelector(`#${id} input[type=range]`).value === v"
        # Typing a value that box and range already hold would only send the page's refresh once more.
        if box.input_value() != str(value) or not self.page.evaluate(held, [elem_id, str(value)]):
            box.fill(str(value))
            box.press("Enter")
        # A value beyond the slider's useful range widens it (a round trip): wait for the range to hold it.
        self.page.wait_for_function(held, arg=[elem_id, str(value)], timeout=ROUND_TRIP_MS)

    def tiny(self, **overrides):
        self.open_settings()
        for elem_id, value in {**TINY, **overrides}.items():
            self.set_number(elem_id, value)
        self.page.locator("#td-fill_holes input[type=checkbox]").uncheck()

    def choose(self, elem_id, option):
        box = self.page.locator(f"#{elem_id} input")
        box.click()
        self.page.locator(f"#{box.get_attribute('aria-controls')}").get_by_role(
            "option", name=option, exact=True).click()
        assert self.page.locator(f"#{elem_id} input").input_value() == option

    def formats(self, wanted):
        for label, value in [("GLB", "glb"), ("PLY", "ply"), ("OBJ", "obj"), ("MP4", "mp4"), ("STL", "stl"),
                             ("3MF", "3mf"), ("USDZ", "usdz")]:
            box = self.page.locator("#td-formats label", has_text=label).locator("input")
            box.check() if value in wanted else box.uncheck()

    def status(self):
        state, text = self.page.locator("#td-status [data-state]").first.evaluate(
            "el => [el.dataset.state, el.innerText]")          # one read: the box is re-rendered often
        return state, text.strip()

    def wait_status(self, states, timeout=JOB_TIMEOUT, seen=None):
        """Polls the status box until its state is one of `states`; records every distinct text in `seen`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                state, text = self.status()
            except Exception:                       # re-rendered between the two reads
                continue
            if seen is not None and (not seen or seen[-1] != (state, text)):
                seen.append((state, text))
            if state in states:
                return state, text
            time.sleep(0.05)
        raise AssertionError(f"status never reached {states}; last: {self.status()}, seen: {seen}; "
                             f"Generate: {self.generate_button()}")

    def generate_button(self) -> dict:
        """Generate's label and whether it takes a click (a failed wait says whether the page stayed busy)."""
        return self.page.evaluate("() => { const g = document.querySelector('#td-generate');"
                                  " return g && {label: g.innerText.trim(), disabled: g.disabled}; }")

    def wait_finished_after(self, previous, timeout=JOB_TIMEOUT, outputs=None, before=()):
        """(state, text) of the first finished status other than ``previous`` (the status before a job was
        started): a job of the tiny pipeline can finish (0.2 s) before a poll sees it queued or running. With
        ``outputs``: also a finished status once a job folder not in ``before`` has finished (an export's status can
        read exactly as the last one: same seed, same seconds)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                now = self.status()
            except Exception:                       # re-rendered between the two reads
                continue
            ended = outputs is not None and any((d / "timings.json").is_file() or (d / "error.json").is_file()
                                                for d in set(job_dirs(outputs)) - set(before))
            if (now != previous or ended) and now[0] in FINISHED:
                return now
            time.sleep(0.05)
        raise AssertionError(f"no new finished status after {previous}; last: {self.status()}")

    def generate(self):
        self.page.click("#td-generate")

    # ---------------------------------------------------------------- the result's downloads
    def offered(self) -> list:
        """The kinds of the files the result column offers for download (desktop.ui.download_row), in its order."""
        from desktop.ui.download_row import WORDS

        texts = self.page.eval_on_selector_all("#td-dl-format label:has(input)",
                                              "els => els.map(e => e.innerText.trim())")
        by_words = sorted(WORDS.items(), key=lambda item: -len(item[1]))         # "GLB, level of detail 1" first
        return [next(kind for kind, words in by_words if t.startswith(words)) for t in texts]

    def download(self, kind) -> tuple:
        """(name, bytes) of the result's file of `kind`, picked in the choice and downloaded with the button."""
        from desktop.ui.download_row import SHORT, WORDS

        pattern = re.compile(rf"^\s*{re.escape(WORDS[kind])}(?: ·|, Draco)")
        self.page.locator("#td-dl-format label:has(input)").filter(has_text=pattern).click()
        self.page.wait_for_function("(t) => document.querySelector('#td-download')?.innerText.trim() === t",
                                    arg=f"Download {SHORT[kind]}", timeout=ROUND_TRIP_MS)
        with self.page.expect_download(timeout=30000) as dl:
            self.page.click("#td-download")
        return dl.value.suggested_filename, open(dl.value.path(), "rb").read()
