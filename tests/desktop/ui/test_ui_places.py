"""Names and places in the browser app, end to end: a real `gradio_main.py` on the tiny pipeline (CPU) driven by
Playwright in headless Chromium (test_ui.py's helpers). Downloads named after the input and seed; Open folder (the
file manager of the computer the app runs on: here a stand-in `xdg-open` first on the app's PATH that writes down
what it was asked to open) and Copy path; the History tab's thumbnails with preset, seed and state (a job that
failed before it had a folder too); Batch refusing a bad file at drop, its overall ETA, rows that open their result
and one zip of all results; the finished batch and the History tab at 800/1024/1400 px in light and dark with
axe-core. Screenshots go to test-artifacts/ui/."""
import io
import json
import os
import re
import sys
import time
import zipfile

import pytest

from tests.helpers.gradio_app import EXAMPLES, FINISHED, Page, job_dirs, running_app
from tests.helpers.page_audit import AUDIT_WIDTH, WIDTHS, settled_audit


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("ui_places_outputs")


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """The file the stand-in file manager appends each folder it was asked to open to."""
    return tmp_path_factory.mktemp("file_manager") / "opened.txt"


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, outputs, opened, tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    fake = bin_dir / "xdg-open"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{opened}"\n')
    fake.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        mp.setenv("DISPLAY", ":0")                  # a desktop session for it to open in
        with running_app(tiny_pipeline_dir, outputs, tmp_path_factory) as url:
            mp.undo()
            yield url


@pytest.fixture
def ui(browser, server):
    page = Page(browser, server)
    yield page
    page.close()


def run_one(ui, outputs, image, formats):
    """Generate `image` with tiny settings; its job folder and the seed it used."""
    ui.upload(image)
    ui.wait_status(("ready",), timeout=30)
    ui.tiny()
    ui.formats(formats)
    before = set(job_dirs(outputs))
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "done", text
    (folder,) = set(job_dirs(outputs)) - before
    return folder, json.loads((folder / "settings.json").read_text())["seed"]


def download(ui, selector):
    with ui.page.expect_download(timeout=30000) as dl:
        ui.page.click(selector)
    return dl.value.suggested_filename, open(dl.value.path(), "rb").read()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in file manager is a shell script")
def test_downloads_are_named_after_the_input_and_seed_open_folder_and_copy_path(ui, outputs, opened):
    ui.context.grant_permissions(["clipboard-read", "clipboard-write"])
    assert not ui.page.locator("#td-open-folder").is_enabled()          # nothing shown yet
    folder, seed = run_one(ui, outputs, os.path.join(EXAMPLES, "chair.png"), {"glb", "ply", "obj", "mp4"})
    stem = f"chair_s{seed}"
    name, data = ui.download("glb")
    assert name == f"{stem}.glb" and data == (folder / "model.glb").read_bytes()
    name, data = ui.download("ply")
    assert name == f"{stem}.ply" and data == (folder / "model.ply").read_bytes()
    name, data = ui.download("obj")
    assert name == f"{stem}_obj.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as z:        # unzipped, a folder of its own: model.mtl never collides
        assert sorted(z.namelist()) == [f"{stem}/model.mtl", f"{stem}/model.obj", f"{stem}/model.png"]
        assert z.read(f"{stem}/model.obj") == (folder / "model.obj").read_bytes()
    video = ui.page.locator("#td-video video").get_attribute("src")
    assert video.endswith(f"/{stem}.mp4"), video                      # what the player's download saves
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("model.")) == \
        ["model.glb", "model.mtl", "model.obj", "model.ply", "model.png"]         # the folder keeps its names

    # Open folder: the browser is on this computer, so it is offered, and opens the shown job's folder.
    ui.page.locator("#td-open-folder").wait_for(state="visible")
    ui.page.click("#td-open-folder")
    ui.page.wait_for_selector("[data-testid=toast-body]:has-text('Opened')")
    deadline = time.time() + 10
    while not opened.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert opened.read_text().splitlines() == [str(folder)]
    # Copy path: the folder's path on the clipboard, and said.
    ui.page.click("#td-copy-path")
    ui.page.wait_for_selector("[data-testid=toast-body]:has-text('Copied')")
    assert ui.page.evaluate("() => navigator.clipboard.readText()") == str(folder)
    time.sleep(1.0)                                         # let the viewer draw a frame for the screenshot
    ui.shot("places-01-named-downloads-open-folder.png")
    ui.check_clean()


@pytest.mark.skipif(os.name != "posix" or sys.platform == "darwin", reason="a desktop session is a Linux variable")
def test_a_machine_without_a_desktop_has_no_file_manager(monkeypatch, tmp_path):
    from desktop.ui.places import file_manager

    opener = tmp_path / "xdg-open"
    opener.write_text("#!/bin/sh\n")
    opener.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert file_manager("/x") is None                   # installed, yet nothing could open where anyone sees it
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert file_manager("/x") == [str(opener), "/x"]


def test_history_tab_thumbnails_with_preset_seed_and_state(ui, outputs, tmp_path):
    done, seed = run_one(ui, outputs, os.path.join(EXAMPLES, "mug.png"), {"ply"})
    # A file that is no image fails before its job has a folder: its queue record becomes its folder, so that it is
    # listed (once) now and after a restart.
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    ui.upload(str(fake))
    ui.wait_status(("error",), timeout=30)
    before = set(job_dirs(outputs))
    ui.generate()
    ui.wait_status(("failed",))
    (kept,) = set(job_dirs(outputs)) - before
    assert json.loads((kept / "error.json").read_text())["state"] == "failed"

    ui.page.get_by_role("tab", name="History").click()
    gallery = ui.page.locator("#td-history-gallery")
    gallery.locator("img").first.wait_for(timeout=30000)
    # The tab fills its gallery when opened, after showing what an earlier fill left: wait for the failed job's entry.
    gallery.get_by_text("fake.png", exact=False).first.wait_for(timeout=30000)
    # At the top of its tab: the thumbnails come before the search box, and show in the first screen.
    top = gallery.bounding_box()["y"]
    assert top < ui.page.locator("#td-history").bounding_box()["y"] and top < 400
    captions = [c.strip() for c in gallery.locator(".caption-label, figcaption, .caption").all_inner_texts()]
    assert captions[0].startswith("fake.png · failed"), captions          # newest first
    mug = next(c for c in captions if c.startswith("mug.png"))
    assert mug.startswith("mug.png · done · TRELLIS v1 · custom") and f"seed {seed}" in mug, mug
    assert len(captions) == len(job_dirs(outputs))
    ui.shot("places-02-history-tab.png")

    # A click shows that job in the result column, and names it for Use these settings / Export again.
    index = captions.index(mug)
    gallery.locator("button.thumbnail-item, .thumbnail-item").nth(index).click()
    ui.wait_status(("history",), timeout=30)
    ui.page.wait_for_function("() => document.querySelector('#td-info').innerText.includes('Seed used')")
    assert str(done) in ui.page.inner_text("#td-info")
    assert ui.page.locator("#td-history input").input_value().endswith("mug.png · done")
    assert "ply" in ui.offered()
    gallery.locator(".thumbnail-item").first.click()                       # the failed one: its reason, no path
    ui.page.wait_for_function("() => (document.querySelector('#td-status') || {}).innerText?.includes('(failed)')",
                              timeout=30000)               # the status read 'history' already: mug's
    state, text = ui.status()
    assert state == "history", state
    assert "(failed)" in text and "not an image file" in text and "fake.png" in text, text
    assert "gradio_tmp" not in text and str(tmp_path) not in text, text
    ui.shot("places-03-history-failed-job.png")
    ui.check_clean()


def test_batch_refuses_bad_files_at_drop_eta_rows_and_zip(ui, outputs, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image")
    ui.tiny()
    ui.formats({"glb", "ply"})
    ui.page.get_by_role("tab", name="Batch").click()
    dropped = time.time()
    ui.page.locator("#td-batch input[type=file]").set_input_files(
        [os.path.join(EXAMPLES, "chair.png"), str(fake), os.path.join(EXAMPLES, "sphere.png")])
    state, text = ui.wait_status(("ready",), timeout=30)
    assert "Refused 1 file(s)" in text and "fake.png" in text and "not an image file" in text and \
        "2 image(s) ready" in text, text
    assert time.time() - dropped < 20                                       # at drop, not when its turn comes
    ui.page.wait_for_selector("#td-batch td[aria-label='sphere.png']")
    assert ui.page.locator("#td-batch td[aria-label='fake.png']").count() == 0
    ui.shot("places-04-batch-refused-at-drop.png")

    before = set(job_dirs(outputs))
    ui.generate()
    seen = []
    state, text = ui.wait_status(FINISHED, seen=seen)
    assert state == "done", seen
    running = [t for s, t in seen if s == "running"]
    assert any(re.search(r"the whole batch: (ETA \d+:\d\d|estimating the time left…)", t) for t in running), seen
    assert text.startswith("2 of 2 finished: 2 done"), text
    new = sorted(set(job_dirs(outputs)) - before)
    assert len(new) == 2
    # A row opens its job's result.
    chair = next(d for d in new if json.loads((d / "settings.json").read_text())["inputs"][0].endswith("chair.png"))
    ui.page.locator("#td-status tr[data-job] button", has_text="chair.png").click()
    ui.page.wait_for_function("(f) => document.querySelector('#td-info').innerText.includes(f)", arg=str(chair),
                              timeout=30000)
    assert "chair.png" in ui.page.inner_text("#td-info")
    # One zip of all results: a folder per item, named after its input and seed.
    ui.page.locator("#td-batch-zip").wait_for(state="visible", timeout=30000)
    name, data = download(ui, "#td-batch-zip")
    assert re.fullmatch(r"batch_\d{8}-\d{6}_2-results\.zip", name), name
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
    for d in new:
        record = json.loads((d / "settings.json").read_text())
        stem = os.path.splitext(os.path.basename(record["inputs"][0]))[0] + f"_s{record['seed']}"
        assert {f"{stem}/model.glb", f"{stem}/model.ply", f"{stem}/settings.json"} <= names, names
    assert not any(n.endswith("result.npz") for n in names)
    ui.shot("places-05-batch-done-rows-zip.png")

    # The finished batch and the History tab's grid at every width in both themes, each theme read by axe-core (no
    # serious or critical violation). Dark: the system colour scheme turned dark, which Gradio follows live in this page.
    for theme in ("light", "dark"):
        ui.page.emulate_media(color_scheme=theme)
        ui.page.wait_for_function("(dark) => document.body.classList.contains('dark') === dark", arg=theme == "dark")
        for tab, shown in (("Batch", "#td-status tr[data-job]"), ("History", "#td-history-gallery img")):
            ui.page.get_by_role("tab", name=tab).click()
            ui.page.locator(shown).first.wait_for(timeout=30000)
            for width in WIDTHS:
                ui.page.set_viewport_size({"width": width, "height": 1000})
                if width == AUDIT_WIDTH:
                    found = settled_audit(ui)
                    assert found == [], (tab, theme, width, found)
                ui.shot(f"places-{tab.lower()}-{width}-{theme}.png")
    ui.page.set_viewport_size({"width": 1400, "height": 1100})
    ui.check_clean()
