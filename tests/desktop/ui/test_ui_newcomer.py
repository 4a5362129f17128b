"""A newcomer's first ten minutes in the browser app, end to end: a real `gradio_main.py` on the tiny pipeline (CPU)
driven by Playwright in headless Chromium, as tests/desktop/ui/test_ui.py does. Background removal is offline here
(no u2net.onnx in an empty TRELLIS_MODEL_DIR, its download pointed at a closed local port), as on a computer
without internet.

- the page reads at any width: every mode reachable at 800 / 1024 / 1400 px, the columns stacked below 900 px,
  an h1 with the settings' sub-headings under it, visible keyboard focus, the status announced, Ctrl+Enter, and
  axe-core (tests/js) finding no serious or critical violation nor a heading out of order in light and dark;
  screenshots of each in test-artifacts/ui/;
- state that does what it says: Generate and Cancel, the last result kept, a cancelled job's files, the result
  column per tab, "Use these settings" bringing back a job's images and tab, a server that stopped;
- errors as a headline, an action (a button that does it) and folded details, never twice.
"""
import json
import os
import signal
import time

import pytest
from PIL import Image

from desktop.ui.output_layout import OUTPUT_SECTIONS
from desktop.ui.status import home_path
from tests.helpers.gradio_app import (EXAMPLES, FINISHED, JOB_TIMEOUT, ROUND_TRIP_MS, Page, job_dirs, launch_app,
                                      running_app)
from tests.helpers.page_audit import AUDIT_WIDTH, WIDTHS, audit, settled_audit
from tests.helpers.servers import free_port

TABS = ["Single image", "Multiple views", "Batch", "Text", "New look"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("ui_newcomer_outputs")


def offline_env(tmp_path_factory) -> dict:
    return {"TRELLIS_MODEL_DIR": str(tmp_path_factory.mktemp("no_models")),
            "TRELLIS_U2NET_URL": f"http://127.0.0.1:{free_port()}/u2net.onnx"}


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, outputs, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:            # running_app hands os.environ to the app
        for key, value in offline_env(tmp_path_factory).items():
            mp.setenv(key, value)
        with running_app(tiny_pipeline_dir, outputs, tmp_path_factory) as url:
            yield url


def shots_everywhere(ui, name: str, anchor: str = "#td-status"):
    """The page as it is now at every width, in the light and the dark theme (the system colour scheme, which
    Gradio follows live): a screenshot of each, and no serious or critical axe-core finding in either theme."""
    for theme in ("light", "dark"):
        ui.page.emulate_media(color_scheme=theme)
        ui.page.wait_for_function("(dark) => document.body.classList.contains('dark') === dark", arg=theme == "dark")
        for width in WIDTHS:
            ui.page.set_viewport_size({"width": width, "height": 1000})
            ui.page.locator(anchor).scroll_into_view_if_needed()
            if width == AUDIT_WIDTH:
                assert settled_audit(ui) == [], (name, theme, width)
            ui.shot(f"{name}-{width}-{theme}.png")
    ui.page.emulate_media(color_scheme="light")
    ui.page.set_viewport_size({"width": 1400, "height": 1100})


def no_toast(ui, seconds=1.0):
    """No toast within `seconds` (the status box says everything once)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert ui.page.locator("[data-testid=toast-body]").count() == 0, ui.page.inner_text("body")[:500]
        time.sleep(0.1)


def pick_history(ui, folder_name, outputs):
    from desktop.jobs.folder import list_history

    ui.page.get_by_role("tab", name="History").click()
    ui.page.click("#td-refresh")
    names = [name for _, name in list_history(outputs)]          # the dropdown's order, newest first
    history = ui.page.locator("#td-history input")
    history.click()
    listbox = ui.page.locator(f"#{history.get_attribute('aria-controls')}")
    listbox.locator(f"[role=option][data-index='{names.index(folder_name)}']").click()
    ui.wait_status(("history",), timeout=30)


def in_view(ui, selector: str, where) -> None:
    """The element is whole inside the window (the page brought it there: nothing here scrolls)."""
    box, size = ui.page.locator(selector).bounding_box(), ui.page.viewport_size
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= size["height"], (where, box, size)


def selected_tab(ui) -> str:
    return ui.page.locator("#td-tabs [role=tab][aria-selected=true]").inner_text().strip()


# ------------------------------------------------------------------------------------------ item 3

@pytest.mark.slow
def test_the_page_reads_at_every_width_in_both_themes(app, browser, server):
    for theme in ("light", "dark"):
        # a page of its own per theme (reloading one would abort its requests: console errors)
        ui = app() if theme == "light" else Page(browser, server + "?__theme=dark")
        if theme == "light":
            ui.check_clean()
        assert ui.page.locator("h1").inner_text().strip() == "Trellis Desktop"
        for width in WIDTHS:
            ui.page.set_viewport_size({"width": width, "height": 1000})
            # Every mode is a tab in view (Gradio's "..." menu would hide some at <= 1024 px).
            ui.page.wait_for_function("(n) => document.querySelectorAll('#td-tabs [role=tab]').length >= n",
                                      arg=len(TABS), timeout=10000)
            names = [t.inner_text().strip() for t in ui.page.locator("#td-tabs [role=tab]").all()]
            assert names[:len(TABS)] == TABS, (width, names)
            for tab in ui.page.locator("#td-tabs [role=tab]").all():         # each whole, inside the window
                box = tab.bounding_box()
                assert tab.is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
            assert ui.page.get_by_label("More tabs").count() == 0
            generate, status = ui.page.locator("#td-generate").bounding_box(), ui.page.locator("#td-status").bounding_box()
            if width < 900:           # stacked: the result column below the settings, each the full width
                assert status["y"] >= generate["y"] + generate["height"], (width, generate, status)
                assert status["width"] > 0.8 * width
            else:                     # side by side
                assert status["x"] >= generate["x"] + generate["width"], (width, generate, status)
            if width == AUDIT_WIDTH:
                assert audit(ui) == [], (theme, width)
            ui.shot(f"newcomer-{width}-{theme}.png")
    ui.page.set_viewport_size({"width": 1400, "height": 1100})

    # Keyboard: a radio that has the focus shows it (dark theme still open).
    ui.page.locator("#td-generate").focus()
    for _ in range(12):
        ui.page.keyboard.press("Tab")                  # the preset comes after Generate
        if ui.page.evaluate("() => !!document.activeElement.closest('#td-preset')"):
            break
    assert ui.page.evaluate("() => document.activeElement.type") == "radio"
    outline = ui.page.evaluate("""() => { const s = getComputedStyle(document.activeElement.closest('label'));
                                          return [s.outlineStyle, parseFloat(s.outlineWidth)]; }""")
    assert outline[0] == "solid" and outline[1] >= 2, outline
    ui.shot("newcomer-focus-radio-dark.png")

    # Ctrl+Enter generates, from the prompt box too; the status box's change is announced.
    ui.page.get_by_role("tab", name="Text").click()
    ui.page.locator("#td-prompt textarea").focus()
    ui.page.keyboard.press("Control+Enter")
    state, text = ui.wait_status(("error",), timeout=30)
    assert "prompt is empty" in text and ui.page.locator("#td-prompt textarea").input_value() == ""
    live = ui.page.locator("#td-live")
    assert live.get_attribute("aria-live") == "polite" and live.get_attribute("role") == "status"
    ui.page.wait_for_function("() => document.querySelector('#td-live').textContent.includes('prompt is empty')")
    ui.page.wait_for_function("() => !document.querySelector('#td-generate').disabled")      # the click is over
    assert settled_audit(ui) == []                       # the error's colour on the dark theme too
    ui.shot("newcomer-error-dark.png")
    try:
        ui.check_clean()
    finally:
        ui.close()


def test_the_settings_headings_come_under_the_page_title(app):
    """The Output settings' sub-headings are the level under the page's h1 (axe-core's heading-order, which audit()
    fails on), drawn as Gradio draws an h4 there."""
    ui = app()
    ui.open_settings()
    assert audit(ui) == []
    levels = ui.page.eval_on_selector_all("h1, h2, h3, h4, h5, h6",
                                          "hs => hs.filter(h => h.offsetParent !== null).map(h => +h.tagName[1])")
    assert levels == [1] + [2] * len(OUTPUT_SECTIONS), levels
    # the sub-heading's look beside an h4 put in its place for a moment
    looks = ui.page.evaluate("""() => {
        const h = document.querySelector('#td-out-settings .td-subheading h2');
        const h4 = document.createElement('h4');
        h.parentElement.append(h4);
        const look = (e) => { const s = getComputedStyle(e); return [s.fontSize, s.fontWeight, s.lineHeight, s.color]; };
        const both = [look(h), look(h4)];
        h4.remove();
        return both;
    }""")
    assert looks[0] == looks[1], looks
    ui.check_clean()


# ------------------------------------------------------------------------------------------ item 2

WATCH_BUTTONS = """() => {
    window.tdSeen = [];
    const look = () => {
        const g = document.querySelector('#td-generate'), c = document.querySelector('#td-cancel');
        const now = `${g.innerText.trim()}|${g.disabled}|${c.disabled}`;
        if (window.tdSeen[window.tdSeen.length - 1] !== now) window.tdSeen.push(now);
    };
    look();
    new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                       characterData: true});
}"""


def buttons_now(ui) -> str:
    return ui.page.evaluate("""() => { const g = document.querySelector('#td-generate');
        return `${g.innerText.trim()}|${g.disabled}|${document.querySelector('#td-cancel').disabled}`; }""")


@pytest.mark.slow
def test_state_does_what_it_says(app, outputs, tmp_path):
    ui = app()
    assert buttons_now(ui) == "Generate|false|true"                 # nothing to cancel yet
    ui.tiny()
    ui.formats({"ply", "mp4"})
    ui.upload(os.path.join(EXAMPLES, "chair.png"))
    ui.wait_status(("ready",), timeout=ROUND_TRIP_MS / 1000)

    # Generate says that a job runs, Cancel can be pressed meanwhile, and both come back after it.
    ui.page.evaluate(WATCH_BUTTONS)
    before = set(job_dirs(outputs))
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "done", text
    ui.page.wait_for_function("() => !document.querySelector('#td-generate').disabled")
    ui.page.wait_for_function("() => document.querySelector('#td-cancel').disabled")
    assert "Generating…|true|false" in ui.page.evaluate("() => window.tdSeen"), ui.page.evaluate("() => window.tdSeen")
    (first,) = set(job_dirs(outputs)) - before
    ui.page.locator("#td-video video").wait_for(timeout=30000)
    first_video = ui.page.locator("#td-video video").get_attribute("src")

    # The result column follows the tab: the Text tab has no result yet; back on Single image, the chair again.
    ui.page.get_by_role("tab", name="Text").click()
    ui.page.wait_for_function("() => !document.querySelector('#td-video video')", timeout=30000)
    assert not ui.page.locator("#td-download").is_enabled() and ui.offered() == []
    ui.shot("newcomer-text-tab-empty-column.png")
    ui.page.get_by_role("tab", name="Single image").click()
    ui.page.wait_for_function("(src) => document.querySelector('#td-video video')?.getAttribute('src') === src",
                              arg=first_video, timeout=30000)

    # A long job: the last result stays while it runs; cancelled once its PLY is written, it shows that PLY.
    ui.tiny(**{"td-video_frames": 480, "td-video_resolution": 128})
    before = set(job_dirs(outputs))
    ui.generate()
    ui.wait_status(("running",))
    deadline = time.time() + JOB_TIMEOUT
    while not any((d / "model.ply").is_file() for d in set(job_dirs(outputs)) - before):
        assert time.time() < deadline and ui.status()[0] == "running", ui.status()
        assert ui.page.locator("#td-video video").get_attribute("src") == first_video      # the last result stays
        time.sleep(0.05)
    ui.page.click("#td-cancel")
    no_toast(ui)                                       # the button says "Cancelling…", the status box the rest
    state, text = ui.wait_status(FINISHED)
    assert state == "cancelled" and "what it had written (PLY" in text, text
    # The label comes back whichever of the cancel's answer and the job's end reaches the page last.
    ui.page.wait_for_function("() => document.querySelector('#td-cancel').innerText.trim() === 'Cancel'",
                              timeout=30000)
    assert ui.page.locator("#td-cancel").is_disabled()
    (second,) = set(job_dirs(outputs)) - before
    assert json.loads((second / "error.json").read_text())["state"] == "cancelled"
    ui.page.wait_for_function("() => !document.querySelector('#td-download').disabled", timeout=30000)
    assert "ply" in ui.offered()
    assert str(second) in ui.page.inner_text("#td-info")
    ui.page.wait_for_function("() => document.querySelector('#td-cancel').disabled")
    ui.shot("newcomer-cancelled-shows-its-files.png")
    shots_everywhere(ui, "newcomer-state-cancelled")

    # "Use these settings" brings back a job's images and tab: the chair job from the Text tab, then a job of
    # two views (its folder as the app writes it).
    ui.page.get_by_role("tab", name="Text").click()
    pick_history(ui, first.name, outputs)
    ui.page.click("#td-reuse")
    ui.page.wait_for_function("() => document.querySelector('#td-tabs [role=tab][aria-selected=true]')"
                              ".innerText.trim() === 'Single image'", timeout=30000)
    ui.page.wait_for_selector("#td-single img", timeout=30000)
    ui.wait_status(("ready",), timeout=30)
    # the job's own copy, under the name it was given (not input.png): the next job's files are named as the first's
    assert ui.page.locator("#td-single img").get_attribute("src").endswith("chair.png")
    assert ui.status()[1].startswith("chair.png: "), ui.status()
    views = outputs / "20300101-000000-feedface"
    views.mkdir()
    for i, name in enumerate(("mushroom.png", "sphere.png")):
        Image.open(os.path.join(EXAMPLES, name)).save(views / ("input.png" if i == 0 else "input_2.png"))
    record = json.loads((first / "settings.json").read_text())
    (views / "settings.json").write_text(json.dumps({**record, "job_id": "f" * 32, "inputs": ["a.png", "b.png"]}))
    (views / "timings.json").write_text(json.dumps({"total": 1.0}))
    pick_history(ui, views.name, outputs)
    ui.page.click("#td-reuse")
    ui.page.wait_for_function("() => document.querySelector('#td-tabs [role=tab][aria-selected=true]')"
                              ".innerText.trim() === 'Multiple views'", timeout=30000)
    ui.page.wait_for_function("() => document.querySelectorAll('#td-multi img').length >= 2", timeout=30000)
    ui.shot("newcomer-reuse-multi-view.png")
    # Generate now makes that job again: two views, its seed.
    before = set(job_dirs(outputs))
    ui.tiny()
    ui.formats({"ply"})
    previous = ui.status()
    ui.generate()
    state, text = ui.wait_finished_after(previous)
    assert state == "done", text
    (again,) = set(job_dirs(outputs)) - before
    again_record = json.loads((again / "settings.json").read_text())
    assert len(again_record["inputs"]) == 2 and again_record["seed"] == record["seed"]
    assert [os.path.basename(x) for x in again_record["inputs"]] == ["a.png", "b.png"], again_record["inputs"]
    # Use these settings' tab switch fires that tab's select (Gradio 6), so the column follows: no click needed.
    ui.page.wait_for_function("(f) => document.querySelector('#td-info').innerText.includes(f)", arg=str(again),
                              timeout=30000)
    ui.check_clean()


@pytest.mark.slow
def test_a_server_that_stopped_is_said_so(browser, tiny_pipeline_dir, tmp_path):
    proc, _, url = launch_app(["--model", tiny_pipeline_dir, "--outputs", str(tmp_path / "out")], tmp_path / "gradio")
    ui = None
    try:
        ui = Page(browser, url)
        # The outputs folder in the header as people read it (~ for the home folder), the whole path its tooltip.
        where = ui.page.locator("#td-header code[title]")
        assert where.get_attribute("title") == str(tmp_path / "out")
        assert where.inner_text() == home_path(tmp_path / "out")
        ui.tiny(**{"td-ss_steps": 100, "td-slat_steps": 100})
        ui.formats({"ply"})
        ui.upload(os.path.join(EXAMPLES, "mug.png"))
        ui.wait_status(("ready",), timeout=ROUND_TRIP_MS / 1000)
        ui.generate()
        ui.wait_status(("running",))
        proc.send_signal(signal.SIGINT) if os.name == "posix" else proc.terminate()
        proc.wait(60)
        note = ui.page.wait_for_selector("#td-offline", timeout=30000)
        assert "The app has stopped" in note.inner_text() and note.get_attribute("role") == "alert"
        # The page's title under the notice, not behind it: at the top of the page, and scrolled down the notice
        # stays in view.
        ui.page.evaluate("() => window.scrollTo(0, 0)")
        banner, title = note.bounding_box(), ui.page.locator("#td-header h1").bounding_box()
        assert title["y"] >= banner["y"] + banner["height"], (banner, title)
        assert ui.page.evaluate("""() => {
            const h = document.querySelector('#td-header h1'), r = h.getBoundingClientRect();
            return h.contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2)); }""")
        ui.page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        assert ui.page.evaluate("() => window.scrollY") > 0 and note.bounding_box()["y"] == 0
        # The job's end (interrupted) if the server could still send it, else the page's own "stopped": no frozen
        # progress bar either way.
        ui.page.wait_for_function("() => !['running', 'queued'].includes("
                                  "document.querySelector('#td-status [data-state]').dataset.state)", timeout=30000)
        assert ui.page.locator("#td-status progress").count() == 0
        assert "stopped" in ui.page.inner_text("#td-status").lower()
        # No button left offering what cannot happen: Generate says so, Cancel and the rest are disabled.
        assert ui.page.inner_text("#td-generate").strip() == "App stopped"
        # every control disabled, and kept so (the page's check repeats while the server is away)
        ui.page.wait_for_function("() => [...document.querySelectorAll('.gradio-container :is(button, input, "
                                  "textarea, select)')].every(e => e.disabled)", timeout=10000)
        assert ui.page.locator("#td-cancel").is_disabled()
        assert ui.page.locator("#td-status [data-state=running], #td-status .td-running").count() == 0
        ui.shot("newcomer-server-stopped.png")
    finally:
        if ui is not None:
            ui.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------------ item 4

@pytest.mark.slow
def test_errors_are_a_headline_an_action_and_details(app, outputs, tmp_path):
    ui = app()
    # A file that is no image, at upload: one sentence, the raw text folded, no toast; in view on a phone, where
    # the status sits below every setting, and on a wide window.
    for width, height, name in ((1400, 900, "memo.png"), (390, 844, "notes.png")):
        fake = tmp_path / name
        fake.write_text("this is not an image")
        ui.page.set_viewport_size({"width": width, "height": height})
        ui.upload(str(fake))
        ui.page.wait_for_function("(n) => (document.querySelector('#td-status .td-headline') || {}).innerText"
                                  "?.includes(n)", arg=name, timeout=30000)
        in_view(ui, "#td-status .td-headline", (width, height))
    headline = ui.page.inner_text("#td-status .td-headline")
    assert headline == "This image cannot be used: notes.png is not an image file this app can read.", headline
    assert ui.page.locator("#td-status details").count() == 1
    assert not ui.page.locator("#td-status details").evaluate("el => el.open")
    no_toast(ui)

    # A photo without transparency, offline: background removal cannot run. The headline says so in plain words,
    # the button beside it unticks Remove background, and the next Generate makes the model.
    photo = tmp_path / "photo.jpg"
    chair = Image.open(os.path.join(EXAMPLES, "chair.png")).convert("RGBA")
    white = Image.new("RGBA", chair.size, (255, 255, 255, 255))
    Image.alpha_composite(white, chair).convert("RGB").save(photo, quality=92)
    ui.upload(str(photo))
    ui.wait_status(("ready",), timeout=30)
    ui.tiny()
    ui.formats({"ply"})
    before = set(job_dirs(outputs))
    ui.page.set_viewport_size({"width": 900, "height": 1000})        # stacked, the settings open above the status
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "failed", text
    in_view(ui, "#td-status .td-headline", 900)
    ui.page.set_viewport_size({"width": 1400, "height": 1100})
    box = ui.page.locator("#td-status [data-state=failed]")
    assert box.get_attribute("data-error") == "offline_background"
    assert ui.page.inner_text("#td-status .td-headline") == ("The background removal model is missing, and this "
                                                             "computer cannot download it (offline?).")
    assert "u2net" not in ui.page.inner_text("#td-status .td-headline")
    details = ui.page.locator("#td-status details")
    assert not details.evaluate("el => el.open") and "u2net.onnx" in details.locator("pre").text_content()
    no_toast(ui)
    shots_everywhere(ui, "newcomer-error-offline-background")
    details.locator("summary").click()                                       # the raw text, on request
    assert details.evaluate("el => el.open")
    ui.shot("newcomer-error-details-open.png")

    ui.page.get_by_role("button", name="Untick Remove background").click()
    ui.page.wait_for_function("() => { const b = document.querySelector('#td-preprocess input[type=checkbox]');"
                              " return b && !b.checked && b.offsetParent !== null; }", timeout=ROUND_TRIP_MS)
    assert "press Generate" in ui.page.inner_text("#td-status")
    # The failed job has left the page idle: Generate takes the shortcut (it ignores it while it says Generating…).
    assert ui.generate_button() == {"label": "Generate", "disabled": False}, ui.generate_button()
    ui.page.keyboard.press("Control+Enter")
    state, text = ui.wait_status(("done",))
    (made,) = [d for d in set(job_dirs(outputs)) - before if (d / "model.ply").is_file()]
    record = json.loads((made / "settings.json").read_text())
    assert record["settings"]["preprocess"] is False
    ui.check_clean()


def test_trellis2_is_offered_greyed_with_how_to_install_it(app):
    """No TRELLIS.2 in the (empty) models folder: the Model choice is there, greyed on TRELLIS v1, with one line that
    says how to install TRELLIS.2 (Meta's DINOv3 licence page and the installer command); its pipeline type greyed."""
    ui = app()
    family = ui.page.locator("#td-family")
    assert family.locator("input[value=trellis]").is_checked()
    assert [box.is_disabled() for box in family.locator("input").all()] == [True, True]
    text = " ".join(family.inner_text().split())
    assert "TRELLIS.2 is not installed" in text and "--trellis2" in text, text
    assert "https://huggingface.co/facebook/dinov3-vitl16-pretrain-lvd1689m" in text, text
    # what installing it costs and what it needs, before the download
    assert "downloads about 16 GB" in text and "NVIDIA GPU" in text and "low-VRAM path" in text, text
    for width in (390, 800, 1366, 1400):
        ui.page.set_viewport_size({"width": width, "height": 1000})
        family.scroll_into_view_if_needed()
        ui.shot(f"newcomer-trellis2-not-installed-{width}.png")
    assert ui.page.locator("#td-pipeline_type input").is_disabled()
    assert "TRELLIS v1 has one path" in ui.page.inner_text("#td-pipeline_type")
    ui.check_clean()
