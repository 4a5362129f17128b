"""TRELLIS.2 in the browser app: the page of an app started on the tiny random-weight TRELLIS v1 pipeline, with the
tiny TRELLIS.2 installed in its models folder (tests/helpers/model_folders.py), served from this process as `python
-m desktop ui` serves it (desktop.ui.server.launch) with its model loading in the background as the app's warm-up
does, driven by Playwright in headless Chromium (this folder's conftest.py).

The Model choice says TRELLIS v1, TRELLIS.2 open beside it; picking TRELLIS.2 opens its pipeline type and the line of
each type's expected time (folded), and greys what TRELLIS.2 does not use with its reason, every format offered; a job from the
page then runs TRELLIS.2 (its pipeline loaded in place of v1's, the header says so) and ends with a GLB whose material
has a metallic-roughness texture (read by trimesh and from the GLB's JSON), shown in the 3D viewer; picking TRELLIS v1
again opens its knobs; "Reuse this seed" brings the family and the pipeline type back with the seed; Export again says
it bakes PBR textures; gradio_client's /generate takes model_family and pipeline_type as REST does. (The choice greyed
with its install line where TRELLIS.2 is absent: test_ui_newcomer.py.)"""
import io
import json
import struct
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers.gradio_app import FINISHED, Page, job_dirs
from tests.helpers.model_folders import install_trellis2
from tests.helpers.servers import free_port

# Cheap on a CPU, as tests/desktop/jobs/test_trellis2_jobs.py runs it: one step per flow, the 512 type, a small
# texture, the tiny mesh kept whole, a seed whose tiny random-weight mesh unwraps into charts.
SEED, TARGET_FACES = 1022908287, 100000
JOB_TIMEOUT = 240


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("ui_trellis2_outputs")


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, tiny_trellis2_dir, outputs, tmp_path_factory):
    """(the page's URL, its app): a TRELLIS v1 app with TRELLIS.2 installed in its models folder."""
    from desktop.jobs import JobRunner
    from desktop.ui import TrellisApp
    from desktop.ui.server import launch

    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path_factory.mktemp("models"), tiny_trellis2_dir)))
        runner = JobRunner(tiny_pipeline_dir, outputs, device="cpu")
        runner.start_warmup()               # the model loads while the page opens, as in the app
        app = TrellisApp(runner)
        demo = app.build()
        try:
            yield launch(demo, runner, "127.0.0.1", free_port()), app
        finally:
            runner.shutdown(cancel=True, wait=True, timeout=60)
            demo.close()
            app.close()


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    path = tmp_path_factory.mktemp("trellis2_input") / "square.png"
    Image.fromarray(a, "RGBA").save(path)
    return str(path)


def glb_json(data: bytes) -> dict:
    assert data[:4] == b"glTF"
    n = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20:20 + n])


def disabled(ui, selector) -> bool:
    return ui.page.locator(selector).first.is_disabled()


def queued_through_gradio_client(client, image) -> dict:
    """A /generate call of gradio_client with model_family and pipeline_type, queued behind the page's running job
    and cancelled there: the job as it was accepted."""
    call = client.submit(image, {"model_family": "trellis2", "pipeline_type": "1024", "formats": ["glb"]},
                         api_name="/generate")
    deadline = time.monotonic() + 60
    while not call.outputs():
        assert time.monotonic() < deadline and not call.done(), call.status()
        time.sleep(0.05)
    job = call.outputs()[0][0]
    assert job["model_family"] == "trellis2", job                 # as REST's job says it
    client.predict(job["id"], api_name="/cancel")
    info, _, _ = call.result(timeout=120)
    assert info["state"] in FINISHED, info
    assert client.predict(job["id"], api_name="/status")["model_family"] == "trellis2"
    return job


def test_a_trellis2_job_from_a_v1_page_ends_with_a_pbr_glb(browser, served, outputs, square, tmp_path):
    import trimesh
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    server, app = served
    ui = Page(browser, server)
    try:
        # The Model choice: TRELLIS v1, TRELLIS.2 open beside it; picked, its pipeline type opens with each type's
        # expected time, and what it does not use is greyed, with why.
        assert ui.page.locator("#td-family input[value=trellis]").is_checked()
        assert not ui.page.locator("#td-family input[value=trellis2]").is_disabled()
        assert "TRELLIS v1" in ui.page.inner_text("#td-header")
        assert disabled(ui, "#td-pipeline_type input") and not ui.page.locator("#td-pipeline-costs").is_visible()
        ui.page.locator("#td-family label", has_text="TRELLIS.2").click()
        ui.page.wait_for_function("() => !document.querySelector('#td-pipeline_type input').disabled")
        ui.page.wait_for_selector("#td-pipeline-costs-box", state="visible")
        ui.open_settings()
        formats = ui.page.locator("#td-formats")
        assert "vertex colours" in formats.inner_text()
        ui.page.wait_for_function("() => !document.querySelector('#td-formats').innerText.includes('Gaussian splats')")
        assert "PLY (mesh with vertex colours)" in formats.locator("label").all_inner_texts()
        assert ui.page.locator("#td-formats input[name=glb]").is_checked()
        for kind in ("ply", "mp4"):           # offered for TRELLIS.2 too (tests/desktop/jobs: its files); unticked here
            box = formats.locator(f"input[name={kind}]")
            assert not box.is_disabled()
            if box.is_checked():
                box.click()
            ui.page.wait_for_function(f"() => !document.querySelector('#td-formats input[name={kind}]').checked")
        for name in ("bake_views", "ss_cfg"):
            ui.page.wait_for_function(f"() => document.querySelector('#td-{name} input').disabled")
        assert not disabled(ui, "#td-video_frames input")
        assert "TRELLIS.2 bakes its PBR textures" in ui.page.inner_text("#td-bake_views")

        # A job from the page; meanwhile gradio_client queues one with the family and the pipeline type.
        ui.upload(square)
        ui.wait_status(("ready",), timeout=30)
        for elem_id, value in (("td-ss_steps", 1), ("td-slat_steps", 1), ("td-texture_size", 64)):
            ui.set_number(elem_id, value)
        ui.page.locator("#td-target_faces input").fill(str(TARGET_FACES))
        ui.page.locator("#td-seed input").fill(str(SEED))
        ui.page.wait_for_function("() => !document.querySelector('#td-randomize input').checked")
        ui.choose("td-pipeline_type", "512 (fastest)")
        before = set(job_dirs(outputs))
        previous = ui.status()
        ui.generate()
        ui.wait_status(("running", "done"), timeout=JOB_TIMEOUT)
        client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
        accepted = queued_through_gradio_client(client, handle_file(square))
        assert accepted["settings"]["pipeline_type"] == "1024", accepted
        state, text = ui.wait_finished_after(previous, timeout=JOB_TIMEOUT, outputs=outputs, before=before)
        folder = next(d for d in set(job_dirs(outputs)) - before if (d / "input.png").is_file()
                      and json.loads((d / "settings.json").read_text())["settings"]["pipeline_type"] == "512")
        assert state == "done", (text, (folder / "error.json").read_text() if state == "failed" else "")
        record = json.loads((folder / "settings.json").read_text())
        assert record["family"] == "trellis2" and record["settings"]["formats"] == ["glb"] and record["seed"] == SEED
        data = (folder / "model.glb").read_bytes()
        pbr = glb_json(data)["materials"][0]["pbrMetallicRoughness"]
        assert {"baseColorTexture", "metallicRoughnessTexture"} <= set(pbr), pbr
        material = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").visual.material
        assert isinstance(material, trimesh.visual.material.PBRMaterial)
        assert material.metallicRoughnessTexture is not None and material.baseColorTexture is not None
        # Shown in the 3D viewer, and said in the result's line.
        ui.page.wait_for_selector("#td-model3d canvas", timeout=30000)
        assert "Model: TRELLIS.2 · 512" in ui.page.inner_text("#td-info")
        assert ui.offered() == ["glb"]
        assert "(loaded now: TRELLIS.2, for the last job)" in app.header_text()      # loaded in place of v1's
        # the pipeline types' costs (folded) say this job's own time once it has ended, without a reload
        ui.page.locator("#td-pipeline-costs-box .label-wrap").first.click()
        ui.page.wait_for_function("() => document.querySelector('#td-pipeline-costs')?.textContent"
                                  ".includes('your last job of this type')", timeout=30000)

        # Picking TRELLIS v1 again opens its knobs and greys the pipeline type, its costs line gone.
        ui.choose("td-pipeline_type", "1024 cascade (default)")
        ui.page.locator("#td-family label", has_text="TRELLIS v1").click()
        ui.page.wait_for_function("() => !document.querySelector('#td-bake_views input').disabled")
        assert disabled(ui, "#td-pipeline_type input")
        ui.page.wait_for_selector("#td-pipeline-costs-box", state="hidden")

        # "Reuse this seed": the seed, the family and the pipeline type of the result shown.
        ui.page.locator("#td-seed input").fill("7")
        ui.page.click("#td-reuse-seed")
        ui.page.wait_for_function(f"() => document.querySelector('#td-seed input').value === '{SEED}'")
        ui.page.wait_for_function("() => document.querySelector('#td-family input[value=trellis2]').checked")
        ui.page.wait_for_function("() => document.querySelector('#td-bake_views input').disabled")
        ui.page.wait_for_function("() => document.querySelector('#td-pipeline_type input').value === '512 (fastest)'")
        ui.shot("trellis2-done.png")
        # Export again (History) says what a TRELLIS.2 job's files are made of.
        ui.page.get_by_role("tab", name="History").click()
        ui.page.wait_for_function("() => document.querySelector('#td-export-plan')?.innerText.includes('PBR')")
        assert "64² PNG PBR textures (colour, metallic-roughness)" in ui.page.inner_text("#td-export-plan")
        ui.check_clean()

        # gradio_client refuses a pipeline type TRELLIS.2 does not have, before any job.
        with pytest.raises(AppError) as err:
            client.predict(handle_file(square), {"model_family": "trellis2", "pipeline_type": "2048"},
                           api_name="/generate")
        assert "settings.pipeline_type" in str(err.value), str(err.value)
        client.close()
    finally:
        ui.close()
