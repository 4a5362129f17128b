"""The 3D view of a Draco-compressed GLB (the Web destination's) in a browser that cannot reach the internet: a real
server over an outputs folder holding one such job, Debian's headless Chromium with every request that does not go
to this machine aborted and written down. Picked in the History tab, the job's model is drawn (the viewer's canvas
holds more than its background) and nothing was asked of a third party (Babylon.js would fetch its Draco decoder
from cdn.babylonjs.com for a compressed file: history.viewable_glb hands it a decoded copy)."""
import io
import json
import os
import struct
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import trimesh
from PIL import Image

from tests.helpers.gltf import glb_json
from tests.helpers.gradio_app import ROUND_TRIP_MS, SHOTS
from tests.helpers.page_jobs import app_in_process, finished_job
from tests.helpers.viewer_console import unexpected_errors
from trellis.export.assemble import glb_bytes
from trellis.export.formats.draco import EXTENSION, draco_glb
from trellis.export.formats.gltf import glb_mesh

JOB = "20260101-100000-d7ac0000"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An outputs folder with one finished Web-destination job: a red sphere as a Draco-compressed model.glb."""
    out = tmp_path_factory.mktemp("draco_offline_outputs")
    sphere = trimesh.creation.icosphere(subdivisions=3)
    uv = np.stack([sphere.vertices[:, 0] * 0.5 + 0.5, sphere.vertices[:, 1] * 0.5 + 0.5], axis=1)
    texture = np.zeros((16, 16, 3), np.uint8)
    texture[...] = (220, 30, 30)                          # far from any background the viewer clears to
    data = draco_glb(glb_bytes(glb_mesh(sphere.vertices, sphere.faces, uv, texture)))
    report = {"destination": "web", "triangles": len(sphere.faces), "vertices": len(sphere.vertices), "draco": True,
              "size_m": {"width": 2.0, "depth": 2.0, "height": 2.0}, "watertight": True,
              "files": {"glb": {"name": "model.glb", "bytes": len(data)}}}
    folder = finished_job(out, JOB, data, report, destination="web", draco=True, formats=["glb"])
    assert EXTENSION in glb_json(folder / "model.glb")["extensionsRequired"]
    return out


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, outputs):
    with app_in_process(tiny_pipeline_dir, outputs) as url:
        yield url


def drawn_share(png: bytes) -> float:
    """The share of a screenshot's pixels that differ clearly from its top-left corner's (the background)."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(a - a[0, 0]).max(axis=2) > 48).mean())


def test_a_draco_glb_is_drawn_offline_without_asking_a_third_party(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    tried, errors, glbs = [], [], []

    def offline(route):
        if urlparse(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:                             # the internet is not there: the attempt is kept, the request fails
            tried.append(route.request.url)
            route.abort("internetdisconnected")
    context.route("**/*", offline)
    try:
        page = context.new_page()
        # requests the route may not see (a worker's) are still written down when they leave
        page.on("request", lambda r: None if r.url.startswith(("data:", "blob:")) or urlparse(r.url).hostname
                in LOCAL_HOSTS else tried.append(r.url))
        page.on("request", lambda r: glbs.append(r.url) if urlparse(r.url).path.endswith(".glb") else None)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.goto(served)
        page.wait_for_selector("#td-generate")
        page.get_by_role("tab", name="History").click()
        page.locator("#td-history-gallery button.thumbnail-item").first.click()
        page.wait_for_function("() => document.querySelector('#td-info')?.innerText.includes('Draco')",
                               timeout=ROUND_TRIP_MS)
        canvas = page.locator("#td-model3d canvas")
        canvas.wait_for(timeout=30000)
        deadline, share = time.monotonic() + 60, 0.0
        while share < 0.02 and time.monotonic() < deadline:      # the viewer loads the file, then draws it
            page.wait_for_timeout(500)
            share = drawn_share(canvas.screenshot())
        os.makedirs(SHOTS, exist_ok=True)
        canvas.screenshot(path=os.path.join(SHOTS, "draco-offline-history.png"))
        assert share >= 0.02, f"the 3D view drew nothing ({share:.4f} of its pixels); errors: {errors}"
        # the file the viewer was handed is the decoded copy (through Gradio's cache), not the job's compressed one
        assert glbs, "the viewer fetched no GLB"
        for url in glbs:
            body = page.request.get(url).body()
            assert EXTENSION not in json.loads(body[20:20 + struct.unpack_from("<I", body, 12)[0]]).get(
                "extensionsUsed", []), url
        page.wait_for_timeout(1000)       # a decoder fetched late would still be seen
        assert tried == [], f"the page asked the internet for: {tried}"
        assert unexpected_errors(errors) == [], errors
    finally:
        context.close()
