"""StableProjectorz's 3D mode against a live server (uvicorn, the tiny random-weight pipeline on the CPU),
request by request: a Python port, written here, of what its open-source client does (Assets/_gm/Features/
3D Generate/: Gen3D_MGR, Gen3D_API, Gen3D_InputPanelBuilder_UI, Gen3D_InputElement_UI). It pings, reads
the supported operations and the panel, builds its inputs with that app's layout parser, sends their values
as Newtonsoft writes them (a C# float 12 as 12.0), polls /status every second, downloads the GLB, and
cancels with an empty form POST to /interrupt (tests/helpers/spz_client.py). Then the request shapes other clients
send."""
import json
import os
import select
import threading
import time

import httpx
import numpy as np
import pytest

from desktop.api import ServerDefaults, create_app
from desktop.jobs import JobRunner
from desktop.settings import MAX_SEED, RULES, GenerationSettings, number_range
from tests.helpers.images import rgba_blob
from tests.helpers.rest import FAST, TIMEOUT, b64
from tests.helpers.servers import LiveServer
from tests.helpers.spz_client import (OPERATION, STATUSES, Gen3D, check_glb, connect, gather, newtonsoft,
                                      read_answer, send_request)

# Settings the panel has no control for, which /generate takes under their own names: a small bake with no hole
# filling, so that a generation is seconds of CPU (what is checked is the requests and answers, not the texture).
SMALL_BAKE = dict(fill_holes=False, bake_views=4, bake_resolution=64)


# ------------------------------------------------------------------------------------------ servers

@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return b64(open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read())


def serve(runner):
    return LiveServer(create_app(runner, defaults=ServerDefaults(preset="fast")))


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    runner = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp("spz_out"), device="cpu")
    live = serve(runner)
    yield live
    live.close()
    runner.shutdown(cancel=True, wait=True, timeout=30)


def test_stable_projectorz_generates_and_cancels(server, image):
    inputs, text = connect(server.url)
    fast = GenerationSettings.from_preset("fast")
    assert [i.kind for i in inputs.values() if i.kind not in ("header", "button")] == [
        "single_multi_img_input", "slider", "slider", "int_horizontal", "int_horizontal", "slider", "int_horizontal",
        "int_horizontal"]
    assert inputs["single_multi_img_input"].min_needed == {OPERATION: 1} and "prompt" not in inputs
    for code, ours, default in [("ss_strength", "ss_cfg", fast.ss_cfg), ("slat_strength", "slat_cfg", fast.slat_cfg),
                                ("mesh_simplify", "simplify", fast.simplify)]:
        item = inputs[code]
        assert item.kind == "slider" and (item.lo, item.hi) == tuple(map(np.float32, number_range(ours))), code
        assert item.value == np.float32(default), code
    for code, default in [("ss_steps", fast.ss_steps), ("slat_steps", fast.slat_steps),
                          ("texture_size", fast.texture_size)]:
        item = inputs[code]
        assert (item.lo, item.hi, item.value) == (*number_range(code), default) and not item.as_seed, code
    seed = inputs["seed"]
    assert (seed.lo, seed.hi, seed.value, seed.as_seed) == (-1, MAX_SEED, -1, True)
    assert "\\n" in inputs["ss_strength"].label                     # a two-line label under the dial
    assert text == httpx.get(server.url + "/download/spz-ui-layout/generation-3d-panel").text    # unchanged

    # Generate is disabled until an image is in the slot; then the panel's values, a few turned down.
    assert not all(i.ready(OPERATION) for i in inputs.values())
    inputs["single_multi_img_input"].set([image])
    assert all(i.ready(OPERATION) for i in inputs.values())
    for code, value in [("ss_steps", 2), ("slat_steps", 2), ("texture_size", 64), ("seed", 5)]:
        inputs[code].set(value)
    inputs["slat_strength"].set(3.5)
    values = gather(inputs.values())
    body = newtonsoft(values)
    assert '"ss_strength":7.5,' in body and '"slat_strength":3.5,' in body and '"ss_steps":2,' in body
    assert '"title":null' in body and body.endswith('"generate_what":"make_meshes_and_tex"}')
    client = Gen3D(server.url)
    result = client.generate({**values, **SMALL_BAKE})
    assert "error" not in result, (result, client.polls, client.http)
    assert result["response"]["status"] == "COMPLETE" and result["response"]["model_url"] == "/download/model"
    check_glb(result["model"])
    assert client.polls and all(s in STATUSES for s, _, _ in client.polls)
    job = httpx.get(f"{server.url}/v1/jobs/{result['response']['job_id']}").json()
    s = job["settings"]
    assert (s["ss_steps"], s["slat_steps"], s["texture_size"], job["seed"], s["slat_cfg"]) == (2, 2, 64, 5, 3.5)
    assert (s["preset"], s["formats"], s["simplify"]) == ("fast", ["glb"], fast.simplify)

    # A long one (a data: URL this time, as other clients send it), cancelled the way the client does.
    inputs["single_multi_img_input"].set(["data:image/png;base64," + image])
    inputs["ss_steps"].set(RULES["ss_steps"][2])
    long = Gen3D(server.url, poll_s=0.2)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(long.generate(gather(inputs.values()))))
    runner.start()
    deadline = time.time() + 60
    while not any(m.startswith("Sampling structure") for _, _, m in long.polls):
        assert time.time() < deadline and runner.is_alive(), (long.polls, outcome)
        time.sleep(0.05)
    stop = long.cancel()
    assert stop.status_code == 200 and stop.json() == {"status": "interrupt_requested"}
    runner.join(TIMEOUT)
    assert outcome.get("cancelled")
    outcome["thread"].join(TIMEOUT)
    assert long.http[0] == 499 and long.http[1]["error_kind"] == "cancelled", long.http
    status = httpx.get(server.url + "/status").json()
    assert status["status"] == "FAILED" and "cancel" in status["message"].lower() and not status["busy"]
    idle = long.cancel()
    assert idle.json() == {"status": "no_generation_in_progress"}
    check_glb(httpx.get(server.url + "/download/model").content)      # the last model is still there


def test_status_stays_processing_until_the_answer_is_out(server, image):
    """The client ends its wait at the first status other than PROCESSING and then needs the generation's
    answer: by then that answer must already be on its connection."""
    body = json.dumps({"single_multi_img_input": [image], "ss_steps": 2, "slat_steps": 2, "texture_size": 64,
                       "seed": 1, "generate_what": OPERATION, **SMALL_BAKE}).encode()
    sock = send_request(server.url, "/generate", body, "application/json")
    seen = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            deadline = time.time() + TIMEOUT
            while True:
                st = c.get("/status").json()["status"]
                seen.append(st)
                if st != "PROCESSING":
                    break
                assert time.time() < deadline, seen
                time.sleep(0.01)
        assert select.select([sock], [], [], 0)[0], f"/status said {st} before the answer was sent"
        code, answer = read_answer(sock)
    finally:
        sock.close()
    assert code == 200 and st == "COMPLETE" and json.loads(answer)["status"] == "COMPLETE"
    assert seen[0] == "PROCESSING"


@pytest.mark.slow
def test_text_prompt_only_with_a_text_model(tiny_text_models_dir, tmp_path):
    runner = JobRunner(os.path.join(tiny_text_models_dir, "TRELLIS-image-large"), tmp_path / "out", device="cpu",
                       text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    live = serve(runner)
    try:
        inputs, _ = connect(live.url)
        prompt = inputs["prompt"]
        assert prompt.kind == "text_prompt" and prompt.value == "" and prompt.min_needed == {}
        assert inputs["single_multi_img_input"].min_needed == {}       # a prompt alone may start it
        prompt.set("a small red chair")
        for code, value in [("ss_steps", 2), ("slat_steps", 2), ("texture_size", 64)]:
            inputs[code].set(value)
        client = Gen3D(live.url, poll_s=0.5)
        result = client.generate({**gather(inputs.values()), **SMALL_BAKE})
        assert "error" not in result, (result, client.polls, client.http)
        check_glb(result["model"])
        job = httpx.get(f"{live.url}/v1/jobs/{result['response']['job_id']}").json()
        assert job["kind"] == "text" and job["prompt"] == "a small red chair"
    finally:
        live.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


# ------------------------------------------------------------------------------------------ what clients send

def test_request_shapes(server, image):
    """Whole floats on StableProjectorz's endpoints only; generate_what, images and prompt checked; formats
    as one comma-separated string in /v1's JSON too. Each accepted value is proven by the next check failing
    (an image that is no image), so no job runs here."""
    not_image = b64(b"GIF89a but not really an image")
    c = httpx.Client(base_url=server.url, timeout=30)

    def post(path, **body):
        return c.post(path, json=body)
    r = post("/generate", single_multi_img_input=[not_image], ss_steps=12.0, texture_size=512.0, seed=-1.0)
    assert r.status_code == 422 and "not an image file" in r.text, r.text            # the numbers passed
    r = post("/generate", single_multi_img_input=[image], ss_steps=12.5, slat_steps=2)
    assert r.status_code == 422 and r.json()["detail"] == [{
        "loc": ["body", "ss_steps"], "type": "int_from_float",
        "msg": "ss_steps takes a whole number, got 12.5 (12 or 12.0 are accepted, 12.5 is not)"}], r.text
    r = post("/generate_no_preview", image_base64=not_image, ss_sampling_steps=3.0, texture_size=64.0)
    assert r.status_code == 422 and "not an image file" in r.text, r.text
    r = post("/generate_no_preview", image_base64=image, ss_sampling_steps=3.25)
    assert r.status_code == 422 and "ss_sampling_steps takes a whole number" in r.text, r.text
    r = post("/generate", single_multi_img_input=[image], ss_steps=float("1e300"))
    assert r.status_code == 422 and "ss_steps" in r.text, r.text                          # whole, but out of range
    r = post("/v1/jobs", images=[image], ss_steps=12.0)
    assert r.status_code == 422 and "valid integer" in r.text, r.text                     # /v1 stays strict

    for what in ("retexture", "make_mesh", ""):
        r = post("/generate", single_multi_img_input=[image], generate_what=what)
        assert r.status_code == 422 and "make_meshes_and_tex" in r.text and "supported_operations" in r.text, r.text
    r = post("/generate", single_multi_img_input=[image], prompt="a chair")
    assert r.status_code == 422 and "not both" in r.text, r.text
    r = post("/generate", single_multi_img_input=[], prompt="  ")
    assert r.status_code == 422 and "no image" in r.text, r.text
    r = post("/generate", single_multi_img_input=["data:image/png;base64," + not_image])
    assert r.status_code == 422 and "not an image file" in r.text, r.text              # the prefix was read

    r = post("/v1/jobs", images=[not_image], formats="glb, ply")
    assert r.status_code == 422 and "not an image file" in r.text, r.text
    for formats, words in [("glb,nope", "formats"), ("", "choose at least one"), (" , ", "choose at least one")]:
        r = post("/v1/jobs", images=[image], formats=formats)
        assert r.status_code == 422 and words in r.text, (formats, r.text)
    assert post("/v1/jobs/nope/export", formats="glb,ply").status_code == 404          # read, then no such job
    assert post("/v1/jobs/nope/export", formats="glb,fbx").status_code == 422
    r = post("/v1/jobs", images=[image], formats="glb,ply", **{k: v for k, v in FAST.items() if k != "seed"})
    assert r.status_code == 202 and r.json()["settings"]["formats"] == ["glb", "ply"], r.text
    assert c.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code in (200, 409)
    c.close()
