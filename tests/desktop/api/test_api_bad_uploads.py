"""Uploads the REST API must refuse whole and at once, over raw sockets to a real server (the guarded protocol of
`python -m desktop api`, desktop/api/connections.py) on the tiny random-weight pipeline: a body over the size limit
(declared in its Content-Length, or chunked and growing past it) is one JSON 413 in its endpoint family's shape that
states the limit, with nothing in the server's log; a multipart body cut short before its closing boundary is a 400
that says so (its last field is not dropped unnoticed); a broken 3-D model is a 422 at submit."""
import base64
import json
import logging
import socket
import time

import httpx
import pytest

from desktop.api import connections, create_app
from desktop.api import server as server_mod
from tests.helpers.rest import FAST, TIMEOUT
from tests.helpers.servers import LiveServer

BOUNDARY = "cutXYZ"
HUGE = 99_999_999_999_999
FORM = f"multipart/form-data; boundary={BOUNDARY}"
# The multipart endpoints: the job API, the OpenAI-style one (and its LocalAI path), StableProjectorz's forms.
FORM_PATHS = {"/v1/jobs": "images", "/v1/3d/generations": "image", "/3d/generations": "image",
              "/generate_no_preview": "file", "/generate_preview": "file", "/generate_multi_no_preview": "file_list",
              "/generate_multi_preview": "file_list"}


@pytest.fixture(scope="module")
def server(runner):
    app = create_app(runner)
    live = LiveServer(app, connections.server_config(app, log_level="warning", lifespan="off"))
    yield live
    live.close()


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    from tests.helpers.images import rgba_blob

    return open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()


class Recorded(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def server_log():
    """What the server logs meanwhile (uvicorn.error: where an unexpected error's traceback goes)."""
    handler = Recorded()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def exchange(server, request: bytes, closing: bool = False) -> tuple:
    """(status, headers, body, seconds, closed) of one raw request's answer, read whole by its Content-Length; closed
    (asked with `closing`, else None): the server closed the connection after it."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"the connection closed without an answer (got {data[:200]!r})"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = s.recv(65536)
            assert chunk, "the answer was cut"
            body += chunk
        seconds, closed = time.monotonic() - start, None
        if closing:
            s.settimeout(5)
            try:
                closed = s.recv(65536) == b""
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
    return int(lines[0].split()[1]), headers, body, seconds, closed


def head(path: str, ctype: str, length=None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n{framing}\r\n{extra}\r\n"
            ).encode()


def post(path: str, ctype: str, body: bytes) -> bytes:
    return head(path, ctype, len(body)) + body


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def part(name: str, value: bytes, filename=None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    kind = "Content-Type: image/png\r\n" if filename else ""
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + value + b"\r\n"


CLOSING = f"--{BOUNDARY}--\r\n".encode()


def message(path: str, body: bytes) -> str:
    """The error message of an answer, in the shape of its endpoint's family."""
    answer = json.loads(body)
    if "/3d/" in path:
        assert set(answer) == {"error"} and answer["error"]["type"] == "invalid_request_error", answer
        return answer["error"]["message"]
    assert isinstance(answer["detail"], str), answer
    return answer["detail"]


def job_ids(server) -> set:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        return {j["id"] for j in c.get("/v1/jobs?limit=1000").json()["jobs"]}


def assert_quiet(records) -> None:
    loud = [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, loud


# ------------------------------------------------------------------------------------------ over the size limit

def test_a_declared_body_over_the_limit_is_one_json_413_before_it_is_read(server, server_log):
    before = job_ids(server)
    for path, ctype, start in [("/v1/jobs", "application/json", b"{"), ("/v1/jobs", FORM, b"--" + BOUNDARY.encode()),
                               ("/v1/3d/generations", "application/json", b"{"), ("/v1/3d/generations", FORM, b"--"),
                               ("/generate", "application/json", b"{"), ("/generate_no_preview", FORM, b"--")]:
        status, headers, body, seconds, closed = exchange(server, head(path, ctype, HUGE) + start, closing=True)
        assert status == 413 and headers["content-type"] == "application/json", (path, ctype, status, body)
        text = message(path, body)
        assert "larger than the server's limit of 256 MB" in text and f"{HUGE:,} bytes" in text, (path, text)
        if "/3d/" in path:
            assert json.loads(body)["error"]["code"] == "request_too_large"
        # Answered at once, unread (the 99 TB never come), and the connection closed.
        assert seconds < 5 and closed and headers["connection"] == "close", (path, seconds, closed)
    assert job_ids(server) == before
    assert_quiet(server_log)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        assert c.get("/ping").status_code == 200


def test_a_chunked_body_that_grows_past_the_limit_is_the_same_413(server, server_log, monkeypatch, blob):
    monkeypatch.setattr(server_mod, "MAX_BODY_BYTES", 8192)           # read there, at each request
    before = job_ids(server)
    filler = base64.b64encode(blob * 8)[:4000]
    image = {path: part(field, b"", filename="a.png")[:-2] + filler for path, field in FORM_PATHS.items()}
    for path, ctype, chunks in [
            ("/v1/jobs", "application/json", [b'{"images": ["', filler, filler, filler]),
            ("/v1/jobs", FORM, [image["/v1/jobs"], filler, filler]),
            ("/v1/3d/generations", "application/json", [b'{"image": "', filler, filler, filler]),
            ("/v1/3d/generations", FORM, [image["/v1/3d/generations"], filler, filler]),
            ("/generate", "application/json", [b'{"single_multi_img_input": ["', filler, filler, filler]),
            ("/generate_multi_no_preview", FORM, [image["/generate_multi_no_preview"], filler, filler])]:
        status, headers, body, _, closed = exchange(server, head(path, ctype) + chunked(*chunks), closing=True)
        assert status == 413 and headers["content-type"] == "application/json", (path, ctype, status, body)
        text = message(path, body)
        assert "larger than the server's limit of 8,192 bytes" in text and "Content-Length" not in text, text
        assert closed, path
    # At the limit, declared or chunked, a body is read as always (here: a form of nothing to make).
    at_limit = b"{}".ljust(8192)
    for request in (post("/v1/jobs", "application/json", at_limit),
                    head("/v1/jobs", "application/json") + chunked(at_limit[:5000], at_limit[5000:])):
        status, _, body, _, _ = exchange(server, request)
        assert status == 422 and "nothing to make" in message("/v1/jobs", body), (status, body)
    assert job_ids(server) == before
    assert_quiet(server_log)


# ------------------------------------------------------------------------------------------ forms cut short

def test_a_form_cut_before_its_closing_boundary_is_a_400_that_says_so(server, server_log, blob):
    before = job_ids(server)
    settings = b"".join(part(k, str(v).lower().encode()) for k, v in FAST.items() if k != "seed")
    for path, field in FORM_PATHS.items():
        fields = part(field, blob, filename="blob.png") + part("formats", b"ply") + settings
        # The last part whole but no closing boundary, or the cut inside the image: a 400 that says why, never
        # a job with a random seed nor "nothing to make".
        for body in (fields + part("seed", b"12345"), part(field, blob[:100], filename="blob.png")[:-2]):
            status, headers, answer, _, _ = exchange(server, post(path, FORM, body))
            assert status == 400 and headers["content-type"] == "application/json", (path, status, answer)
            text = message(path, answer)
            assert "the form ends before its closing boundary: the upload was cut short" in text, (path, text)
    assert job_ids(server) == before
    # The same form, closed: queued, with its last field's seed.
    fields = part("images", blob, filename="blob.png") + part("formats", b"ply") + settings
    status, _, answer, _, _ = exchange(server, post("/v1/jobs", FORM, fields + part("seed", b"12345") + CLOSING))
    assert status == 202, answer
    job = json.loads(answer)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        c.post(f"/v1/jobs/{job['id']}/cancel")
    assert job["settings"]["seed"] == 12345 and job["settings"]["randomize_seed"] is False, job["settings"]
    assert_quiet(server_log)


# ------------------------------------------------------------------------------------------ broken 3-D models

BROKEN_MESHES = [
    ("index.obj", b"v 0 0 0\nf 1 2 3000000000\n", "a face names vertex 2, but the file has 1 vertex"),
    ("nan.obj", b"v nan nan nan\nv inf 0 0\nv 0 1 0\nf 1 2 3\n",
     "2 of its vertices have coordinates that are not numbers (NaN) or are infinite, the first is vertex 1"),
    ("claims.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\nproperty float x\n"
                   b"property float y\nproperty float z\nelement face 1\nproperty list uchar int vertex_indices\n"
                   b"end_header\n" + b"\0" * 64,
     "element vertex 4,000,000,000 and element face 1, at least 48,000,000,013 bytes of data, but 64 bytes follow"),
]


def test_broken_meshes_are_a_422_at_submit(server, blob):
    before = job_ids(server)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        for name, data, words in BROKEN_MESHES:
            for kind in ("form", "json"):
                if kind == "form":
                    r = c.post("/v1/jobs", files=[("mesh", (name, data, "application/octet-stream")),
                                                  ("images", ("blob.png", blob, "image/png"))], data={"formats": "ply"})
                else:
                    r = c.post("/v1/jobs", json={"mesh": base64.b64encode(data).decode(), "mesh_name": name,
                                                 "images": [base64.b64encode(blob).decode()], "formats": ["ply"]})
                assert r.status_code == 422, (name, kind, r.status_code, r.text)
                detail = r.json()["detail"]
                assert detail.startswith(f"mesh: {name} is a damaged {name[-3:].upper()} file: "), detail
                assert words in detail, (words, detail)
    assert job_ids(server) == before
