"""`python -m desktop api` as a user starts it, in a subprocess that the test stops with a signal."""
import base64
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.helpers.repo import ROOT_DIR as ROOT
from tests.helpers.rest import TIMEOUT
from tests.helpers.servers import free_port


class ApiProcess:
    """`python -m desktop api` in a subprocess (its own temp folder), stopped by the test."""

    def __init__(self, model, outputs, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(tmp)}
        env.pop("TRELLIS_DESKTOP_API_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "desktop", "api", "--model", str(model), "--port",
                                     str(self.port), "--outputs", str(outputs), "--device", "cpu"],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(self.url + "/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                raise AssertionError(f"the server did not start: {self.proc.communicate()[1]}")
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=TIMEOUT)

    def submit(self, image: bytes, **settings) -> str:
        r = self.client.post("/v1/jobs", json={"images": [base64.b64encode(image).decode()], **settings})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def wait_stage(self, job_id: str, stages) -> dict:
        deadline = time.time() + TIMEOUT
        while True:
            info = self.client.get(f"/v1/jobs/{job_id}").json()
            if info["progress"]["stage"] in stages:
                return info
            assert info["state"] in ("queued", "running") and time.time() < deadline, info
            time.sleep(0.05)

    def wait_done(self, job_id: str) -> dict:
        deadline = time.time() + TIMEOUT
        while True:
            info = self.client.get(f"/v1/jobs/{job_id}").json()
            if info["state"] in ("done", "failed", "cancelled"):
                return info
            assert time.time() < deadline, info
            time.sleep(0.05)

    def stop(self, sig=signal.SIGINT):
        self.client.close()
        self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the server did not stop on {sig!r}: {err}")
        return self.proc.returncode, err
