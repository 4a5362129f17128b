"""The page's Export again on a job stopped after its sampling (headless Chromium, the app on the tiny pipeline): a
job cancelled while its preview renders keeps its whole result.npz; picked in the History, its status says that
Export again makes its files without sampling, and Export again does."""
import json
import time
from pathlib import Path

import pytest

from desktop.jobs import JobRunner, JobState
from desktop.settings import GenerationSettings
from tests.helpers.gradio_app import Page, job_dirs
from tests.helpers.images import rgba_blob

TIMEOUT = 180


@pytest.fixture(scope="module")
def outputs(tiny_pipeline_dir, tmp_path_factory):
    """An outputs folder holding one job cancelled while its preview rendered, after its sampling (its folder)."""
    tmp = tmp_path_factory.mktemp("export_stopped")
    out = tmp / "out"
    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    try:
        job = runner.submit([rgba_blob(tmp / "blob.png")], GenerationSettings(
            seed=6, randomize_seed=False, ss_steps=2, slat_steps=2, formats=("ply", "mp4"), video_frames=3000, texture_size=64,
            bake_views=4, bake_resolution=64, fill_holes=False))
        deadline = time.time() + TIMEOUT
        while not (job.progress.stage in ("video", "encode") and job.out_dir
                   and (Path(job.out_dir) / "result.npz").is_file()):
            assert job.state in (JobState.QUEUED, JobState.RUNNING) and time.time() < deadline, job.error
            time.sleep(0.05)
        runner.cancel(job.id)
        assert job.wait(TIMEOUT) and job.state == JobState.CANCELLED, job.state
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)
    folder = Path(job.out_dir)
    assert (folder / "result.npz").is_file() and not (folder / "preview.mp4").exists()
    return out


def test_export_again_makes_the_files_of_a_job_stopped_after_its_sampling(app, outputs):
    (stopped,) = job_dirs(outputs)
    ui: Page = app()
    ui.page.get_by_role("tab", name="History").click()
    history = ui.page.locator("#td-history input")
    history.click()
    listbox = ui.page.locator(f"#{history.get_attribute('aria-controls')}")
    listbox.locator("[role=option][data-index='0']").click()
    state, text = ui.wait_status(("history",), timeout=30)
    assert "(cancelled)" in text and "Its sampling finished" in text and "Export again makes its files" in text, text
    ui.open_settings()
    ui.formats(["ply"])
    ui.page.get_by_role("tab", name="History").click()
    before, previous = set(job_dirs(outputs)), ui.status()
    ui.page.click("#td-export-again")
    state, text = ui.wait_finished_after(previous, timeout=TIMEOUT, outputs=outputs, before=before)
    assert state == "done", text
    (again,) = set(job_dirs(outputs)) - before
    record, source = (json.loads((d / "settings.json").read_text()) for d in (again, stopped))
    assert record["kind"] == "export" and record["source_job"] == source["job_id"]
    assert record["settings"]["seed"] == source["settings"]["seed"]          # the stopped job's sampling
    assert (again / "model.ply").is_file()
    assert "pipeline" not in json.loads((again / "timings.json").read_text())        # nothing sampled
    ui.check_clean()
