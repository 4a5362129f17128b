"""The Topology control on the page (a real `gradio_main.py` on the tiny pipeline, driven in headless Chromium): it
sits in the output settings, and a job run with Quads writes an OBJ of quads, said in its export.json. Geometry
only, as the REST, MCP and batch jobs of tests/desktop/test_topology_surfaces.py: the tiny v1 mesh's many small UV
charts would cut a good share of the quads into triangle pairs in a textured file."""
import json

import pytest

from tests.helpers.gradio_app import FINISHED, ROUND_TRIP_MS, job_dirs
from tests.helpers.images import rgba_blob

QUADS = 400          # quads asked of the tiny v1 mesh (seed 1): fewer leave too little of its thin pieces


@pytest.mark.slow
def test_the_topology_control_makes_an_obj_of_quads(app, outputs, tmp_path):
    ui = app()
    ui.open_settings()
    control = ui.page.locator("#td-out-settings #td-topology")
    assert control.is_visible()
    assert [t.strip() for t in control.locator("label").all_inner_texts()] == ["Triangles",
                                                                              "Quads (for rigging, sculpting)"]
    assert control.locator("input[value=triangles]").is_checked()                # the default
    ui.upload(rgba_blob(tmp_path / "blob.png"))
    ui.wait_status(("ready",), timeout=30)
    ui.tiny()
    ui.page.locator("#td-seed input").fill("1")
    ui.page.wait_for_function("() => !document.querySelector('#td-randomize input').checked", timeout=ROUND_TRIP_MS)
    ui.formats({"obj"})
    control.locator("label", has_text="Quads").click()
    box = ui.page.locator("#td-target_faces input")
    box.fill(str(QUADS))
    box.press("Enter")
    ui.page.locator("#td-geometry_only input[type=checkbox]").check()
    before = set(job_dirs(outputs))
    ui.generate()
    state, text = ui.wait_status(FINISHED)
    assert state == "done", text
    (folder,) = set(job_dirs(outputs)) - before
    settings = json.loads((folder / "settings.json").read_text())["settings"]
    assert (settings["topology"], settings["target_faces"], settings["geometry_only"]) == ("quads", QUADS, True)
    sizes = [len(line.split()) - 1 for line in (folder / "model.obj").read_text().splitlines() if line.startswith("f ")]
    quads = sum(n == 4 for n in sizes)
    assert sizes and quads >= 0.95 * len(sizes), (quads, len(sizes))
    report = json.loads((folder / "export.json").read_text())["quads"]
    assert report["faces_asked"] == QUADS and report["faces_made"] == len(sizes) and report["quad_share"] >= 0.95
    assert ui.offered()[0] == "obj"
    ui.check_clean()
