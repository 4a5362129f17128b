"""three.js renders the TRELLIS.2 GLB the app makes: the real job on the tiny TRELLIS.2 pipeline writes the GLB,
a local HTTP server gives headless Chromium tests/js/threejs_view.html with three.js (tests/js/node_modules/three,
`npm ci --prefix tests/js`), and the page's GLTFLoader reads the GLB into a MeshStandardMaterial with its base
colour, metallic-roughness and normal maps, and a WebGL render (SwiftShader) draws it."""
import functools
import http.server
import os
import threading

import numpy as np
import pytest
from PIL import Image
from tests.helpers.gradio_app import CHROMIUM, CHROMIUM_ARGS, SHOTS
from tests.helpers.repo import JS_DIR

from desktop import cli

THREE = JS_DIR / "node_modules" / "three"
# The shared browser arguments turn the GPU process off; WebGL here needs it, on SwiftShader where no GPU is.
WEBGL_ARGS = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + ["--use-angle=swiftshader",
                                                                    "--enable-unsafe-swiftshader"]
# As tests/desktop/jobs/test_trellis2_jobs.py makes its job, GLB only: one step per flow, the 512 type, a small
# texture, a seed whose tiny random-weight mesh unwraps into charts.
CHEAP = ["--device", "cpu", "--seed", "1022908287", "--steps", "1", "--pipeline-type", "512", "--texture-size", "64",
         "--target-faces", "100000", "-q"]


@pytest.fixture(scope="module")
def glb(tiny_trellis2_dir, tmp_path_factory):
    """The model.glb of one TRELLIS.2 job run by `python -m desktop generate` (in-process), with a normal map."""
    tmp = tmp_path_factory.mktemp("trellis2_threejs")
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    Image.fromarray(a, "RGBA").save(tmp / "in.png")
    code = cli.main([str(tmp / "in.png"), "--model", tiny_trellis2_dir, "-o", str(tmp / "out"), "--formats", "glb",
                     "--normal-map", *CHEAP])
    assert code == 0
    (folder,) = (tmp / "out").iterdir()
    return folder / "model.glb"


@pytest.fixture(scope="module")
def site(glb):
    """http://127.0.0.1:PORT serving tests/js (the page and three.js) and the job's GLB as /model.glb."""
    if not (THREE / "build" / "three.module.js").is_file():
        pytest.fail("three.js is not installed: install Node.js, then run `npm ci --prefix tests/js` "
                    "(./run.sh test does this when npm is on PATH)")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            return str(glb) if path.split("?")[0] == "/model.glb" else super().translate_path(path)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(JS_DIR)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with WebGL (the shared `headless_chromium` turns the GPU process off)."""
    if CHROMIUM is None:
        pytest.fail("no Chromium-family browser found: on Debian/Ubuntu `apt-get install chromium` (./run.sh test "
                    "does so when run as root), or set TRELLIS_TEST_BROWSER to a Chrome or Edge executable.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=WEBGL_ARGS)
        yield b
        b.close()


def test_threejs_loads_the_trellis2_glb_into_a_pbr_material_and_renders_it(glb, site, browser):
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{site}/threejs_view.html?glb=/model.glb")
        page.wait_for_function("window.viewed !== undefined", timeout=60000)
        report = page.evaluate("() => window.viewed")
        if "render" in report:
            os.makedirs(SHOTS, exist_ok=True)
            page.locator("#view").screenshot(path=os.path.join(SHOTS, "trellis2_threejs.png"))
    finally:
        page.close()
    assert "error" not in report, report.get("error")
    assert not errors, errors
    (mesh,) = report["meshes"]
    assert mesh["standard"] and mesh["material"] in ("MeshStandardMaterial", "MeshPhysicalMaterial")
    maps = mesh["maps"]
    assert all(maps[k] and maps[k]["width"] > 0 for k in ("map", "metalnessMap", "roughnessMap", "normalMap")), maps
    assert maps["map"]["colorSpace"] == "srgb" and maps["normalMap"]["colorSpace"] != "srgb"
    assert mesh["sharedMetalRough"]                # glTF packs both into one texture (G roughness, B metalness)
    assert {"position", "normal", "uv", "tangent"} <= set(mesh["attributes"]) and mesh["tangentItemSize"] == 4
    assert mesh["vertices"] > 0
    if "render" not in report:
        pytest.skip(f"three.js parsed the GLB, but no WebGL render: {report['webgl']}")
    render = report["render"]
    assert render["glError"] == 0, render
    whole, close = render["whole"], render["closeUp"]
    assert whole["changed"] > 0 and whole["colours"] > 1, render       # framed: its small pieces, shaded apart
    assert close["changed"] > 0.05 * render["pixels"], render          # its largest face, close up, fills the view
