"""The REST server's own address, opened in a browser: `GET /` redirects to the API docs, on the real command
(`python -m desktop api`, before and after its runner exists) and on a server with a token (the docs stay open)."""
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.servers import LiveServer

from tests.helpers.repo import ROOT_DIR as ROOT


@pytest.mark.skipif(os.name != "posix", reason="stops the server with SIGINT")
def test_the_command_redirects_its_address_to_the_docs(tiny_pipeline_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRELLIS_DESKTOP_API_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "desktop", "api", "--model", tiny_pipeline_dir, "--port", str(port),
                             "--outputs", str(tmp_path / "out"), "--device", "cpu", "--no-warmup"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                home = httpx.get(url + "/", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "slow"
                time.sleep(0.1)
        assert home.status_code == 307 and home.headers["location"] == "/docs", (home.status_code, home.headers)
        docs = httpx.get(url + "/", follow_redirects=True, timeout=30)
        assert docs.status_code == 200 and str(docs.url) == url + "/docs"
        assert "swagger-ui" in docs.text.lower() and "Trellis Desktop API" in docs.text
        # Only GET goes there: / is no endpoint, and the schema does not list it.
        assert httpx.post(url + "/", timeout=30).status_code == 405
        assert "/" not in httpx.get(url + "/openapi.json", timeout=30).json()["paths"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_with_a_token_the_address_still_leads_to_the_docs(tiny_pipeline_dir, tmp_path):
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner, token="home-token-0123456789"))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v1/health").status_code == 401                 # the API itself needs the token
            home = c.get("/")
            assert home.status_code == 307 and home.headers["location"] == "/docs"
            assert c.get("/", follow_redirects=True).status_code == 200
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)
