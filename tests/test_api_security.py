"""The REST API's defences, live: uvicorn servers on 127.0.0.1 over the tiny random-weight pipeline on
the CPU, driven with real HTTP requests (httpx, and raw sockets where a client would not misbehave):
cross-site requests, validation before "busy", strict types and a body read with a time limit."""
import json
import socket
import threading
import time

import httpx
import pytest

from desktop import api as api_mod
from desktop.api import create_app
from desktop.jobs import JobRunner
from test_api import FAST, SPZ_FAST, TIMEOUT, LiveServer, b64, form, wait_job

TOKEN = "security-token-0123456789"
ALLOWED = "http://app.example:8080"
EVIL = "http://evil.com"


@pytest.fixture(scope="module")
def runner(tiny_pipeline_dir, tmp_path_factory):
    r = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp("api_security_out"), device="cpu")
    yield r
    r.shutdown(cancel=True, wait=True, timeout=30)


@pytest.fixture(scope="module")
def open_server(runner):
    """No token; web pages at ALLOWED may use it."""
    server = LiveServer(create_app(runner, allowed_origins=[ALLOWED + "/"]))
    yield server
    server.close()


@pytest.fixture(scope="module")
def token_server(runner):
    server = LiveServer(create_app(runner, token=TOKEN))
    yield server
    server.close()


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    from images import rgba_blob

    return open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()


def job_ids(c, headers=None) -> set:
    return {j["id"] for j in c.get("/v1/jobs", headers=headers).json()["jobs"]}


def queue_and_cancel(c, blob, headers) -> httpx.Response:
    """POST a job with `headers`; a queued one is cancelled at once (the tests need its status only)."""
    r = c.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["ply"]}, headers=headers)
    if r.status_code == 202:
        auth = {k: v for k, v in headers.items() if k.lower() in ("authorization", "x-api-key")}
        c.post(f"/v1/jobs/{r.json()['id']}/cancel", headers=auth)
    return r


# ------------------------------------------------------------------------------------------ cross-site

def test_cross_site_job_requests_are_refused(open_server, blob):
    port = int(open_server.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=open_server.url, timeout=TIMEOUT) as c:
        before = job_ids(c)
        for headers in [{"Origin": EVIL}, {"Origin": "null"}, {"Origin": f"http://localhost:{port + 1}"},
                        {"Origin": f"https://127.0.0.1:{port}"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"},
                        {"Origin": EVIL, "Authorization": "Bearer anything-at-all"}]:
            r = queue_and_cancel(c, blob, headers)
            assert r.status_code == 403, (headers, r.text)
            detail = r.json()["detail"]
            assert detail.startswith("cross-site request refused") and "--allow-origin" in detail, detail
            assert "send the server's token" not in detail                 # this server has none
        r = queue_and_cancel(c, blob, {"Origin": EVIL})
        assert f"--allow-origin {EVIL}" in r.json()["detail"]
        # Multipart forms, which a page can send without a CORS preflight, are refused too.
        r = c.post("/v1/jobs", files=[("images", ("a.png", blob, "image/png"))], data=form(**FAST),
                   headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        assert job_ids(c) == before                                            # nothing was queued

        for headers in [{}, {"Origin": ALLOWED}, {"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"},
                        {"Origin": f"http://127.0.0.1:{port}"}, {"Origin": f"http://localhost:{port}"},
                        {"Origin": f"http://[::1]:{port}", "Sec-Fetch-Site": "same-origin"},
                        {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "none"}]:
            r = queue_and_cancel(c, blob, headers)
            assert r.status_code == 202, (headers, r.text)

        # GET stays open to every page (the answers carry no CORS header for it, so it cannot read them).
        r = c.get("/v1/jobs", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        # The allowed origin gets CORS answers, preflights included.
        r = c.get("/v1/health", headers={"Origin": ALLOWED})
        assert r.headers["access-control-allow-origin"] == ALLOWED
        r = c.options("/v1/jobs", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "content-type"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
        r = c.options("/v1/jobs", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers


def test_cross_site_cancel_export_and_stableprojectorz_endpoints(open_server, blob):
    with httpx.Client(base_url=open_server.url, timeout=TIMEOUT) as c:
        job = c.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["ply"], "keep_result": True}).json()
        evil = {"Origin": EVIL}
        assert c.post(f"/v1/jobs/{job['id']}/cancel", headers=evil).status_code == 403
        assert wait_job(c, job["id"])["state"] == "done"                     # it was not cancelled
        r = c.post(f"/v1/jobs/{job['id']}/export", json={"formats": ["glb"]}, headers=evil)
        assert r.status_code == 403
        assert c.get("/v1/jobs").json()["jobs"][-1]["id"] == job["id"]        # no export job either

        for path, kwargs in [("/generate_no_preview", dict(data=form(image_base64=b64(blob), **SPZ_FAST))),
                             ("/generate_preview", dict(files={"file": ("a.png", blob, "image/png")})),
                             ("/generate_multi_no_preview", dict(data=form(image_list_base64=[b64(blob)]))),
                             ("/generate_multi_preview", dict(data=form(image_list_base64=[b64(blob)]))),
                             ("/generate", dict(json={"single_multi_img_input": [b64(blob)]})),
                             ("/resume_from_preview", {}), ("/interrupt", {})]:
            r = c.post(path, headers=evil, **kwargs)
            assert r.status_code == 403 and "cross-site" in r.json()["detail"], (path, r.text)
            r = c.post(path, headers={"Sec-Fetch-Site": "cross-site"}, **kwargs)
            assert r.status_code == 403, path
        assert c.get("/status").json()["status"] == "FAILED"                 # no generation ever started
        assert c.get("/ping").json()["busy"] is False


def test_cross_site_interrupt_leaves_the_generation_running(open_server, blob):
    result = {}

    def generate():
        with httpx.Client(base_url=open_server.url, timeout=TIMEOUT) as c:
            result["r"] = c.post("/generate_no_preview", files={"file": ("a.png", blob, "image/png")},
                                 data=form(**{**SPZ_FAST, "ss_sampling_steps": 400}))

    thread = threading.Thread(target=generate)
    thread.start()
    try:
        with httpx.Client(base_url=open_server.url, timeout=TIMEOUT) as c:
            deadline = time.time() + 60
            while (s := c.get("/status").json())["status"] != "PROCESSING" or s["stage"] != "sparse_structure":
                assert time.time() < deadline and "r" not in result, (s, result)
                time.sleep(0.02)
            r = c.post("/interrupt", headers={"Origin": EVIL})
            assert r.status_code == 403 and f"--allow-origin {EVIL}" in r.json()["detail"]
            time.sleep(0.2)
            assert c.get("/status").json()["status"] == "PROCESSING"
            assert c.post("/interrupt").json() == {"status": "interrupt_requested"}      # StableProjectorz: no Origin
            thread.join(TIMEOUT)
            assert result["r"].status_code == 499
    finally:
        thread.join(TIMEOUT)


def test_cross_site_requests_with_the_token_pass(token_server, blob):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=token_server.url, timeout=TIMEOUT) as c:
        before = job_ids(c, auth)
        r = queue_and_cancel(c, blob, {"Origin": EVIL, "Authorization": "Bearer wrong-token-0000"})
        assert r.status_code == 403 and "or send the server's token" in r.json()["detail"]
        r = queue_and_cancel(c, blob, {"Sec-Fetch-Site": "cross-site", "X-API-Key": "wrong"})
        assert r.status_code == 403
        assert job_ids(c, auth) == before
        for headers in [{"Origin": EVIL, **auth}, {"Origin": EVIL, "X-API-Key": TOKEN},
                        {"Sec-Fetch-Site": "cross-site", **auth}, auth]:
            r = queue_and_cancel(c, blob, headers)
            assert r.status_code == 202, (headers, r.text)
        assert c.post("/v1/jobs", json={}).status_code == 401                 # no Origin, no token: 401 as before


def test_allow_origin_option():
    parser = api_mod.build_parser()
    args = parser.parse_args(["--allow-origin", "HTTP://LocalHost:3000/", "--allow-origin", "https://a.example:443"])
    assert args.allow_origin == ["http://localhost:3000", "https://a.example"]
    assert parser.parse_args([]).allow_origin == []
    for bad in ["localhost:3000", "http://a.example/app", "null", "ftp://a.example", "http://a.example:99999"]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--allow-origin", bad])
        assert exit_info.value.code == 2, bad
