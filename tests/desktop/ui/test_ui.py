"""The browser app end to end: a real `gradio_main.py` process on the tiny random-weight pipeline (CPU),
driven by Playwright in Debian's headless chromium (or Chrome/Edge on Windows; never a downloaded browser).

Screenshots go to test-artifacts/ui/. The knobs are set through the page itself (tiny values: 2 + 2
steps, an 8-frame 64² preview, a 64² texture baked from 4 views, no hole filling). The app, the browser and the
page driver: tests/helpers/gradio_app.py and this folder's conftest.py.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest
from PIL import Image

from tests.helpers.gradio_app import EXAMPLES, FINISHED, JOB_TIMEOUT, ROUND_TRIP_MS, Page, job_dirs, running_app
from tests.helpers.repo import ROOT_DIR as ROOT



def download_bytes(ui, src):
    resp = ui.page.request.get(src)
    assert resp.status == 200, (src, resp.status)
    return resp.body()


# ------------------------------------------------------------------------------------------ tests

def test_help_lists_the_options():
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "desktop", "ui", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--model", "--host", "--port", "--precision", "--offload", "--no-browser", "--outputs",
                   "--device", "--gpus"):
        assert option in proc.stdout, option
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "gradio_main.py"), "--offload", "disk"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.slow
def test_bad_files_then_generate(app, outputs, tmp_path):
    ui = app()
    # The header names the model and the device, not their internals: a CPU has one renderer path to speak of
    # (a GPU's line says which it takes: trellis.fastpaths.describe); the model folder by its name.
    header = ui.page.wait_for_selector("#td-header:has-text('device: cpu')").inner_text()
    assert "device: cpu · outputs: " in header and "PyTorch" not in header and "VRAM" not in header, header
    assert "Model: TRELLIS v1 tiny_pipeline" in header and "/tiny_pipeline" not in header, header
    # 1. A text file named .png: refused at upload and by Generate, with a visible message.
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    ui.upload(str(fake))
    state, text = ui.wait_status(("error",), timeout=30)
    assert "cannot be used" in text and "notes.png" in text and "gradio" not in text.lower()
    ui.generate()
    state, text = ui.wait_status(("failed",), timeout=JOB_TIMEOUT)
    assert "cannot be used" in text and "not an image file" in text
    ui.shot("01-bad-file.png")

    # 2. A fully transparent PNG: nothing to model.
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(empty)
    ui.upload(str(empty))
    state, text = ui.wait_status(("error",), timeout=30)
    assert text.startswith("This image is see-through: its transparency leaves no solid object."), text
    # the bad file's job is kept (failed, with its input and settings: seen and run again after a restart); the
    # refused upload made no job
    (kept,) = job_dirs(outputs)
    assert json.loads((kept / "error.json").read_text())["kind"] == "input"

    # 3. The app still works: a real image with tiny settings, precision and offloading from the page.
    ui.upload(os.path.join(EXAMPLES, "sphere.png"))
    ui.wait_status(("ready",), timeout=30)
    ui.tiny()
    ui.choose("td-precision", "fp32")
    ui.choose("td-offload", "none")
    ui.formats({"glb", "ply", "mp4"})
    seen = []
    ui.generate()
    state, text = ui.wait_status(FINISHED, seen=seen)
    assert state == "done", seen
    running = {t for s, t in seen if s == "running"}
    assert len(running) >= 2, seen                          # the progress line moved
    assert any(re.search(r"step \d+/\d+", t) for t in running), seen
    assert len({t.split(" · ")[0] for t in running}) >= 2 and all("ETA" in t for t in running), seen
    assert re.search(r"Done in [\d.]+ s \(seed \d+\)", text)

    # The used seed is shown, and put into the seed box.
    info = ui.page.inner_text("#td-info")
    seed = int(re.search(r"Seed used: (\d+)", info).group(1))
    assert ui.page.locator("#td-seed input").input_value() == str(seed)
    (folder,) = set(job_dirs(outputs)) - {kept}
    record = json.loads((folder / "settings.json").read_text())
    assert record["seed"] == seed
    s = record["settings"]
    assert (s["ss_steps"], s["slat_steps"], s["texture_size"], s["video_frames"]) == (2, 2, 64, 8)
    assert (s["precision"], s["offload"], s["fill_holes"]) == ("fp32", "none", False)

    # The preview video plays.
    video = ui.page.locator("#td-video video")
    video.wait_for(timeout=30000)
    src = video.get_attribute("src")
    data = download_bytes(ui, src)
    assert data[4:8] == b"ftyp"
    ui.page.wait_for_function("() => { const v = document.querySelector('#td-video video');"
                              " return v && v.readyState >= 1 && v.duration > 0; }", timeout=30000)
    duration = ui.page.evaluate("() => document.querySelector('#td-video video').duration")
    assert abs(duration - 8 / 24) < 0.1

    # The GLB is in the 3D viewer.
    ui.page.wait_for_selector("#td-model3d canvas", timeout=30000)

    # The download row offers the files written (OBJ was not asked for); its button delivers a GLB that loads.
    import io

    import trimesh

    assert ui.offered() == ["glb", "ply", "mp4"]
    name, data = ui.download("glb")
    assert name.endswith(".glb")
    mesh = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    assert len(mesh.faces) > 0
    ply = download_bytes(ui, ui.page.locator("#td-files tr:has(td[aria-label='model.ply']) a").get_attribute("href"))
    assert ply.startswith(b"ply")

    time.sleep(1.0)                                         # let the viewer draw a frame for the screenshot
    ui.shot("02-done.png")
    # History (its own tab, which holds the search box) lists the job.
    ui.page.get_by_role("tab", name="History").click()
    ui.page.wait_for_function("() => document.querySelector('#td-history input')?.value.endsWith('sphere.png · done')",
                              timeout=30000)
    ui.check_clean()


def test_cancel_mid_run(app, outputs):
    ui = app()
    ui.upload(os.path.join(EXAMPLES, "mug.png"))
    ui.wait_status(("ready",), timeout=30)
    # Many steps and a long preview, so that the job is still running when Cancel is pressed.
    ui.tiny(**{"td-ss_steps": 100, "td-slat_steps": 100, "td-video_frames": 480})
    ui.formats({"ply", "mp4"})
    before = set(job_dirs(outputs))
    ui.generate()
    seen = []
    ui.wait_status(("running",), seen=seen)
    deadline = time.time() + JOB_TIMEOUT
    while "Sampling" not in ui.status()[1] and time.time() < deadline:
        time.sleep(0.05)
    ui.page.click("#td-cancel")
    state, text = ui.wait_status(FINISHED, seen=seen)
    assert state == "cancelled" and "Cancelled" in text, seen
    ui.shot("03-cancelled.png")
    (folder,) = set(job_dirs(outputs)) - before
    assert json.loads((folder / "error.json").read_text())["state"] == "cancelled"
    assert not (folder / "preview.mp4").exists()
    ui.check_clean()


def test_batch_multi_view_presets_and_history(app, outputs):
    ui = app()
    # Presets set the knobs (Low VRAM also precision and offloading).
    ui.open_settings()
    ui.page.locator("#td-preset label", has_text="Fast").click()
    ui.page.wait_for_function("() => document.querySelector('#td-ss_steps input[type=range]').value === '8'")
    ui.page.locator("#td-preset label", has_text="Low VRAM").click()
    ui.page.wait_for_function("() => document.querySelector('#td-precision input').value === 'fp16'")
    assert ui.page.locator("#td-offload input").input_value() == "model"
    assert ui.page.locator("#td-ss_steps input[type=range]").input_value() == "12"
    ui.shot("04-presets.png")
    ui.choose("td-precision", "auto")
    ui.choose("td-offload", "auto")

    # Batch: two files, two jobs, each shown as it completes.
    ui.tiny()
    ui.formats({"ply", "mp4"})
    ui.page.get_by_role("tab", name="Batch").click()
    ui.page.locator("#td-batch input[type=file]").set_input_files(
        [os.path.join(EXAMPLES, "house.png"), os.path.join(EXAMPLES, "chair.png")])
    ui.page.wait_for_selector("#td-batch td[aria-label='chair.png']")
    before = set(job_dirs(outputs))
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "done", text
    rows = ui.page.locator("#td-status tr[data-state=done]")
    assert rows.count() == 2
    assert "2 of 2 finished: 2 done" in text
    ui.page.wait_for_selector("#td-video video")
    new = sorted(set(job_dirs(outputs)) - before)
    assert len(new) == 2 and all((d / "model.ply").exists() and (d / "preview.mp4").exists() for d in new)
    ui.shot("05-batch.png")

    # History (its tab): pick the other batch job; its video is shown.
    shown = ui.page.locator("#td-video video").get_attribute("src")
    ui.page.get_by_role("tab", name="History").click()
    history = ui.page.locator("#td-history input")
    history.click()
    listbox = ui.page.locator(f"#{history.get_attribute('aria-controls')}")
    listbox.get_by_role("option").first.wait_for()
    labels = [o.get_attribute("aria-label") for o in listbox.get_by_role("option").all()]
    assert any("house.png · done" in x for x in labels) and any("chair.png · done" in x for x in labels), labels
    other = listbox.locator("[role=option][aria-selected=false]").filter(has_text=re.compile(r"(house|chair)\.png"))
    assert other.count() == 1
    other.click()
    ui.wait_status(("history",), timeout=30)
    ui.page.wait_for_function("(old) => { const v = document.querySelector('#td-video video');"
                              " return v && v.getAttribute('src') !== old; }", arg=shown, timeout=30000)
    assert ui.offered() == ["ply", "mp4"]
    # "Use these settings" puts that job's settings (its seed, randomize off) back into the knobs.
    shown_folder = re.search(r"Folder: (\S+)", ui.page.inner_text("#td-info")).group(1)
    assert shown_folder in {str(d) for d in new}
    with open(os.path.join(shown_folder, "settings.json")) as f:
        seed = json.load(f)["seed"]
    ui.page.click("#td-reuse")
    ui.page.wait_for_function(f"() => document.querySelector('#td-seed input').value === '{seed}'")
    assert not ui.page.locator("#td-randomize input").is_checked()

    # Multiple views of one object: one job with both images.
    ui.page.get_by_role("tab", name="Multiple views").click()
    ui.page.locator("#td-multi input[type=file]").set_input_files(
        [os.path.join(EXAMPLES, "mushroom.png"), os.path.join(EXAMPLES, "sphere.png")])
    # both uploads shown before the job is made (the first image alone appears while the second still uploads)
    ui.page.wait_for_function("() => document.querySelectorAll('#td-multi img').length >= 2", timeout=30000)
    ui.page.locator("#td-multi-mode label", has_text="Blend all views").click()
    before = set(job_dirs(outputs))
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "done", text
    (folder,) = set(job_dirs(outputs)) - before
    record = json.loads((folder / "settings.json").read_text())
    assert len(record["inputs"]) == 2 and record["settings"]["multi_image_mode"] == "multidiffusion"
    ui.shot("06-multi-view.png")
    ui.check_clean()


def test_export_again_from_the_history_with_the_output_settings(app, outputs):
    # A job made with a PLY only; then, picked in the History, "Export again" writes a GLB and an STL from its
    # result.npz with the Output settings (a face count, a height and a pivot), and the report shows under it.
    ui = app()
    ui.tiny()
    ui.formats({"ply"})
    ui.upload(os.path.join(EXAMPLES, "chair.png"))
    ui.wait_status(("ready",), timeout=30)
    before = set(job_dirs(outputs))
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "done", text
    (made,) = set(job_dirs(outputs)) - before
    assert (made / "result.npz").is_file() and not (made / "model.glb").exists()

    ui.page.get_by_role("tab", name="History").click()
    history = ui.page.locator("#td-history input")
    assert history.input_value().endswith("chair.png · done")          # the finished job is picked
    ui.formats({"glb", "stl"})
    for elem_id, value in (("td-target_faces", 5000), ("td-height", 1.8)):
        box = ui.page.locator(f"#{elem_id} input")
        box.fill(str(value))
        box.press("Enter")
    ui.page.locator("#td-pivot label", has_text="bottom").click()
    # Beside the button: what it will write, and with which settings (the job's 64² bake, its tiny steps' own).
    plan = "() => document.querySelector('#td-export-plan').innerText"
    ui.page.wait_for_function(f"() => ({plan})().includes('pivot bottom')", timeout=ROUND_TRIP_MS)
    note = ui.page.evaluate(plan)
    assert note.startswith("Export again writes GLB, STL:") and "5,000 triangles · 1.8 m tall" in note, note
    assert "64² PNG texture baked from 4 views of 64 px" in note, note
    before, previous = set(job_dirs(outputs)), ui.status()
    ui.page.click("#td-export-again")
    state, text = ui.wait_finished_after(previous)
    assert state == "done", text
    (exported,) = set(job_dirs(outputs)) - before
    assert {"model.glb", "model.stl", "export.json"} <= {p.name for p in exported.iterdir()}
    # its GLB's texture was baked from the tiny model's faint Gaussians, and says so (the print export below won't)
    assert any("mostly transparent" in w for w in json.loads((exported / "timings.json").read_text())["warnings"])
    report = json.loads((exported / "export.json").read_text())
    assert abs(report["triangles"] - 5000) <= 250 and report["size_m"]["height"] == pytest.approx(1.8, abs=1e-5)
    record = json.loads((exported / "settings.json").read_text())
    assert record["kind"] == "export" and record["source_job"] == json.loads((made / "settings.json").read_text())["job_id"]
    ui.page.wait_for_function("() => document.querySelector('#td-info').innerText.includes('triangles')")
    info = ui.page.inner_text("#td-info")
    assert "1.80 m" in info and "model.stl" in info and str(exported) in info
    # an export says where it comes from, and claims no sampling
    assert re.search(r"Export, exported from chair\.png of \d\d-\d\d \d\d:\d\d \(not sampled again\)", info), info
    assert "Steps:" not in info and "Export time:" in info
    # the download row follows the files written: the STL is one of them, under the export's own name
    assert ui.offered() == ["glb", "stl"]
    name, data = ui.download("stl")
    assert name.endswith("_export.stl") and data == (exported / "model.stl").read_bytes()
    ui.page.wait_for_selector("#td-model3d canvas")
    ui.shot("07-export-again.png")

    # The destination "3D print" sets the Output settings for it; exported again (from the export now picked: its
    # source's result), the report under the result says the destination's limits are met.
    ui.page.locator("#td-destination label", has_text="3D print").click()
    ui.page.wait_for_function("() => [...document.querySelectorAll('#td-units label')].some("
                             "l => l.innerText.includes('Millimetres') && l.querySelector('input').checked)")
    checked = ui.page.eval_on_selector_all("#td-formats input[type=checkbox]", "els => els.map(e => e.checked)")
    labels = ui.page.eval_on_selector_all("#td-formats label", "els => els.map(e => e.innerText)")
    assert {label.split()[0] for label, on in zip(labels, checked) if on} == {"MP4", "STL", "3MF"}, (labels, checked)
    assert ui.page.locator("#td-print_ready input").is_checked()
    before, previous = set(job_dirs(outputs)), ui.status()
    ui.page.click("#td-export-again")
    state, text = ui.wait_finished_after(previous, outputs=outputs, before=before)
    assert state == "done", text
    (printed,) = set(job_dirs(outputs)) - before
    report = json.loads((printed / "export.json").read_text())
    # (the random-weight blob of a random seed is a scatter of pieces: made one closed body, its repair may leave
    # much of the surface out, and the report must then say so)
    assert report["watertight"] and report["outward"] and report["shells"] == 1, report
    # (and its decimation to the face target may not keep it one body: then the file keeps more faces, said as missed)
    target = report["target_faces"]
    facts = (report["flat_base"] and report["print_repair"]["area_dropped_share"] <= 0.05
             and abs(report["triangles"] - target) <= 0.05 * target)
    assert report["destination"] == "print" and report["limits"]["met"] == facts, report
    # the status box says the verdict as a coloured badge: each limit missed with its numbers
    badge = ui.page.locator("#td-status .td-limits").first
    assert badge.get_attribute("data-limits") == ("met" if facts else "missed")
    said = badge.inner_text()
    assert said.startswith("✔ print: all 6 limits met" if facts else
                           f"✖ print: {len(report['limits']['reasons'])} of 6 limits missed"), said
    assert all(reason in said for reason in report["limits"]["reasons"]), said
    assert json.loads((printed / "settings.json").read_text())["source_job"] == json.loads(
        (made / "settings.json").read_text())["job_id"]
    ui.page.wait_for_function("() => document.querySelector('#td-info').innerText.includes('model.3mf')")
    info = ui.page.inner_text("#td-info")
    assert "Export · 3D print, exported from chair.png" in info, info
    assert "limits" not in info, info                         # the verdict is the badge's, said once
    # nothing in the print files holds a texture: nothing was baked
    timings = json.loads((printed / "timings.json").read_text())
    assert "bake" not in timings["export"] and "shape" in timings["export"], timings["export"]
    assert ui.offered() == ["stl", "3mf", "mp4"]
    # no GLB: the 3D view shows the print's STL
    ui.page.wait_for_selector("#td-model3d canvas", timeout=30000)
    # its History card is tagged with the destination and names its source (the gallery refills after each export)
    gallery = ui.page.locator("#td-history-gallery")
    gallery.get_by_text("export · 3D print", exact=False).first.wait_for(timeout=30000)
    captions = [c.strip() for c in gallery.locator(".caption-label, figcaption, .caption").all_inner_texts()]
    assert captions[0].startswith("chair.png · done · TRELLIS v1 · export · 3D print · exported from chair.png of "), captions
    ui.shot("08-export-print.png")
    # A print export bakes no texture, so it warns of none (its source's GLB export did bake one)
    assert "mostly transparent" not in ui.page.inner_text("#td-status") + ui.page.inner_text("#td-info")
    # At a phone's, a small window's and a desktop's width, the badge and the download row are on screen, whole, and
    # say the same
    button, choice = ui.page.locator("#td-download"), ui.page.locator("#td-dl-format")
    for width in (390, 800, 1400):
        ui.page.set_viewport_size({"width": width, "height": 900})
        for element in (badge, choice, button):
            element.scroll_into_view_if_needed()
            box = element.bounding_box()
            assert element.is_visible() and box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (width, box)
        assert ui.page.evaluate("() => document.documentElement.scrollWidth") <= width, width
        assert badge.inner_text() == said and badge.evaluate("e => getComputedStyle(e).backgroundColor") == (
            "rgb(220, 252, 231)" if facts else "rgb(254, 226, 226)")
        assert button.inner_text().strip() == "Download STL" and button.is_enabled()
        assert ui.offered() == ["stl", "3mf", "mp4"]
        if width == 390:
            ui.shot("08-export-print-390.png")
    ui.check_clean()


def test_an_export_made_again_after_a_restart_gives_the_same_glb(browser, tiny_pipeline_dir, outputs, tmp_path_factory):
    # The app started again over the same outputs folder (a new process that never held a result): the export of
    # the test above (GLB + STL, 5 000 faces, 1.8 m, pivot bottom) picked in the History, its settings put back with
    # "Use these settings", then "Export again": the same GLB, byte for byte, from its source's result.npz.
    from desktop.jobs.folder import list_history

    def settings(d):
        return json.loads((d / "settings.json").read_text())
    first = next(d for d in sorted(job_dirs(outputs)) if (d / "model.glb").is_file() and (d / "model.stl").is_file()
                 and settings(d)["kind"] == "export" and settings(d)["settings"]["destination"] == "none")
    with running_app(tiny_pipeline_dir, outputs, tmp_path_factory) as url:
        ui = Page(browser, url)
        try:
            names = [name for _, name in list_history(outputs)]          # the dropdown's order, newest first
            ui.page.get_by_role("tab", name="History").click()
            history = ui.page.locator("#td-history input")
            history.click()
            listbox = ui.page.locator(f"#{history.get_attribute('aria-controls')}")
            listbox.locator(f"[role=option][data-index='{names.index(first.name)}']").click()
            ui.wait_status(("history",), timeout=30)
            ui.open_settings()
            ui.page.click("#td-reuse")
            ui.page.wait_for_function("() => document.querySelector('#td-height input').value === '1.8'")
            ui.page.get_by_role("tab", name="History").click()      # Use these settings went to the job's own tab
            before, previous = set(job_dirs(outputs)), ui.status()
            ui.page.click("#td-export-again")
            state, text = ui.wait_finished_after(previous, outputs=outputs, before=before)
            assert state == "done", text
            (again,) = set(job_dirs(outputs)) - before
            assert (again / "model.glb").read_bytes() == (first / "model.glb").read_bytes()
            assert settings(again)["source_job"] == settings(first)["source_job"]
            assert "pipeline" not in json.loads((again / "timings.json").read_text())        # nothing sampled
            ui.check_clean()
        finally:
            ui.close()


# ------------------------------------------------------------------------------------------ in process

API_TINY = {"ss_steps": 2, "slat_steps": 2, "texture_size": 64, "bake_views": 4, "bake_resolution": 64,
            "video_frames": 8, "video_resolution": 64, "fill_holes": False}


def test_gradio_client_drives_jobs(server, outputs, tmp_path):
    """gradio_client (how Gradio apps are scripted) against the running app: its named endpoints
    /generate, /status and /cancel run a tiny job to its GLB, report it, refuse bad settings and cancel."""
    import trimesh
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/generate", "/status", "/cancel"}, api["named_endpoints"]
    assert api["unnamed_endpoints"] == {}                   # the page's own handlers stay private
    mug = handle_file(os.path.join(EXAMPLES, "mug.png"))

    before = set(job_dirs(outputs))
    call = client.submit(mug, {"seed": 7, "formats": ["glb", "ply"], **API_TINY}, api_name="/generate")
    info, glb, files = call.result(timeout=JOB_TIMEOUT)
    assert info["state"] == "done" and info["seed"] == 7 and info["settings"]["ss_steps"] == 2, info
    assert call.outputs()[0][0]["id"] == info["id"]          # the id came first, while it ran
    assert trimesh.load(glb, force="mesh").faces.shape[0] > 0
    assert {os.path.basename(f) for f in files} >= {"model.glb", "model.ply", "settings.json", "timings.json"}
    (folder,) = set(job_dirs(outputs)) - before
    assert info["out_dir"] == str(folder) and info["files"]["glb"] == "model.glb"
    status = client.predict(info["id"], api_name="/status")
    assert status["state"] == "done" and status["progress"]["fraction"] == 1.0

    for bad, words in [({"seed": True}, "settings.seed"), ({"ss_steps": 0}, "settings.ss_steps"),
                       ({"formats": []}, "choose at least one"), ({"colour": "red"}, "settings.colour"), ("fast", "object")]:
        with pytest.raises(AppError, match="invalid settings") as err:
            client.predict(mug, bad, api_name="/generate")
        assert words in str(err.value), (bad, str(err.value))
    with pytest.raises(AppError, match="no job 'nope'"):
        client.predict("nope", api_name="/status")

    # Cancel a long job once it samples.
    call = client.submit(mug, {**API_TINY, "ss_steps": 500, "slat_steps": 500, "formats": ["ply"]}, api_name="/generate")
    deadline = time.time() + JOB_TIMEOUT
    while not call.outputs() or client.predict(call.outputs()[0][0]["id"], api_name="/status")["progress"]["stage"] \
            not in ("sparse_structure", "slat"):
        assert time.time() < deadline and not call.done(), call.outputs()
        time.sleep(0.1)
    job_id = call.outputs()[0][0]["id"]
    cancelled = client.predict(job_id, api_name="/cancel")
    assert cancelled["id"] == job_id and cancelled["cancel_requested"] is True
    info, glb, files = call.result(timeout=JOB_TIMEOUT)
    assert info["state"] == "cancelled" and glb is None and files is None, info
    assert client.predict(job_id, api_name="/cancel")["cancel_requested"] is False      # already ended
    client.close()


def test_page_values_to_settings_and_presets():
    from desktop import ui
    from desktop.settings import GenerationSettings

    d = GenerationSettings()
    values = {k: getattr(d, k) for k in [*ui.PRESET_KNOBS, *ui.OTHER_KNOBS]}
    values["formats"] = list(d.formats)
    assert ui.settings_from_values(values, "balanced", d) == d.replace(preset="balanced")
    # Numbers arrive as JSON numbers (floats for whole values too); a changed knob makes the preset "custom".
    s = ui.settings_from_values({**values, "ss_steps": 3.0, "seed": 42.0, "randomize_seed": False}, "balanced", d)
    assert (s.ss_steps, s.seed, s.randomize_seed, s.preset) == (3, 42, False, "custom")
    assert isinstance(s.ss_steps, int)
    assert ui.settings_from_values({**values, "seed": None}, "balanced", d).randomize_seed   # empty seed box
    for change, message in [({"ss_steps": None}, "Shape steps (stage 1): enter a number"),
                            ({"ss_steps": 0}, "Shape steps (stage 1): 0 is out of range"),
                            ({"slat_steps": 2.5}, "Detail steps (stage 2): 2.5 is not a whole number"),
                            ({"texture_size": "big"}, "Texture size (pixels): 'big' is not a number"),
                            ({"formats": []}, "Output formats: tick at least one"),
                            ({"seed": None, "randomize_seed": False}, "Seed: enter a number")]:
        with pytest.raises(ValueError) as err:
            ui.settings_from_values({**values, **change}, "balanced", d)
        assert str(err.value).startswith(message), (change, str(err.value))

    # Presets: Low VRAM sets precision and offloading; the others keep the command line's choice.
    cli_defaults = GenerationSettings(precision="bf16", offload="none")
    low = ui.preset_values("low-vram", cli_defaults)
    assert (low["precision"], low["offload"]) == ("fp16", "model")
    fast = ui.preset_values("fast", cli_defaults)
    assert (fast["precision"], fast["offload"], fast["ss_steps"]) == ("bf16", "none", 8)
    assert ui.settings_from_values({**values, **fast}, "fast", cli_defaults).preset == "fast"
    assert set(ui.PRESET_CHOICES) == {("Fast", "fast"), ("Balanced", "balanced"), ("High", "high"),
                                      ("Low VRAM", "low-vram")}


def test_inputs_messages_status_and_history(tmp_path):
    import base64
    from types import SimpleNamespace

    from desktop import ui
    from desktop.jobs import Job, JobState, Progress
    from desktop.jobs import folder as job_folder
    from desktop.settings import GenerationSettings

    # Raw upload payloads -> jobs.
    up = {"path": "/tmp/x/a.png", "orig_name": "a.png", "url": "http://127.0.0.1/file=/tmp/x/a.png"}
    assert ui.collect_work("single", up, None, None) == [("a.png", ["/tmp/x/a.png"])]
    pasted = {"path": None, "url": "data:image/png;base64," + base64.b64encode(b"\x89PNG...").decode()}
    assert ui.collect_work("single", pasted, None, None) == [("pasted image", [b"\x89PNG..."])]
    gallery = [{"image": {"path": "/g/1.png", "orig_name": "1.png"}, "caption": None},
               {"image": {"path": "/g/2.png", "orig_name": "2.png"}, "caption": None}]
    assert ui.collect_work("multi", None, gallery, None) == [("1.png + 1 more view(s)", ["/g/1.png", "/g/2.png"])]
    assert ui.collect_work("batch", None, None, [up, {"path": "/b/c.jpg"}]) == [("a.png", ["/tmp/x/a.png"]),
                                                                              ("c.jpg", ["/b/c.jpg"])]
    for mode, args, message in [("single", (None, None, None), "Add an image first"),
                                ("multi", (None, gallery[:1], None), "at least two images"),
                                ("batch", (None, None, []), "Batch: add one or more")]:
        with pytest.raises(ValueError, match=message):
            ui.collect_work(mode, *args)

    # Failure messages in the app's words.
    job = Job(id="j" * 32, inputs=["/tmp/gradio/abc/photo.png"], settings=GenerationSettings())
    job.error_kind, job.error, job.device = "oom", "out of GPU memory: ...", "cuda:0"
    assert "Low VRAM preset" in ui.friendly_error(job)
    job.device = "cpu"
    assert "Fast preset" in ui.friendly_error(job)
    job.error_kind, job.error = "model", "could not load the model from /m: no pipeline.json"
    assert ui.friendly_error(job).startswith("Could not load the model") and "--model DIR" in ui.friendly_error(job)
    job.error_kind, job.error = "input", "bad input: /tmp/gradio/abc/photo.png is not an image file"
    job.state = JobState.FAILED
    state, text = ui.job_line(job, None)
    assert (state, text) == ("failed", "This image cannot be used: photo.png is not an image file. Use another image: "
                                       "a PNG, JPEG, WebP, BMP, TIFF or GIF of one object.")

    # The status box: one job (a line and a bar), several (a table).
    runner = SimpleNamespace(queue_position=lambda job_id: 1)
    running = Job(id="r" * 32, inputs=[], settings=GenerationSettings(), state=JobState.RUNNING)
    running.progress = Progress("slat", 6, 12, 0.5, 75.0, 30.0, "", measured=True)
    html = ui.status_html([("a.png", running)], runner)
    assert 'data-state="running"' in html and "Sampling details · step 6/12 · 50% · ETA 1:15" in html
    assert "<progress" in html
    queued = Job(id="q" * 32, inputs=[], settings=GenerationSettings())
    html = ui.status_html([("a.png", running), ("<b>.png", queued)], runner)
    assert "0 of 2 finished: 1 running, 1 waiting" in html and "Waiting in the queue (1 job(s) ahead)" in html
    # The whole batch's time left: the running job's 75 s (from measured stage times), then the waiting one at its
    # pace (30 + 75 s).
    assert "the whole batch: ETA 3:00" in html
    assert "&lt;b&gt;.png" in html                         # names are escaped

    # History: the job folders of the outputs folder, newest first, with their state.
    out = tmp_path / "outputs"
    for name, extra in [("20260101-100000-aaaaaaaa", "timings.json"), ("20260102-100000-bbbbbbbb", "error.json"),
                        ("20260103-100000-cccccccc", None)]:
        (out / name).mkdir(parents=True)
        (out / name / "settings.json").write_text(json.dumps({"seed": 5, "inputs": ["/x/cat.png"],
                                                             "settings": GenerationSettings().to_dict()}))
        if extra == "error.json":
            (out / name / extra).write_text(json.dumps({"state": "cancelled", "error": "cancelled"}))
        elif extra:
            (out / name / extra).write_text("{}")
    (out / ".hidden").mkdir()
    assert job_folder.list_history(out) == [("2026-01-03 10:00:00 · cat.png · incomplete", "20260103-100000-cccccccc"),
                                    ("2026-01-02 10:00:00 · cat.png · cancelled", "20260102-100000-bbbbbbbb"),
                                    ("2026-01-01 10:00:00 · cat.png · done", "20260101-100000-aaaaaaaa")]
    app = ui.TrellisApp(SimpleNamespace(outputs_dir=out, list=lambda: []))
    try:
        assert app._job_folder("20260101-100000-aaaaaaaa").path == out / "20260101-100000-aaaaaaaa"
        for bad in ("../outputs", "/etc", ".hidden", "", None, "nope"):
            assert app._job_folder(bad) is None, bad
    finally:
        app.close()

    # A local model folder that cannot work is named at start; a hub repo id is left to the first job.
    assert "--model" in ui.model_problem(str(tmp_path / "no-model"))
    assert ui.model_problem("microsoft/TRELLIS-image-large") is None
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "pipeline.json").write_text("{}")
    assert ui.model_problem(str(tmp_path / "m")) is None


@pytest.mark.filterwarnings("ignore:a.png. Could not load the model")      # gr.Warning outside a page
def test_missing_model_is_a_message_and_the_app_goes_on(tmp_path):
    """The generate handler itself (no browser): a missing model fails the job with the fix, the other
    jobs of the batch are not tried, and the page is told (banner at start, status after)."""
    from types import SimpleNamespace

    from desktop import ui
    from desktop.jobs import JobRunner
    from desktop.settings import GenerationSettings
    from tests.helpers.images import rgba_blob

    missing = str(tmp_path / "no-model")
    runner = JobRunner(missing, tmp_path / "out", device="cpu")
    app = ui.TrellisApp(runner, model_problem=ui.model_problem(missing))
    try:
        demo = app.build()
        config = json.dumps(demo.get_config_file(), default=str)
        assert "Model not found." in config and "pipeline.json" in config          # the banner
        d = GenerationSettings()
        values = {"mode": "batch", "single": None, "multi": None, "preset": "fast",
                  "batch": [{"path": rgba_blob(tmp_path / f"{n}.png"), "orig_name": f"{n}.png"} for n in "abc"],
                  **{k: getattr(d, k) for k in [*ui.PRESET_KNOBS, *ui.OTHER_KNOBS]}, "formats": ["ply"]}
        data = {comp: values.get(name) for name, comp in app._named.items()}
        updates = list(app.generate(data, SimpleNamespace(session_hash="s1")))
        final = updates[-1][0]
        assert 'data-state="failed"' in final and "could not load the model" in final.lower()
        assert "The model folder is missing or incomplete. Restart the app with --model" in final
        # the handler cancels the rest once it sees the failure; on a loaded machine the worker may already have
        # started the next job (which fails the same way in milliseconds), never the last one
        rows = re.findall(r'<tr data-state="(\w+)"[^>]*><td>(?:<button[^>]*>)?(\w)\.png', final)
        assert rows[0] == ("failed", "a") and rows[-1] == ("cancelled", "c") and len(rows) == 3, rows
        assert {state for state, _ in rows} <= {"failed", "cancelled"}
        # each failed job's record became its folder (kept, to run again); the cancelled ones left nothing
        kept = sorted((tmp_path / "out").iterdir())
        assert len(kept) == sum(state == "failed" for state, _ in rows) and app._active == {}
        assert all(json.loads((k / "error.json").read_text())["kind"] == "model" for k in kept)
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
        app.close()
