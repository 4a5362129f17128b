"""The REST API, live: uvicorn servers on 127.0.0.1 (in a thread, and `python -m desktop api` in a
subprocess) over the tiny random-weight pipeline on the CPU, driven with httpx."""
import errno
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import pytest
import torch
from PIL import Image

from desktop import api as api_mod
from desktop.api import common as api_common
from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.repo import ROOT_DIR as ROOT
from tests.helpers.rest import FAST, SPZ_FAST, TIMEOUT, b64, form, load_glb, wait_job
from tests.helpers.servers import LiveServer


@pytest.fixture(scope="module")
def live(runner):
    server = LiveServer(create_app(runner))
    yield server
    server.close()


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = rgba_blob(tmp_path_factory.mktemp("img") / "blob.png")
    return open(path, "rb").read()


def giant_png_header(side=9000) -> bytes:
    """A PNG that declares side x side RGBA pixels (only the header is ever read)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------ /v1

def test_v1_multipart_job_end_to_end(client, blob):
    r = client.post("/v1/jobs", files=[("images", ("blob.png", blob, "image/png"))],
                    data=form(**FAST, formats="glb,mp4"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["kind"] == "generate"
    info = wait_job(client, job["id"])
    assert info["state"] == "done", info["error"]
    assert info["progress"]["fraction"] == 1.0 and info["progress"]["percent"] == 100 and info["seed"] == 1
    assert info["settings"]["ss_steps"] == 2 and info["settings"]["formats"] == ["glb", "mp4"]
    files = {f["name"]: f for f in info["files"]}
    assert files["model.glb"]["content_type"] == "model/gltf-binary" and files["preview.mp4"]["kind"] == "mp4"

    glb = client.get(files["model.glb"]["url"])
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert len(glb.content) == files["model.glb"]["size_bytes"]
    load_glb(glb.content)
    mp4 = client.get(f"/v1/jobs/{job['id']}/files/preview.mp4")
    assert mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"
    settings = client.get(f"/v1/jobs/{job['id']}/files/settings.json").json()
    assert settings["seed"] == 1 and settings["settings"]["bake_views"] == 4

    listed = client.get("/v1/jobs").json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["model_loaded"] and health["devices"] == ["cpu"]
    assert health["auth_required"] is False
    presets = client.get("/v1/presets").json()
    assert presets["default"] == "balanced" and presets["presets"]["high"]["texture_size"] == 2048


def test_v1_json_job_kept_result_and_export(client, blob):
    r = client.post("/v1/jobs", json={"images": [b64(blob, prefix=True)], **FAST, "formats": ["ply"],
                                      "keep_result": True})
    assert r.status_code == 202, r.text
    info = wait_job(client, r.json()["id"])
    assert info["state"] == "done" and info["result_kept"], info
    ply = client.get(f"/v1/jobs/{info['id']}/files/model.ply")
    assert ply.status_code == 200 and ply.content.startswith(b"ply")
    assert [f["name"] for f in info["files"] if f["name"].startswith("model")] == ["model.ply"]

    r = client.post(f"/v1/jobs/{info['id']}/export", json={"formats": ["glb"], "texture_size": 128})
    assert r.status_code == 202, r.text
    export = wait_job(client, r.json()["id"])
    assert export["state"] == "done" and export["kind"] == "export" and export["source_id"] == info["id"]
    assert export["settings"]["texture_size"] == 128 and export["seed"] == 1
    load_glb(client.get(f"/v1/jobs/{export['id']}/files/model.glb").content)

    assert client.post(f"/v1/jobs/{info['id']}/export", json={"ss_steps": 3}).status_code == 422
    assert client.post(f"/v1/jobs/{info['id']}/export", json={"texture_size": 5}).status_code == 422
    assert client.post("/v1/jobs/nope/export", json={}).status_code == 404
    # an export's result is its source's: exported again from there, with the export's own settings
    r = client.post(f"/v1/jobs/{export['id']}/export", json={"formats": ["glb", "stl"]})
    assert r.status_code == 202, r.text
    again = wait_job(client, r.json()["id"])
    assert again["state"] == "done" and again["source_id"] == info["id"] and again["settings"]["texture_size"] == 128
    assert client.get(f"/v1/jobs/{again['id']}/files/model.stl").status_code == 200


def test_v1_bad_requests_are_4xx_with_a_reason(client, blob, monkeypatch):
    def post_file(data, name="x.png", **fields):
        return client.post("/v1/jobs", files=[("images", (name, data, "application/octet-stream"))],
                           data=form(**{**FAST, **fields}))

    transparent = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(transparent, format="PNG")
    for data, status, words in [(b"just some text", 422, "not an image file"),
                                (blob[: len(blob) // 2], 422, "damaged or truncated"),
                                (giant_png_header(), 422, "megapixels"),
                                (transparent.getvalue(), 422, "No foreground")]:
        r = post_file(data)
        assert r.status_code == status and words in r.json()["detail"], r.text
        assert r.json()["detail"].startswith("images[0]: ")

    for fields, where in [(dict(ss_steps=0), "ss_steps"), (dict(texture_size="big"), "texture_size"),
                          (dict(preset="ultra"), "preset"), (dict(formats="glb,fbx"), "formats"),
                          (dict(bogus=1), "bogus"), (dict(precision="fp8"), "precision")]:
        r = post_file(blob, **fields)
        assert r.status_code == 422, (fields, r.text)
        assert any(where in p["loc"] for p in r.json()["detail"]), r.text
    assert client.post("/v1/jobs", data=form(**FAST)).status_code == 422                 # no image
    r = client.post("/v1/jobs", json={"images": ["%%%not base64"], **FAST})
    assert r.status_code == 422 and "not valid base64" in r.json()["detail"]
    assert client.post("/v1/jobs", json={"images": []}).status_code == 422
    assert client.post("/v1/jobs", json={"images": [b64(blob)], "ss_cfg": "nan"}).status_code == 422
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/v1/jobs", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/jobs", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code in (400, 422), r.text
    monkeypatch.setattr(api_common, "MAX_IMAGE_BYTES", 1000)   # read by upload_bytes
    r = post_file(blob + b"\0" * 2000)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    monkeypatch.undo()

    assert client.get("/v1/jobs/0123456789abcdef").status_code == 404
    assert client.post("/v1/jobs/0123456789abcdef/cancel").status_code == 404
    assert client.get("/v1/jobs/0123456789abcdef/files/model.glb").status_code == 404
    assert client.get("/nowhere").status_code == 404
    # Without a token, only requests that name this computer are served (no DNS rebinding).
    assert client.get("/v1/health", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/v1/health", headers={"host": "localhost:1234"}).status_code == 200


def test_v1_files_are_only_the_jobs_own(client, blob):
    first = wait_job(client, client.post("/v1/jobs", files=[("images", ("a.png", blob, "image/png"))],
                                         data=form(**FAST, formats="ply")).json()["id"])
    other = wait_job(client, client.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["mp4"]})
                     .json()["id"])
    assert first["state"] == other["state"] == "done"
    base = f"/v1/jobs/{first['id']}/files/"
    assert client.get(base + "model.ply").status_code == 200
    assert client.get(base + "input.png").headers["content-type"] == "image/png"
    assert client.get(base + "preview.mp4").status_code == 404                   # the other job's file
    out_dir = os.path.dirname(first["out_dir"])
    for name in ["..%2F" + os.path.basename(other["out_dir"]) + "%2Fpreview.mp4", "..%2F..%2Fetc%2Fpasswd",
                 "%2Fetc%2Fpasswd", "%2E%2E", "model.ply%00.png", os.path.basename(out_dir),
                 os.path.basename(first["out_dir"])]:
        r = client.get(base + name)
        assert r.status_code == 404, (name, r.status_code)
    # Raw request lines with dot segments (an HTTP client would normalise them away).
    for target in [f"{base}../../{other['id']}/files/preview.mp4", f"{base}../../../../../../etc/passwd",
                   f"{base}..%2F..%2F..%2F..%2Fetc%2Fpasswd"]:
        with socket.create_connection(("127.0.0.1", client.base_url.port)) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            status_line = s.recv(200).decode(errors="replace").splitlines()[0]
        assert " 404 " in status_line, (target, status_line)


def test_v1_cancel_running_and_queued_jobs(client, blob):
    slow = client.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "ss_steps": 400, "formats": ["ply"]}).json()
    queued = client.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["ply"]}).json()
    deadline = time.time() + 60
    while True:
        info = client.get(f"/v1/jobs/{slow['id']}").json()
        if info["progress"]["stage"] == "sparse_structure" and info["progress"]["step"] >= 2:
            break
        assert time.time() < deadline and info["state"] in ("queued", "running"), info
        time.sleep(0.02)
    assert info["state"] == "running" and info["progress"]["total"] == 400 and info["progress"]["eta_s"] is not None
    waiting = client.get(f"/v1/jobs/{queued['id']}").json()
    assert waiting["state"] == "queued" and waiting["queue_position"] == 0
    r = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"                # at once
    assert client.post(f"/v1/jobs/{slow['id']}/cancel").status_code == 200
    done = wait_job(client, slow["id"])
    assert done["state"] == "cancelled" and done["error_kind"] == "cancelled" and done["progress"]["step"] < 400
    assert "model.ply" not in [f["name"] for f in done["files"]]
    r = client.post(f"/v1/jobs/{slow['id']}/cancel")
    assert r.status_code == 409 and "already ended" in r.json()["detail"]


def test_job_failures_report_their_kind(client, blob, runner, monkeypatch):
    from trellis.representations.gaussian import Gaussian

    if runner._workers[0].pipeline is None:           # run on its own: load the model first
        wait_job(client, client.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["ply"]})
                 .json()["id"])
    pipe = runner._workers[0].pipeline
    bias = pipe.models["sparse_structure_decoder"].out_layer[2].bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(-1e4)                               # stage 1 finds no voxel
    try:
        empty = wait_job(client, client.post("/v1/jobs", json={"images": [b64(blob)], **FAST}).json()["id"])
        r = client.post("/generate_no_preview", files={"file": ("a.png", blob, "image/png")}, data=form(**SPZ_FAST))
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    assert empty["state"] == "failed" and empty["error_kind"] == "empty" and "no occupied voxel" in empty["error"]
    assert r.status_code == 422 and r.json()["error_kind"] == "empty" and r.json()["status"] == "FAILED"

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(pipe, "run", oom)
    no_mem = wait_job(client, client.post("/v1/jobs", json={"images": [b64(blob)], **FAST}).json()["id"])
    assert no_mem["state"] == "failed" and no_mem["error_kind"] == "oom" and "fast preset" in no_mem["error"]
    r = client.post("/generate_no_preview", files={"file": ("a.png", blob, "image/png")}, data=form(**SPZ_FAST))
    assert r.status_code == 507 and "out of memory" in r.json()["detail"]
    monkeypatch.undo()

    def disk_full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(Gaussian, "save_ply", disk_full)
    full = wait_job(client, client.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["ply"]})
                    .json()["id"])
    assert full["state"] == "failed" and full["error_kind"] == "disk" and "full" in full["error"]
    monkeypatch.undo()
    assert client.get("/ping").json()["status"] == "running"                  # alive and well
    ok = wait_job(client, client.post("/v1/jobs", json={"images": [b64(blob)], **FAST}).json()["id"])
    assert ok["state"] == "done"


def test_model_that_cannot_be_loaded(tmp_path, blob):
    runner = JobRunner(str(tmp_path / "no-such-model"), tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            job = wait_job(c, c.post("/v1/jobs", json={"images": [b64(blob)], **FAST}).json()["id"])
            assert job["state"] == "failed" and job["error_kind"] == "model" and "pipeline.json" in job["error"]
            r = c.post("/generate_no_preview", data=form(image_base64=b64(blob), **SPZ_FAST))
            assert r.status_code == 503 and r.json()["error_kind"] == "model"
            assert c.get("/status").json()["status"] == "FAILED"
    finally:
        server.close()
        runner.shutdown(timeout=10)


# ------------------------------------------------------------------------------------------ StableProjectorz

def test_spz_preview_then_resume_without_sampling_again(client, blob):
    assert client.get("/ping").json() == {"status": "running", "message": "Trellis Desktop API is running",
                                           "busy": False}
    r = client.post("/generate_preview", files={"file": ("a.png", blob, "image/png")}, data=form(**SPZ_FAST))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "PREVIEW_READY" and body["preview_urls"] == {"gaussian": "/download/preview/gaussian"}
    assert "model_url" not in body or body["model_url"] is None
    preview_job = body["job_id"]
    mp4 = client.get(body["preview_urls"]["gaussian"])
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"
    assert client.get("/download/preview/mesh").status_code == 404
    assert client.get("/download/preview/normals").status_code == 422
    status = client.get("/status").json()
    assert status["status"] == "PREVIEW_READY" and status["progress"] == 100 and not status["busy"]

    r = client.post("/resume_from_preview", params={"mesh_simplify_ratio": 90, "texture_size": 64})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "COMPLETE" and r.json()["model_url"] == "/download/model"
    export = client.get(f"/v1/jobs/{r.json()['job_id']}").json()
    assert export["kind"] == "export" and export["source_id"] == preview_job     # no second sampling
    assert export["settings"]["simplify"] == 0.9 and export["settings"]["seed"] == 1
    model = client.get("/download/model")
    assert model.status_code == 200 and model.headers["content-type"] == "model/gltf-binary"
    load_glb(model.content)
    again = client.post("/resume_from_preview", params={"texture_size": 128, "mesh_simplify_ratio": 0.5})
    assert again.status_code == 200 and client.get(f"/v1/jobs/{again.json()['job_id']}").json()[
        "settings"]["texture_size"] == 128
    assert client.get("/status").json()["status"] == "COMPLETE"
    assert client.post("/resume_from_preview", params={"texture_size": 1}).status_code == 422


def test_spz_generate_json_multi_and_base64(client, blob, tmp_path):
    other = open(rgba_blob(tmp_path / "b.png", color=(40, 200, 90)), "rb").read()
    r = client.post("/generate", json={"single_multi_img_input": [b64(blob), b64(other)], "seed": 3,
                                       "ss_steps": 2, "slat_steps": 2, "ss_strength": 5, "mesh_simplify": 95,
                                       "texture_size": 64, "skip_videos": False, "fill_holes": False,
                                       "bake_views": 4, "bake_resolution": 64, "video_frames": 8,
                                       "video_resolution": 64, "an_unknown_field": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "COMPLETE" and body["model_url"] == "/download/model"
    assert body["preview_urls"] == {"gaussian": "/download/preview/gaussian"}
    job = client.get(f"/v1/jobs/{body['job_id']}").json()
    assert job["settings"]["ss_cfg"] == 5 and job["settings"]["simplify"] == 0.95 and job["seed"] == 3
    assert [f["kind"] for f in job["files"]].count("input") == 1 and "input_2" in [f["kind"] for f in job["files"]]
    load_glb(client.get("/download/model").content)
    # A new generation dropped the previous preview's result: nothing to resume from.
    r = client.post("/resume_from_preview")
    assert r.status_code == 409 and "generate_preview" in r.json()["detail"]

    r = client.post("/generate_multi_no_preview", data=form(**SPZ_FAST),
                    files=[("file_list", ("a.png", blob, "image/png")), ("file_list", ("b.png", other, "image/png"))])
    assert r.status_code == 200 and r.json()["status"] == "COMPLETE", r.text
    r = client.post("/generate_multi_preview", data=form(image_list_base64=[b64(blob), b64(other)], **SPZ_FAST))
    assert r.status_code == 200 and r.json()["status"] == "PREVIEW_READY", r.text
    r = client.post("/generate_no_preview", data=form(image_base64=b64(blob, prefix=True), seed=-1,
                                                      mesh_simplify_ratio=0.5, output_format="gltf", **{
                                                          k: v for k, v in SPZ_FAST.items() if k != "seed"}))
    assert r.status_code == 200 and r.json()["status"] == "COMPLETE", r.text
    job = client.get(f"/v1/jobs/{r.json()['job_id']}").json()
    assert job["settings"]["randomize_seed"] is False and job["settings"]["simplify"] == 0.5   # seed -1: drawn
    assert client.get("/info/supported_operations").json() == ["make_meshes_and_tex"]
    layout = client.get("/download/spz-ui-layout/generation-3d-panel")
    assert layout.status_code == 200 and layout.headers["content-type"].startswith("text/plain")
    assert "mesh_simplify" in layout.text


def test_spz_bad_requests_are_422(client, blob):
    for data, files, words in [
            (form(**SPZ_FAST), None, "no image"),
            (form(**SPZ_FAST), {"file": ("notes.txt", b"plain text", "text/plain")}, "not an image file"),
            (form(image_base64="@@@", **SPZ_FAST), None, "not valid base64"),
            (form(image_base64=b64(blob), **{**SPZ_FAST, "ss_sampling_steps": 0}), None, "ss_sampling_steps"),
            (form(image_base64=b64(blob), ss_cfg=3, ss_guidance_strength=4), None, "same thing"),
            (form(image_base64=b64(blob), mesh_simplify_ratio=99.5), None, "simplify")]:
        r = client.post("/generate_no_preview", data=data, files=files)
        assert r.status_code == 422 and words in json.dumps(r.json()), r.text
    r = client.post("/generate_preview", data=form(image_base64=b64(blob)),
                    files={"file": ("a.png", blob, "image/png")})
    assert r.status_code == 422 and "one image per request" in r.json()["detail"]
    assert client.post("/generate", json={"seed": 1}).status_code == 422
    assert client.post("/generate", json={"single_multi_img_input": ["@@"]}).status_code == 422
    assert client.post("/generate", content=b"nope", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/status").json()["busy"] is False                 # a refused request leaves no trace


def test_busy_503_interrupt_499_and_concurrent_clients(live, blob):
    # One progress list per /status poller: two pollers' appends are not ordered by when the server answered
    # them (CI saw [3, 0, 3, ...] from two clients), but each client's own answers must never go back.
    results, codes, fractions = {}, [], {}
    stop = threading.Event()

    def long_generation():
        with httpx.Client(base_url=live.url, timeout=TIMEOUT) as c:
            results["first"] = c.post("/generate_no_preview", files={"file": ("a.png", blob, "image/png")},
                                      data=form(**{**SPZ_FAST, "ss_sampling_steps": 400}))

    def poller(path):
        seen = fractions.setdefault(threading.get_ident(), [])
        with httpx.Client(base_url=live.url, timeout=TIMEOUT) as c:
            while not stop.is_set():
                r = c.get(path)
                codes.append(r.status_code)
                if path == "/status" and r.json()["status"] == "PROCESSING":
                    seen.append(r.json()["progress"])
                time.sleep(0.01)

    first = threading.Thread(target=long_generation)
    first.start()
    pollers = [threading.Thread(target=poller, args=(p,)) for p in ("/status", "/status", "/ping", "/v1/jobs")]
    for t in pollers:
        t.start()
    try:
        with httpx.Client(base_url=live.url, timeout=TIMEOUT) as c:
            deadline = time.time() + 60
            while True:
                s = c.get("/status").json()
                if s["status"] == "PROCESSING" and s["stage"] == "sparse_structure":
                    break
                assert time.time() < deadline and "first" not in results, (s, results)
                time.sleep(0.02)
            assert s["busy"] and c.get("/ping").json()["busy"]
            queued = c.post("/v1/jobs", json={"images": [b64(blob)], **FAST}).json()    # /v1 queues behind it
            second = c.post("/generate_no_preview", files={"file": ("a.png", blob, "image/png")},
                            data=form(**SPZ_FAST))
            assert second.status_code == 503 and "busy" in second.json()["detail"]
            assert c.post("/generate", json={"single_multi_img_input": [b64(blob)]}).status_code == 503
            assert c.post("/resume_from_preview").status_code == 503
            assert c.get(f"/v1/jobs/{queued['id']}").json()["queue_position"] == 0
            time.sleep(0.3)                                     # the pollers see it running a while
            assert c.post("/interrupt").json() == {"status": "interrupt_requested"}
            first.join(TIMEOUT)
            cancelled = results["first"]
            assert cancelled.status_code == 499, cancelled.text
            assert cancelled.json()["error_kind"] == "cancelled" and cancelled.json()["status"] == "FAILED"
            # /status says PROCESSING until the answer has gone out (spz.py): a client that polls the instant it
            # has read that answer may still see it for the moment the server takes to note it sent.
            deadline = time.monotonic() + 5
            while (status := c.get("/status").json()["status"]) == "PROCESSING" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status == "FAILED"
            assert c.post("/interrupt").json() == {"status": "no_generation_in_progress"}
            assert wait_job(c, queued["id"])["state"] == "done"                    # the queue went on
    finally:
        stop.set()
        for t in pollers:
            t.join(30)
        first.join(TIMEOUT)
    assert len(codes) > 20 and set(codes) == {200}
    status_lists = [seen for seen in fractions.values() if seen]
    assert status_lists and all(seen == sorted(seen) for seen in status_lists), status_lists


# ------------------------------------------------------------------------------------------ the command

def desktop_api(*args, **kw):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRELLIS_DESKTOP_API_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "desktop", "api", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_command_refuses_an_open_bind_without_token():
    for args, words in [(["--host", "0.0.0.0"], "--token"), (["--host", "0.0.0.0", "--token", "short"], "8 characters"),
                        (["--port", "notanumber"], "port number"), (["--precision", "fp8"], "invalid choice")]:
        proc = desktop_api(*args)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and words in err, (args, err)


def test_command_port_in_use_exits_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert api_mod.main(["--port", str(port), "--model", str(tmp_path), "--outputs", str(tmp_path / "o")]) == 1


@pytest.mark.skipif(os.name != "posix", reason="stops the server with SIGINT")
@pytest.mark.slow
def test_command_serves_with_a_token(tiny_pipeline_dir, tmp_path, blob):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "test-token-0123456789"
    proc = desktop_api("--model", tiny_pipeline_dir, "--port", port, "--token", token, "--outputs", tmp_path / "out",
                       "--device", "cpu", "--preset", "fast")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(url + "/ping", headers=auth, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            for headers in [{}, {"Authorization": "Bearer wrong-token-000"}, {"X-API-Key": "nope"},
                            {"Authorization": token}]:
                r = c.get("/v1/health", headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
                assert "token" in r.json()["detail"]
            assert c.post("/generate_no_preview", data=form(image_base64=b64(blob))).status_code == 401
            assert c.get("/v1/health", headers={"X-API-Key": token}).json()["auth_required"] is True
            schema = c.get("/openapi.json").json()                       # the docs stay open
            assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
            assert c.get("/docs").status_code == 200
            assert c.get("/v1/presets", headers=auth).json()["default"] == "fast"
            r = c.post("/generate_no_preview", headers=auth, files={"file": ("a.png", blob, "image/png")},
                       data=form(**SPZ_FAST))
            assert r.status_code == 200 and r.json()["status"] == "COMPLETE", r.text
            model = c.get("/download/model", headers=auth)
            assert model.headers["content-type"] == "model/gltf-binary"
            load_glb(model.content)
            assert c.get("/download/model").status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in err and "token required" in err


# ------------------------------------------------------------------------------------------ schema fuzzing

def test_openapi_schema_fuzzing_finds_no_server_error(tiny_pipeline_dir, tiny_text_models_dir, tmp_path):
    """schemathesis over every operation of /openapi.json, against a fresh live server (nothing
    excluded). Bounded: a few examples per operation, positive and negative data, no deadline."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import load_all_checks
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi import checks as oa_checks

    load_all_checks()
    # Prompts the fuzzer sends run on the tiny text pipeline (never the hub's).
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu",
                       text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    server = LiveServer(create_app(runner))
    try:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        checks = [oa_checks.status_code_conformance, oa_checks.content_type_conformance,
                  oa_checks.response_schema_conformance]
        operations = [result.ok() for result in schema.get_all_operations()]
        document = httpx.get(server.url + "/openapi.json").json()
        assert len(operations) == sum(len(methods) for methods in document["paths"].values()) == 24
        failures, no_invalid = [], []
        t0 = time.time()
        for op in operations:
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                @given(case=op.as_strategy(generation_mode=mode))
                @settings(max_examples=6, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                def run(case):
                    # respond-async: POST /v1/3d/generations answers at once instead of waiting for its jobs.
                    response = case.call(base_url=server.url, timeout=60, headers={"Prefer": "respond-async"})
                    if response.status_code >= 500:
                        failures.append((op.label, mode.name, response.status_code, response.text[:300]))
                        return
                    try:
                        case.validate_response(response, checks=checks)
                    except (AssertionError, FailureGroup) as err:    # collected, all reported below
                        failures.append((op.label, mode.name, response.status_code, str(err)[:300]))
                try:
                    run()
                except Unsatisfiable:
                    # No invalid input exists for an operation whose only inputs are free strings (a job
                    # id, a file name) or that has none: nothing to break. Checked below.
                    assert mode == schemathesis.GenerationMode.NEGATIVE, op.label
                    no_invalid.append(op.label)
        assert not failures, "\n".join(map(str, failures))
        for label in no_invalid:
            method, path = label.split(" ", 1)
            operation = document["paths"][path][method.lower()]
            assert "requestBody" not in operation, label
            assert all(set(p["schema"]) <= {"type", "title"} and p["schema"]["type"] == "string"
                       for p in operation.get("parameters", [])), label
        assert time.time() - t0 < 60
        # The fuzzing left the server working.
        assert httpx.get(server.url + "/ping").json()["status"] == "running"
    finally:
        server.close()
        runner.shutdown(timeout=30)


# ------------------------------------------------------------------------------------------ hostile inputs

def band_png(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A width x height PNG: transparent but for an opaque band across the whole width (RGBA), or
    opaque everywhere (RGB). A few hundred bytes however wide."""
    img = Image.new(mode, (width, height), (0, 0, 0, 0) if mode == "RGBA" else (0, 0, 0))
    img.paste((200, 80, 40, 255) if mode == "RGBA" else (200, 80, 40), (0, 2, width, height - 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_elongated_images_are_422_on_every_endpoint(client, blob):
    """A very wide opaque band made a square crop beyond Pillow's pixel limit (500) or of 0.7 GB."""
    for data, words in [(band_png(100_000, 8), "times wider than tall"), (band_png(10_000, 8), "times wider"),
                        (band_png(8, 10_000), "times taller than wide"),
                        (band_png(20_000, 8, "RGB"), "times wider")]:          # RGB: before background removal
        assert len(data) < 5000
        r = client.post("/v1/jobs", files=[("images", ("band.png", data, "image/png"))], data=form(**FAST))
        assert r.status_code == 422 and words in r.json()["detail"] and "Crop the image" in r.json()["detail"], r.text
        r = client.post("/v1/jobs", json={"images": [b64(data)], **FAST})
        assert r.status_code == 422 and words in r.json()["detail"], r.text
        r = client.post("/generate_no_preview", files={"file": ("band.png", data, "image/png")}, data=form(**SPZ_FAST))
        assert r.status_code == 422 and words in json.dumps(r.json()), r.text
        r = client.post("/generate", json={"single_multi_img_input": [b64(data)], **SPZ_FAST})
        assert r.status_code == 422 and words in json.dumps(r.json()), r.text
    assert client.get("/status").json()["busy"] is False


def test_deep_json_is_422_not_500(client, blob):
    for body in ["[" * 1000 + "]" * 1000, "{\"images\": " + "[" * 5000 + "]" * 5000 + "}",
                 json.dumps({"images": [b64(blob)], "formats": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["glb"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
                 "[" * 100_000]:
        for route in ("/v1/jobs", "/generate_no_preview"):
            r = client.post(route, content=body.encode(), headers={"content-type": "application/json"})
            assert r.status_code == 422, (route, body[:40], r.text)
            assert "nested more than 32 levels" in json.dumps(r.json()), r.text
        # /generate's body is parsed by FastAPI itself: an unreadable body there is a 400.
        r = client.post("/generate", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), r.text
    # Brackets inside strings are text, not nesting.
    r = client.post("/v1/jobs", json={"images": ["[" * 100 + "{" * 100], **FAST})
    assert r.status_code == 422 and "not valid base64" in r.json()["detail"], r.text
    assert api_mod.json_depth(b'{"a": [1, {"b": "]]]}}\\"[[["}], "c": []}') == 3


def test_gltf_uploads_are_counted_by_their_scene_graph(client, blob):
    """The upload check counts what a glTF's nodes place (trellis.representations.gltf_scene): a few kB of nodes
    reusing one mesh, a 1 000-level hierarchy and a malformed field are 422 at once, with their numbers."""
    from tests.helpers.gltf import chain, declared_doc, glb, setter, triangle_doc, with_uvs

    for name, data, words in [
            ("copies.glb", glb(declared_doc(2_000)), "copies.glb places 40,960,000 triangles in its scene (2,000 "
                                                     "nodes place copies of its meshes' 20,480 triangles)"),
            ("deep.glb", glb(*triangle_doc(chain(1_000), [0])), "deep.glb has a node hierarchy 1,000 levels deep"),
            ("bad.glb", with_uvs(setter("materials", {})), "bad.glb is a damaged glTF file: materials is an object")]:
        r = client.post("/v1/jobs", files=[("mesh", (name, data, "model/gltf-binary")),
                                           ("images", ("blob.png", blob, "image/png"))], data=form(**FAST))
        assert r.status_code == 422 and r.json()["detail"].startswith(f"mesh: {words}"), r.text
