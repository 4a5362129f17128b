"""The New look tab's Model choice in the browser: an app on the tiny random-weight TRELLIS v1 pipeline with the tiny
TRELLIS.2 installed in its models folder (served in this process as `python -m desktop ui` serves it), driven by
Playwright in headless Chromium. The tab offers TRELLIS v1's colour (chosen) and TRELLIS.2's PBR materials; a look
from a photo with TRELLIS.2 picked ends with a job of that family whose GLB keeps the dropped model's positions,
faces and UVs and has a metallic-roughness texture (a 32^3 grid: $TRELLIS_DESKTOP_LOOK_RESOLUTION)."""
import json

import numpy as np
import pytest
import trimesh

from desktop.jobs.trellis2_looks import RESOLUTION_ENV
from tests.helpers.gltf import glb_json
from tests.helpers.gradio_app import Page, job_dirs
from tests.helpers.images import rgba_blob
from tests.helpers.looks import glb_attribute, uv_sphere
from tests.helpers.model_folders import install_trellis2
from tests.helpers.servers import free_port

JOB_TIMEOUT = 240


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path_factory):
    """(the page's URL, the outputs folder): a TRELLIS v1 app with TRELLIS.2 installed in its models folder."""
    from desktop.jobs import JobRunner
    from desktop.ui import TrellisApp
    from desktop.ui.server import launch

    outputs = tmp_path_factory.mktemp("ui_looks_outputs")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path_factory.mktemp("models"), tiny_trellis2_dir)))
        env.setenv(RESOLUTION_ENV, "32")
        runner = JobRunner(tiny_pipeline_dir, outputs, device="cpu")
        app = TrellisApp(runner)
        demo = app.build()
        try:
            yield launch(demo, runner, "127.0.0.1", free_port()), outputs
        finally:
            runner.shutdown(cancel=True, wait=True, timeout=60)
            demo.close()
            app.close()


def test_the_new_look_tab_makes_a_trellis2_pbr_look_on_the_dropped_model(browser, served, tmp_path):
    url, outputs = served
    v, f, uv = uv_sphere()
    glb = tmp_path / "sphere.glb"
    trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv), process=False).export(glb)
    ui = Page(browser, url)
    try:
        ui.page.get_by_role("tab", name="New look").click()
        ui.page.locator("#td-mesh input[type=file]").set_input_files(str(glb))
        ui.page.wait_for_selector(f"#td-mesh-stats .td-mesh-stats[data-triangles='{len(f)}']", timeout=30000)
        ui.page.locator("#td-look-image input[type=file]").set_input_files(rgba_blob(tmp_path / "look.png"))
        assert ui.page.locator("#td-look-model input[value=trellis]").is_checked()
        assert "PBR materials" in ui.page.inner_text("#td-look-model")
        ui.page.locator("#td-look-model label", has_text="TRELLIS.2").click()
        ui.page.wait_for_function("() => document.querySelector('#td-look-model input[value=trellis2]').checked")
        ui.open_settings()
        for elem_id, value in (("td-slat_steps", 1), ("td-texture_size", 64)):
            ui.set_number(elem_id, value)
        ui.formats(["glb"])
        before, previous = set(job_dirs(outputs)), ui.status()
        ui.generate()
        state, text = ui.wait_finished_after(previous, timeout=JOB_TIMEOUT, outputs=outputs, before=before)
        assert state == "done", text
        (folder,) = set(job_dirs(outputs)) - before
        assert json.loads((folder / "settings.json").read_text())["family"] == "trellis2"
        path = folder / "model.glb"
        assert np.array_equal(glb_attribute(path, "POSITION"), v.astype(np.float32))
        assert np.array_equal(glb_attribute(path, "indices").reshape(-1, 3).astype(np.int64), f)
        flipped = np.stack([uv[:, 0], 1 - uv[:, 1]], -1).astype(np.float32)        # glTF's v, as written
        assert np.array_equal(glb_attribute(path, "TEXCOORD_0"), flipped)
        assert "metallicRoughnessTexture" in glb_json(path)["materials"][0]["pbrMetallicRoughness"]
        ui.check_clean()
    finally:
        ui.close()
