"""StableProjectorz and the model family (desktop/api/spz_trellis2.py), against live servers (uvicorn) on the tiny
random-weight pipelines (CPU), through the port of that app's client (tests/helpers/spz_client.py): a TRELLIS.2
server's panel gains the pipeline type's dropdown, whose index /generate takes as the type (and REST's
`model_family`); what TRELLIS.2 cannot take (several views) and the other family are refused with what to do before
any job; its preview (a lit turntable of its PBR material) is served as TRELLIS v1's; a TRELLIS v1 server with
TRELLIS.2 installed offers the model choice too, whose index /generate takes as the family; one without it refuses
`model_family: trellis2` with how to install it, here and on REST v1."""
import time

import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from desktop.settings_table import PIPELINE_TYPES
from tests.helpers.model_folders import install_trellis2
from tests.helpers.spz_client import connect, gather, newtonsoft, read_answer, send_request
from tests.helpers.images import rgba_blob
from tests.helpers.rest import b64
from tests.helpers.servers import LiveServer


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return b64(open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read())


@pytest.fixture(scope="module")
def trellis2(tiny_trellis2_dir, tmp_path_factory):
    runner = JobRunner(tiny_trellis2_dir, tmp_path_factory.mktemp("spz_trellis2_out"), device="cpu")
    live = LiveServer(create_app(runner))
    yield live, runner
    live.close()
    runner.shutdown(cancel=True, wait=True, timeout=60)


def post(url: str, path: str, body: dict) -> httpx.Response:
    """A JSON POST written as StableProjectorz writes it (its floats as C# floats)."""
    return httpx.post(url + path, content=newtonsoft(body).encode(), timeout=60,
                      headers={"Content-Type": "application/json"})


def test_a_trellis2_server_offers_its_pipeline_type_and_serves_its_preview(trellis2, image):
    live, runner = trellis2
    inputs, text = connect(live.url)                         # StableProjectorz's own parse of the panel
    dropdown = inputs["pipeline_type"]
    assert dropdown.kind == "dropdown" and f"options=[{','.join(PIPELINE_TYPES)}]" in text
    assert "model_family" not in inputs                          # TRELLIS v1 is not installed here
    assert PIPELINE_TYPES[dropdown.value] == "1024_cascade"                     # the server's default
    values = gather(inputs.values())
    values.update(single_multi_img_input=[image], ss_steps=1, slat_steps=1, seed=3)

    for path, body, words in [
            ("/generate", {**values, "model_family": "trellis"}, "This server runs TRELLIS.2"),
            ("/generate", {**values, "pipeline_type": 4}, "not one of its 4 choices"),
            ("/generate_multi_no_preview", {"image_list_base64": [image, image]}, "takes one image")]:
        answer = post(live.url, path, body)
        assert answer.status_code == 422 and words in answer.text, (path, answer.status_code, answer.text)
    assert runner.list() == []                                  # refused before any job

    # The panel's values as it sends them: the dropdown's index 0 is the 512 type; the job makes the GLB and the
    # preview video (cheap on a CPU: one step per flow, a small texture, a short video).
    values.update(pipeline_type=0, skip_videos=False, texture_size=64, video_frames=4, video_resolution=64)
    answer = post(live.url, "/generate", values)
    assert answer.status_code == 200, answer.text
    assert answer.json()["preview_urls"] == {"gaussian": "/download/preview/gaussian"}, answer.json()
    (job,) = runner.list()
    assert job.settings.pipeline_type == "512" and job.settings.formats == ("glb", "mp4"), job.settings
    video = httpx.get(live.url + "/download/preview/gaussian", timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp" and video.content == open(job.files["mp4"], "rb").read()

def test_a_v1_server_with_trellis2_installed_offers_the_model_choice(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path,
                                                                    monkeypatch, image):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path / "models", tiny_trellis2_dir)))
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    live = LiveServer(create_app(runner))
    try:
        inputs, text = connect(live.url)
        assert inputs["model_family"].value == 0 and "options=[TRELLIS-v1,TRELLIS.2]" in text    # the server's own
        assert PIPELINE_TYPES[inputs["pipeline_type"].value] == "1024_cascade"
        values = gather(inputs.values())
        values.update(single_multi_img_input=[image], ss_steps=1, slat_steps=1, model_family=1, pipeline_type=0)
        answer = post(live.url, "/generate", {**values, "model_family": 2})
        assert answer.status_code == 422 and "model_family must be trellis" in answer.text, answer.text
        # The panel's values as it sends them: TRELLIS.2 (index 1) and its 512 type (index 0); stopped once queued.
        sock = send_request(live.url, "/generate", newtonsoft(values).encode(), "application/json")
        deadline = time.monotonic() + 60
        while not runner.list():
            assert time.monotonic() < deadline, "no job was queued"
            time.sleep(0.02)
        (job,) = runner.list()
        assert job.family == "trellis2" and job.settings.pipeline_type == "512", (job.family, job.settings)
        assert post(live.url, "/interrupt", {}).json()["status"] == "interrupt_requested"
        assert read_answer(sock)[0] == 499
    finally:
        live.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


def test_a_trellis_v1_server_says_how_to_install_trellis2(tiny_pipeline_dir, tmp_path, monkeypatch, image):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))           # nothing installed there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    live = LiveServer(create_app(runner))
    try:
        inputs, _ = connect(live.url)
        assert "pipeline_type" not in inputs                    # TRELLIS v1 has one path
        for path, body in [("/generate", {"single_multi_img_input": [image], "model_family": "trellis2"}),
                           ("/generate_no_preview", {"image_base64": image, "model_family": "trellis2"})]:
            answer = post(live.url, path, body)
            assert answer.status_code == 422, answer.text
            text = answer.text
            assert "This server runs TRELLIS v1" in text and "TRELLIS.2 is not available" in text, text
            assert "huggingface.co/facebook/dinov3" in text and "--trellis2" in text, text
        # REST v1 the same way, and its health and schema name the family.
        answer = httpx.post(live.url + "/v1/jobs", json={"images": [image], "model_family": "trellis2"}, timeout=60)
        assert answer.status_code == 422 and "This server runs TRELLIS v1" in answer.text, answer.text
        assert httpx.get(live.url + "/v1/health", timeout=30).json()["model_family"] == "trellis"
        schemas = httpx.get(live.url + "/openapi.json", timeout=30).json()["components"]["schemas"]
        assert schemas["JobRequest"]["properties"]["model_family"]["anyOf"][0]["enum"] == ["trellis", "trellis2"]
        assert runner.list() == []
    finally:
        live.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)
