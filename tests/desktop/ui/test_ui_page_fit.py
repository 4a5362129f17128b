"""A newcomer's page, in Chromium at a phone's, a small window's and two laptops' widths (390, 800, 1366, 1400 px):
the app on the tiny random-weight TRELLIS v1 pipeline with the tiny TRELLIS.2 installed in its models folder, served
from this process as `python -m desktop ui` serves it (as test_ui_trellis2.py does), driven by Playwright.

- Generate is in view without scrolling at 1366x768 and 1400x1000 with either model picked, an example loaded;
- the Model choice shows on the image tabs only (Single image, Multiple views, Batch), not on Text, New look or
  History (prompts and new looks run their own models);
- History cards name the model and pipeline type that made each job, and picking one sets the Model choice;
- while a new job runs, the result shown is marked as the previous job's (its labels and line), until the new one's
  replaces it.
Screenshots of each in test-artifacts/ui/page-fit-*.png."""
import numpy as np
import pytest
from PIL import Image

from tests.helpers.gradio_app import FINISHED, JOB_TIMEOUT, Page, job_dirs
from tests.helpers.model_folders import install_trellis2
from tests.helpers.servers import free_port

WIDTHS = (390, 800, 1366, 1400)
# The two laptop windows Generate must fit in without scrolling.
WINDOWS = ((1366, 768), (1400, 1000))
IMAGE_TABS = ("Single image", "Multiple views", "Batch")
OTHER_TABS = ("Text", "New look", "History")
# A TRELLIS.2 job cheap on a CPU, as test_ui_trellis2.py runs it.
T2_SEED, T2_FACES = 1022908287, 100000
SETTLED = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("ui_page_fit_outputs")


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, tiny_trellis2_dir, outputs, tmp_path_factory):
    """(the page's URL, its runner): a TRELLIS v1 app with TRELLIS.2 installed in its models folder."""
    from desktop.jobs import JobRunner
    from desktop.ui import TrellisApp
    from desktop.ui.server import launch

    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path_factory.mktemp("models"), tiny_trellis2_dir)))
        runner = JobRunner(tiny_pipeline_dir, outputs, device="cpu")
        app = TrellisApp(runner)
        demo = app.build()
        try:
            yield launch(demo, runner, "127.0.0.1", free_port()), runner
        finally:
            runner.shutdown(cancel=True, wait=True, timeout=60)
            demo.close()
            app.close()


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    path = tmp_path_factory.mktemp("fit_input") / "square.png"
    Image.fromarray(a, "RGBA").save(path)
    return str(path)


def shots(ui, name: str, height: int = 1000) -> None:
    for width in WIDTHS:
        ui.page.set_viewport_size({"width": width, "height": height})
        ui.page.evaluate(SETTLED)
        ui.shot(f"page-fit-{name}-{width}.png")


def generate_in_view(ui, width: int, height: int) -> float:
    """The bottom of Generate at the page's top in a width x height window (checked to be on screen)."""
    ui.page.set_viewport_size({"width": width, "height": height})
    ui.page.evaluate("window.scrollTo(0, 0)")
    ui.page.evaluate(SETTLED)
    box = ui.page.locator("#td-generate").bounding_box()
    assert box is not None and ui.page.evaluate("window.scrollY") == 0
    return box["y"] + box["height"]


def test_generate_in_view_and_the_model_choice_where_it_applies(browser, served):
    url, _ = served
    ui = Page(browser, url)
    try:
        ui.page.locator("#td-tabs").get_by_text("Chair", exact=True).first.click()
        ui.wait_status(("ready",), timeout=30)
        for model, value in (("TRELLIS v1", "trellis"), ("TRELLIS.2", "trellis2")):
            ui.page.locator("#td-family label", has_text=model).click()
            ui.page.wait_for_function(f"() => document.querySelector('#td-family input[value={value}]').checked")
            for width, height in WINDOWS:
                bottom = generate_in_view(ui, width, height)
                assert bottom <= height, (model, width, height, bottom)
                ui.shot(f"page-fit-{value}-{width}x{height}.png")
            shots(ui, f"{value}-example")
        # the pipeline types' costs fold below the choice: Generate stays where it was
        ui.page.locator("#td-pipeline-costs-box .label-wrap").first.click()
        ui.page.wait_for_selector("#td-pipeline-costs", state="visible")
        assert generate_in_view(ui, 1366, 768) <= 768

        # The Model choice where it applies: the image tabs only.
        ui.page.set_viewport_size({"width": 1400, "height": 1000})
        for tab in (*OTHER_TABS, *IMAGE_TABS):
            ui.page.get_by_role("tab", name=tab).click()
            state = "visible" if tab in IMAGE_TABS else "hidden"
            ui.page.wait_for_selector("#td-family-row", state=state, timeout=30000)
            ui.page.wait_for_selector("#td-pipeline-costs-box", state=state, timeout=30000)
            if tab == "Text":
                shots(ui, "text-tab")
        ui.check_clean()
    finally:
        ui.close()


def test_history_names_the_model_a_pick_sets_it_and_a_new_job_marks_the_old_result(browser, served, square,
                                                                                     outputs):
    from desktop.jobs import JobState
    from desktop.settings import GenerationSettings

    url, runner = served
    tiny = GenerationSettings(seed=1, randomize_seed=False, ss_steps=2, slat_steps=2, texture_size=64, bake_views=4,
                              bake_resolution=64, video_frames=8, video_resolution=64, fill_holes=False)
    v1 = runner.submit([square], tiny)
    t2 = runner.submit([square], GenerationSettings(seed=T2_SEED, randomize_seed=False, pipeline_type="512",
                                                    ss_steps=1, slat_steps=1, texture_size=64, target_faces=T2_FACES,
                                                    formats=("glb",)), family="trellis2")
    for job in (v1, t2):
        assert job.wait(240) and job.state == JobState.DONE, (job.state, job.error)
    ui = Page(browser, url)
    try:
        ui.page.get_by_role("tab", name="History").click()
        gallery = ui.page.locator("#td-history-gallery")
        gallery.get_by_text("TRELLIS.2 · 512", exact=False).first.wait_for(timeout=30000)
        captions = [c.strip() for c in gallery.locator(".caption-label, figcaption, .caption").all_inner_texts()]
        assert len(captions) == 2 and captions[0].startswith("square.png · done · TRELLIS.2 · 512 · "), captions
        assert captions[1].startswith("square.png · done · TRELLIS v1 · balanced · "), captions
        shots(ui, "history-cards")
        # picking a card sets the Model choice to the family that made it (the Output settings then grey alike)
        # (hidden on this tab, the choice shows on the image tabs; what it greys shows here)
        ui.open_settings()
        for index, greyed in ((0, True), (1, False), (0, True)):
            gallery.locator("button.thumbnail-item").nth(index).click()
            ui.page.wait_for_function("(g) => document.querySelector('#td-bake_views input').disabled === g",
                                      arg=greyed, timeout=30000)
        ui.page.wait_for_function("() => document.querySelector('#td-info').innerText.includes('TRELLIS.2 · 512')")
        ui.page.get_by_role("tab", name="Single image").click()
        ui.page.wait_for_function("() => document.querySelector('#td-family input[value=trellis2]')?.checked",
                                  timeout=30000)

        # A result on the Single image tab, then a long job: the result shown is marked the previous job's.
        ui.page.locator("#td-family label", has_text="TRELLIS v1").click()
        ui.upload(square)
        ui.wait_status(("ready",), timeout=30)
        ui.tiny()
        before, previous = set(job_dirs(outputs)), ui.status()
        ui.generate()
        state, text = ui.wait_finished_after(previous, timeout=JOB_TIMEOUT, outputs=outputs, before=before)
        assert state == "done", text
        ui.page.locator("#td-video video").wait_for(timeout=30000)
        assert "previous" not in ui.page.inner_text("#td-video") + ui.page.inner_text("#td-info")
        ui.tiny(**{"td-video_frames": 480, "td-video_resolution": 128})
        ui.generate()
        ui.page.wait_for_function("() => document.querySelector('#td-info').innerText.includes("
                                  "'the previous job\\'s result')", timeout=30000)
        for where in ("#td-video", "#td-model3d", "#td-dl-format"):
            assert "the previous job's" in ui.page.inner_text(where), (where, ui.page.inner_text(where))
        assert ui.status()[0] in ("running", "queued"), ui.status()
        shots(ui, "previous-result-marked")
        ui.page.click("#td-cancel")
        state, _ = ui.wait_status(FINISHED)
        assert state == "cancelled"
        ui.check_clean()
    finally:
        ui.close()
