"""The /generate example on the page's "Use via API": our own example image and real settings, and the
Python snippet the page shows runs as it stands against the app (a real `gradio_main.py` on the tiny
random-weight pipeline, CPU; the server of tests/desktop/ui/test_ui.py)."""
import contextlib
import io
import json
import os
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.gradio_app import EXAMPLES

pytestmark = pytest.mark.slow


def api_info(url) -> dict:
    """The JSON the "Use via API" page reads, with its code snippets."""
    with urllib.request.urlopen(url.rstrip("/") + "/gradio_api/info", timeout=30) as r:
        return json.loads(r.read())


def test_use_via_api_example_is_ours_and_runs(server, outputs):
    import trimesh
    from gradio_client import Client

    from desktop.ui import TrellisApp
    from desktop.ui.endpoints import EXAMPLE_SETTINGS

    generate = api_info(server)["named_endpoints"]["/generate"]
    image, settings = generate["parameters"]
    assert (image["parameter_name"], settings["parameter_name"]) == ("image", "settings")
    assert not image["parameter_has_default"] and not settings["parameter_has_default"]   # both still required

    # the image: one of our example images, a picture the app can read
    example = image["example_input"]
    assert Path(example["path"]).parent == Path(EXAMPLES) and example["url"] == example["path"], example
    assert example["meta"] == {"_type": "gradio.FileData"} and example["orig_name"] == os.path.basename(example["path"])
    with Image.open(example["path"]) as picture:
        assert picture.format == "PNG" and min(picture.size) >= 256
    # the settings: a real dict that the endpoint's own check accepts
    assert settings["example_input"] == EXAMPLE_SETTINGS == {"preset": "fast", "seed": 1, "formats": ["glb"]}
    app = TrellisApp(None)
    try:
        checked = app.api_settings(settings["example_input"])
    finally:
        app.close()
    assert checked.preset == "fast" and checked.seed == 1 and list(checked.formats) == ["glb"]

    # gradio_client reads the same examples
    client = Client(server, verbose=False)
    try:
        seen = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    finally:
        client.close()
    assert [p["example_input"] for p in seen] == [example, EXAMPLE_SETTINGS]

    # the page's Python snippet, run as it is
    snippet = generate["code_snippets"]["python"]
    assert f"handle_file('{example['path']}')" in snippet and json.dumps(EXAMPLE_SETTINGS) in snippet, snippet
    assert "sample_file.pdf" not in snippet and "foo" not in snippet
    scope = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(snippet, "use_via_api_snippet", "exec"), scope)        # noqa: S102 (our own page's code)
    info, glb, files = scope["result"]
    scope["client"].close()
    assert info["state"] == "done" and info["seed"] == 1 and info["settings"]["formats"] == ["glb"], info
    assert info["files"]["glb"] == "model.glb" and printed.getvalue().strip()
    assert trimesh.load(glb, force="mesh").faces.shape[0] > 0
    assert {os.path.basename(f) for f in files} >= {"model.glb", "settings.json", "timings.json"}
    assert os.path.isdir(info["out_dir"]) and os.path.dirname(info["out_dir"]) == str(outputs)
