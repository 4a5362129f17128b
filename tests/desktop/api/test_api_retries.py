"""One request, one job, and every answer JSON, on a live REST server over the tiny random-weight pipeline on the
CPU: a failed job on the OpenAI-style endpoint tells retrying clients not to retry (`x-should-retry: false`, which
the `openai` package obeys), a request sent again with its `Idempotency-Key` is answered with the first request's
jobs (POST /v1/jobs and POST /v1/3d/generations), and the error answers that framework parts write as text (the Host
check, uvicorn's own 400, an unexpected exception) reach the client as JSON."""
import json
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from desktop.api import connections, create_app
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.rest import FAST, TIMEOUT, b64, wait_job
from tests.helpers.servers import LiveServer

GLB_FAST = {**FAST, "formats": ["glb"]}
LONG = {**GLB_FAST, "ss_steps": 400, "slat_steps": 400}       # runs for seconds: still queued or running when asked


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    return Path(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png")).read_bytes()


@pytest.fixture(scope="module")
def live(runner):
    server = LiveServer(create_app(runner))
    yield server
    server.close()


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=TIMEOUT) as c:
        yield c


def test_a_failed_generation_says_do_not_retry_and_its_key_makes_no_second_job(tiny_pipeline_dir, tmp_path, blob):
    # A model folder whose weights file was cut short: the job fails as the model's (503), as it would on every try.
    damaged = Path(shutil.copytree(tiny_pipeline_dir, tmp_path / "damaged"))
    weights = sorted((damaged / "ckpts").glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:100])
    runner = JobRunner(str(damaged), tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            body = {"image": b64(blob), **GLB_FAST}
            first = c.post("/v1/3d/generations", json=body, headers={"Idempotency-Key": "one-try"})
            assert first.status_code == 503, first.text
            error = first.json()["error"]
            assert error["type"] == "server_error" and error["code"] == "model" and error["job_id"], error
            assert first.headers["x-should-retry"] == "false"
            assert len(runner.list()) == 1
            # The same request again with its key (a client's retry): the first job's answer, no second job.
            again = c.post("/v1/3d/generations", json=body, headers={"Idempotency-Key": "one-try"})
            assert again.status_code == 503 and again.json()["error"]["job_id"] == error["job_id"], again.text
            assert again.headers["x-should-retry"] == "false" and len(runner.list()) == 1
            polled = c.get(f"/v1/3d/generations/{error['job_id']}")
            assert polled.status_code == 503 and polled.headers["x-should-retry"] == "false"
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


def test_a_repeated_idempotency_key_answers_the_first_job(client, runner, blob):
    before = len(runner.list())
    body = {"images": [b64(blob)], **LONG}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-1"})
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-1"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"], again.text
    assert again.headers["idempotent-replayed"] == "true" and again.headers["location"] == first.headers["location"]
    assert len(runner.list()) == before + 1
    # The same key with other settings is refused; without a key, or with a new one, a new job is made.
    other = client.post("/v1/jobs", json={**body, "seed": 2}, headers={"Idempotency-Key": "job-key-1"})
    assert other.status_code == 422 and "other inputs or settings" in other.json()["detail"], other.text
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k" * 300}).status_code == 400
    assert len(runner.list()) == before + 1
    fresh = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-2"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]

    # The OpenAI-style endpoint, as a retry of an async request (the answer's id is its jobs').
    gen = {"image": b64(blob), "async": True, "n": 2, **LONG}
    made = client.post("/v1/3d/generations", json=gen, headers={"Idempotency-Key": "gen-key"})
    assert made.status_code == 202, made.text
    replay = client.post("/v1/3d/generations", json=gen, headers={"Idempotency-Key": "gen-key"})
    assert replay.status_code == 202 and replay.json()["id"] == made.json()["id"], replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(runner.list()) == before + 4
    for job in runner.list()[before:]:
        client.post(f"/v1/jobs/{job.id}/cancel")
    for job in runner.list()[before:]:
        assert wait_job(client, job.id)["state"] == "cancelled"


def test_error_answers_are_json_whoever_writes_them(runner, tmp_path):
    app = create_app(runner)

    @app.get("/v1/test-failure")
    async def failing():                 # a handler that fails unexpectedly: its answer, not Starlette's plain text
        raise RuntimeError("a bug")
    config = connections.server_config(app, log_level="critical", lifespan="off")
    server = LiveServer(app, config)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for path, headers, status in [("/v1/test-failure", {}, 500), ("/v1/health", {"Host": "evil.example"}, 400),
                                          ("/no/such/path", {}, 404)]:
                r = c.get(path, headers=headers)
                assert r.status_code == status and r.headers["content-type"] == "application/json", (path, r.text)
                assert r.json()["detail"], r.text
            assert "RuntimeError" in c.get("/v1/test-failure").json()["detail"]
            assert c.delete("/v1/health").json()["detail"] == "Method Not Allowed"
        # A handler's error leaves its connection open: the next request on it is answered (uvicorn closed it under
        # the client's feet, a reset that could eat the 500 itself).
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /v1/test-failure HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while b"error_kind" not in first and (chunk := s.recv(65536)):
                first += chunk
            assert first.startswith(b"HTTP/1.1 500") and b"connection: close" not in first.lower(), first
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            second = b""
            while chunk := s.recv(65536):
                second += chunk
            assert second.startswith(b"HTTP/1.1 200"), (first, second)
        # Bytes that are no HTTP request: uvicorn's own 400, as JSON.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), data
        assert "HTTP request" in json.loads(body)["detail"]
    finally:
        server.close()
