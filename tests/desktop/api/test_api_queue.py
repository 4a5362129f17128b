"""The job queue's bound (429 with Retry-After on every endpoint that queues a job), GET /v1/jobs in pages, and
StableProjectorz's /status while a /generate is on its way: a live API server over a real JobRunner whose worker is
held in its model load (the gate), so that jobs stay queued for as long as a test needs them there."""
import base64
import json
import socket
import threading
import time

import httpx
import pytest

from desktop.api import create_app
from desktop.api import spz as spz_mod
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.servers import LiveServer

MAX_QUEUED = 2


class HeldLoad:
    """The worker's model load, held until the test opens the gate; then it fails (no model: no job here samples)."""

    def __init__(self):
        self.entered, self.gate = threading.Event(), threading.Event()

    def __call__(self, device):
        self.entered.set()
        assert self.gate.wait(120)
        raise OSError("this test's runner has no model")


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    load = HeldLoad()
    runner = JobRunner("unused-model", tmp_path_factory.mktemp("queue_out"), device="cpu", recover=False,
                       pipeline_factory=load, max_queued=MAX_QUEUED)
    server = LiveServer(create_app(runner))
    yield server, runner, load
    load.gate.set()
    server.close()
    runner.shutdown(cancel=True, wait=True, timeout=30)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return base64.b64encode(open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()).decode()


def running_job(client, load, image) -> str:
    """The id of a job that holds the worker (in its model load): started here unless one is already."""
    held = [j for j in client.get("/v1/jobs").json()["jobs"] if j["state"] == "running"]
    if held:
        return held[0]["id"]
    job = client.post("/v1/jobs", json={"images": [image]}).json()["id"]
    assert load.entered.wait(30)
    return job


def cancel_queued(client) -> None:
    for job in client.get("/v1/jobs").json()["jobs"]:
        if job["state"] == "queued":
            client.post(f"/v1/jobs/{job['id']}/cancel")


def test_a_full_queue_is_429_with_retry_after_everywhere(held, image):
    server, runner, load = held
    with httpx.Client(base_url=server.url, timeout=60) as c:
        running_job(c, load, image)
        queued = [c.post("/v1/jobs", json={"images": [image], "seed": i}) for i in range(MAX_QUEUED)]
        assert [r.status_code for r in queued] == [202] * MAX_QUEUED
        listed = c.get("/v1/jobs").json()["total"]
        for refused in [c.post("/v1/jobs", json={"images": [image]}),
                        c.post("/v1/jobs", files={"images": ("a.png", base64.b64decode(image), "image/png")}),
                        c.post("/generate", json={"single_multi_img_input": [image]})]:
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            body = refused.json()
            assert "queue is full" in body["detail"] and body["error_kind"] == "queue_full"
        assert c.get("/v1/jobs").json()["total"] == listed                       # nothing of them was kept
        # A rerun queues a job too: refused while full, accepted once a place is free.
        ended = queued[0].json()["id"]
        assert c.post(f"/v1/jobs/{ended}/cancel").status_code == 200
        assert c.post(f"/v1/jobs/{ended}/rerun").status_code == 202
        again = c.post(f"/v1/jobs/{ended}/rerun")
        assert again.status_code == 429 and "Retry-After" in again.headers
        assert c.get("/status").json()["status"] == "FAILED"                   # /generate left no job behind
        assert "429" in c.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/rerun"]["post"]["responses"]
        cancel_queued(c)


def test_jobs_are_listed_in_pages(held, image):
    server, runner, load = held
    with httpx.Client(base_url=server.url, timeout=60) as c:
        running_job(c, load, image)
        for _ in range(3):                              # each queued, then cancelled: listed, never run
            job = c.post("/v1/jobs", json={"images": [image]}).json()["id"]
            c.post(f"/v1/jobs/{job}/cancel")
        everything = [j.id for j in runner.list()]
        total = len(everything)
        assert total >= 4
        first = c.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in first["jobs"]] == everything[:2]
        assert (first["total"], first["offset"], first["limit"], first["next_offset"]) == (total, 0, 2, 2)
        pages, offset = [], 0
        while offset is not None:
            page = c.get("/v1/jobs", params={"limit": 3, "offset": offset}).json()
            pages += [j["id"] for j in page["jobs"]]
            offset = page["next_offset"]
        assert pages == everything
        newest = c.get("/v1/jobs", params={"order": "newest", "limit": 1}).json()
        assert [j["id"] for j in newest["jobs"]] == everything[-1:]
        beyond = c.get("/v1/jobs", params={"offset": total + 5}).json()
        assert beyond["jobs"] == [] and beyond["next_offset"] is None and beyond["total"] == total
        assert len(c.get("/v1/jobs").json()["jobs"]) == total                     # the default page holds them
        for bad in [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}, {"order": "random"}]:
            r = c.get("/v1/jobs", params=bad)
            assert r.status_code == 422 and list(bad)[0] in json.dumps(r.json()["detail"]), (bad, r.text)
        params = {p["name"]: p for p in c.get("/openapi.json").json()["paths"]["/v1/jobs"]["get"]["parameters"]}
        assert params["limit"]["schema"]["maximum"] == 1000 and params["limit"]["schema"]["default"] == 100
        assert "offset" in params and "order" in params


def post_generate(url: str, image: str) -> socket.socket:
    """StableProjectorz's /generate written to its connection (its answer comes when the job ends)."""
    body = json.dumps({"single_multi_img_input": [image], "generate_what": "make_meshes_and_tex"}).encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(f"POST /generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def ended_status(client) -> dict:
    """/status once it no longer says PROCESSING: an answer that went out is noted a moment after the client has it."""
    deadline = time.monotonic() + 5
    while (status := client.get("/status").json())["status"] == "PROCESSING":
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    return status


def test_status_polled_before_generate_arrives_says_processing(held, image):
    """A client polls /status the moment it has sent /generate, and the poll may be read first: it must not see the
    previous generation's end (or idle) as the end of its own."""
    server, runner, load = held
    with httpx.Client(base_url=server.url, timeout=60) as c:
        running_job(c, load, image)                     # the generations wait behind it: their cancel lands at once
        for _ in range(2):                              # idle first (or the last test's), then a cancelled generation
            before = ended_status(c)
            polled = {}
            poll = threading.Thread(target=lambda: polled.update(c.get("/status").json()))
            poll.start()
            time.sleep(spz_mod.STATUS_HOLD_S / 4)             # the poll has gone out; now the request
            sock = post_generate(server.url, image)
            poll.join(30)
            assert polled["status"] == "PROCESSING", (before, polled)
            assert c.post("/interrupt").json() == {"status": "interrupt_requested"}
            with sock:
                sock.settimeout(60)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 499")
        # Polled with nothing on its way, it says how the last one ended once the hold has passed.
        after = ended_status(c)
        assert after["status"] == "FAILED" and "cancel" in after["message"]
        cancel_queued(c)
