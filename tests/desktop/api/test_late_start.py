"""The API server answers before its job runner exists (desktop/jobs/late.py): /ping and the docs at once, the rest
waits for the runner off the event loop; a runner that cannot be made answers 503 and ends the command with 1.
A real uvicorn server on the tiny pipeline (CPU), a gate holding the runner's making back."""
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from desktop.api.server import create_app
from desktop.jobs import JobRunner
from desktop.jobs.late import LateRunner, RunnerNotStarted
from tests.helpers.repo import ROOT_DIR as ROOT
from tests.helpers.servers import LiveServer, free_port

TIMEOUT = 60


@pytest.fixture
def gated(tiny_pipeline_dir, tmp_path):
    gate = threading.Event()

    def make():
        gate.wait(TIMEOUT)
        return JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    late = LateRunner(make)
    server = LiveServer(create_app(late))
    yield gate, late, server
    gate.set()
    server.close()
    late.wait(TIMEOUT).shutdown(cancel=True, wait=True, timeout=30)


def test_ping_and_docs_answer_while_the_runner_is_made_and_the_rest_waits_for_it(gated):
    gate, late, server = gated
    answers = {}

    def health():
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            answers["health"] = c.get("/v1/health")
            answers["at"] = time.monotonic()
    waiting = threading.Thread(target=health)
    waiting.start()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        time.sleep(0.3)
        assert "health" not in answers and not late.ready()          # still waiting, the loop still serving
        assert c.get("/ping").json()["status"] == "running"
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
        opened = time.monotonic()
        gate.set()
        waiting.join(TIMEOUT)
        assert answers["at"] >= opened and answers["health"].status_code == 200
        assert answers["health"].json()["status"] == "ok" and late.ready() and late.error is None
        assert c.get("/v1/jobs").json()["jobs"] == []


def test_a_runner_that_cannot_be_made_answers_503_with_the_reason(tmp_path):
    def make():
        raise ValueError("device 'cuda:3' requested but CUDA is not available here")
    late = LateRunner(make)
    server = LiveServer(create_app(late))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            r = c.get("/v1/health")
            assert r.status_code == 503 and "could not start: device 'cuda:3'" in r.json()["detail"]
            assert c.get("/ping").status_code == 200
    finally:
        server.close()
    with pytest.raises(RunnerNotStarted, match="cuda:3"):
        late.wait()


def test_the_command_ends_with_1_and_the_reason_when_its_runner_cannot_start(tiny_pipeline_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("asks for a GPU this machine has: the runner would start")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRELLIS_DESKTOP_API_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "desktop", "api", "--model", tiny_pipeline_dir, "--device", "cuda:3",
                           "--port", str(free_port()), "--outputs", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "error: device 'cuda:3' requested but CUDA is not available" in proc.stderr
    assert not (tmp_path / "out").exists()
    # The runner (PyTorch's import, the device) is made only once the port answers: the address comes first.
    assert proc.stderr.index("Trellis Desktop API on") < proc.stderr.index("error: device 'cuda:3'")


def test_a_runner_made_later_waits_for_start_and_starts_once():
    made = []
    gate = threading.Event()

    def make():
        made.append(threading.current_thread().name)
        gate.wait(TIMEOUT)
        return "runner"
    late = LateRunner(make, start=False)
    time.sleep(0.2)
    assert not late.started and not late.ready() and made == [] and late.error is None
    late.start()
    late.start()
    assert late.started
    gate.set()
    assert late.wait(TIMEOUT) == "runner" and late.ready() and made == ["trellis-runner-start"]

