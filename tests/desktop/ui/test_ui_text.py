"""The browser app's Text and New look tabs end to end: a real `gradio_main.py` on the tiny text pipeline
(`python -m trellis.tools.tiny_pipeline --text`) and the tiny image pipeline beside it, driven by Playwright in
headless Chromium as tests/desktop/ui/test_ui.py does. Bad inputs (an empty prompt, a 10 000-character prompt, a JPEG
named .glb, a model claiming 10 M triangles) are shown in the page and leave earlier outputs alone."""
import io
import json
import os
import re

import pytest

from tests.helpers.gradio_app import FINISHED, Page, job_dirs
from tests.helpers.images import jpeg_bytes
from tests.helpers.repo import ROOT_DIR as ROOT
from tests.helpers.text_inputs import LONG_PROMPT, ply_claiming

pytestmark = pytest.mark.filterwarnings("ignore::trellis.pipelines.trellis_text_to_3d.PromptTruncatedWarning")


def picked_in_history(ui, name, back_to):
    """The History tab's search box names the job just made (it lives in that tab); then `back_to`'s tab again."""
    ui.page.get_by_role("tab", name="History").click()
    ui.page.wait_for_function("(n) => { const i = document.querySelector('#td-history input');"
                              " return i && i.value.includes(n); }", arg=name, timeout=30000)
    ui.page.get_by_role("tab", name=back_to).click()


@pytest.mark.slow
def test_text_and_new_look_tabs(browser, text_server, outputs, tmp_path):
    import trimesh

    ui = Page(browser, text_server)
    try:
        ui.tiny()
        ui.formats({"glb", "mp4"})
        ui.page.get_by_role("tab", name="Text").click()
        ui.page.locator("#td-prompt textarea").wait_for()
        # An empty prompt: said in the page, no job, no folder.
        ui.generate()
        state, text = ui.wait_status(("error",), timeout=30)
        assert "The prompt is empty" in text                        # the headline: a sentence
        assert job_dirs(outputs) == []

        # A prompt: progress, preview video, 3D view, downloads, history.
        ui.page.locator("#td-prompt textarea").fill("a red wooden chair")
        # Started with --text-model: the size choice is fixed (test_ui_expectations.py), and recorded as shown.
        assert ui.page.locator("#td-text_model_size input").first.is_disabled()
        size = ui.page.locator("#td-text_model_size input:checked").get_attribute("value")
        seen = []
        ui.generate()
        ui.wait_status(("queued", "running", "done"), seen=seen)         # the error above is replaced
        state, text = ui.wait_status(FINISHED, seen=seen)
        assert state == "done", seen
        assert any(s == "running" and "ETA" in t for s, t in seen), seen
        (first,) = job_dirs(outputs)
        record = json.loads((first / "settings.json").read_text())
        assert (record["kind"], record["prompt"], record["settings"]["text_model_size"]) == (
            "text", "a red wooden chair", size)
        assert "Prompt: a red wooden chair" in ui.page.inner_text("#td-info")
        ui.page.locator("#td-video video").wait_for(timeout=30000)
        ui.page.wait_for_selector("#td-model3d canvas", timeout=30000)
        _, data = ui.download("glb")
        assert trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").faces.shape[0] > 0
        ui.shot("10-text.png")
        picked_in_history(ui, '"a red wooden chair" · done', back_to="Text")
        first_files = {p: p.stat().st_mtime_ns for p in first.iterdir()}

        # A 10 000-character prompt: the job completes and the page says the prompt was cut.
        ui.formats({"ply"})
        ui.page.locator("#td-prompt textarea").fill(LONG_PROMPT)
        previous = ui.status()
        ui.generate()
        state, text = ui.wait_finished_after(previous)
        assert state == "done" and "Warning: The prompt is longer than the text model reads" in text, text
        assert ui.page.locator("[data-testid=toast-body]").count() == 0          # said once, in the status box

        # New look: a JPEG named .glb and a model claiming 10 M triangles are refused at upload and by Generate.
        ui.page.get_by_role("tab", name="New look").click()
        mesh_input = ui.page.locator("#td-mesh input[type=file]")
        fake = tmp_path / "photo.glb"
        fake.write_bytes(jpeg_bytes())
        mesh_input.set_input_files(str(fake))
        state, text = ui.wait_status(("error",), timeout=30)
        assert "This 3D model cannot be used: photo.glb is a JPEG image" in text, text
        ui.page.locator("#td-look-prompt textarea").fill("made of gold")
        ui.generate()
        state, text = ui.wait_status(("error",), timeout=30)
        assert "JPEG image" in text
        before = set(job_dirs(outputs))
        ui.page.locator("#td-mesh").get_by_label("Clear").first.click()
        scan = tmp_path / "scan.ply"
        scan.write_bytes(ply_claiming(10_000_000))
        ui.page.locator("#td-mesh input[type=file]").set_input_files(str(scan))
        # the box already shows the JPEG's error (same state): wait for this upload's own message
        ui.page.wait_for_selector("#td-status [data-state=error]:has-text('10,000,000 triangles')", timeout=30_000)
        state, text = ui.status()
        assert state == "error" and "10,000,000 triangles" in text, text
        assert set(job_dirs(outputs)) == before

        # A real model + a prompt: its new look.
        ui.page.locator("#td-mesh").get_by_label("Clear").first.click()
        rod = tmp_path / "rod.glb"
        trimesh.creation.cylinder(radius=0.02, height=1.0, sections=8).export(rod)
        ui.page.locator("#td-mesh input[type=file]").set_input_files(str(rod))
        ui.wait_status(("ready",), timeout=30)
        ui.generate()
        ui.wait_status(("queued", "running", "done"))
        state, text = ui.wait_status(FINISHED)
        assert state == "done", text
        (variant,) = set(job_dirs(outputs)) - before
        assert (variant / "input_mesh.glb").read_bytes() == rod.read_bytes()
        assert json.loads((variant / "settings.json").read_text())["prompt"] == "made of gold"
        ui.shot("11-new-look.png")
        picked_in_history(ui, 'rod.glb → "made of gold" · done', back_to="New look")

        # History: the text job's "Use these settings" brings back its tab, prompt, size and seed.
        ui.page.get_by_role("tab", name="History").click()
        history = ui.page.locator("#td-history input")
        history.click()
        listbox = ui.page.locator(f"#{history.get_attribute('aria-controls')}")
        listbox.get_by_role("option", name=re.compile(r'"a red wooden chair" · done')).click()
        ui.wait_status(("history",), timeout=30)
        ui.page.click("#td-reuse")
        ui.page.wait_for_function(f"() => document.querySelector('#td-seed input').value === '{record['seed']}'")
        ui.page.locator("#td-prompt textarea").wait_for(state="visible")
        assert ui.page.locator("#td-prompt textarea").input_value() == "a red wooden chair"
        assert ui.page.locator(f"#td-text_model_size input[value={size}]").is_checked()
        assert {p: p.stat().st_mtime_ns for p in first.iterdir()} == first_files     # earlier outputs untouched
        ui.check_clean()
    finally:
        ui.close()


def test_missing_text_model_is_a_message_and_the_app_goes_on(tmp_path, tiny_pipeline_dir):
    """A text model that cannot be found fails the job with the fix (--text-model) in the page's status box;
    the job is kept in a folder of its own (its prompt and settings, to run again), and the same runner then still
    makes an image job."""
    from desktop import ui
    from desktop.jobs import JobRequest, JobRunner
    from desktop.settings import GenerationSettings

    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu", text_model=str(tmp_path / "no-text-model"))
    try:
        settings = GenerationSettings(ss_steps=1, slat_steps=1, formats=("ply",))
        job = runner.submit_request(JobRequest(prompt="a chair", settings=settings))
        assert job.wait(60) and job.error_kind == "model", job.error
        box = ui.status_html([('"a chair"', job)], runner)
        assert 'data-state="failed"' in box and "could not load the text model" in box.lower(), box
        assert "The text model folder is missing" in box and "--text-model" in box
        assert json.loads(open(job.files["error"]).read())["kind"] == "model"     # its record became its folder
        photo = runner.submit([os.path.join(ROOT, "assets", "examples", "mug.png")], settings.replace(preprocess=False))
        assert photo.wait(60) and photo.state == "done", photo.error
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
