"""Stopping the browser app mid-job: a real `gradio_main.py` subprocess on the tiny pipeline (CPU), a job
started through its gradio_client endpoint, real signals; the same clean stop as the API server's
(desktop/stopping.py). Also the Windows console-close path of that code, run here on a real runner."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from desktop import stopping
from desktop.jobs import JobRunner
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob
from tests.helpers.servers import free_port

from tests.helpers.repo import ROOT_DIR as ROOT
TIMEOUT = 120
SLOW = {"seed": 2, "ss_steps": 500, "slat_steps": 500, "formats": ["ply", "mp4"]}


class App:
    """`python gradio_main.py` in a subprocess with its own temp folder; a job started with gradio_client."""

    def __init__(self, model, outputs, tmp):
        port = free_port()
        env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "gradio_main.py"), "--model", str(model),
                                      "--port", str(port), "--outputs", str(outputs), "--device", "cpu",
                                      "--no-browser"],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self.proc.stdout.readline()             # "... running at http://...", or "" if it died
        match = re.search(r"running at (http://\S+)", line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"the app did not start: {line}{''.join(self.stderr)}")
        self.url = match.group(1)

    def start_slow_job(self, image_path) -> str:
        from gradio_client import Client, handle_file

        self.client = Client(self.url, verbose=False)
        self.call = self.client.submit(handle_file(str(image_path)), SLOW, api_name="/generate")
        deadline = time.time() + TIMEOUT
        while True:
            outputs = self.call.outputs()
            if outputs and outputs[-1][0]["progress"]["stage"] in ("sparse_structure", "slat"):
                return outputs[-1][0]["id"]
            assert time.time() < deadline and not self.call.done(), outputs
            time.sleep(0.05)

    def wait_exit(self) -> tuple:
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the app did not stop: {''.join(self.stderr)}")
        time.sleep(0.2)                                # the reader thread takes the last lines
        return self.proc.returncode, "".join(self.stderr)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return rgba_blob(tmp_path_factory.mktemp("img") / "blob.png")


def hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")
# SIGHUP takes the same handler (desktop/stopping.py); tests/desktop/api/test_api_stop.py sends it to the API server.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_signal_mid_job_stops_the_app_cleanly(tiny_pipeline_dir, tmp_path, image, sig):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    app = App(tiny_pipeline_dir, out, tmp)
    try:
        job_id = app.start_slow_job(image)
    finally:
        app.proc.send_signal(sig)
    code, err = app.wait_exit()
    assert code == 0, err
    assert "Traceback" not in err and "terminate called" not in err, err
    assert "Stopping: the running job stops at its next step" in err and "Stopped." in err, err
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert folder.name.endswith(job_id[:8])
    record = json.loads((folder / "error.json").read_text())
    assert record["state"] == "interrupted" and record["kind"] == "interrupted"
    assert f"the app received {signal.Signals(sig).name}" in record["error"], record
    assert not (folder / "timings.json").exists() and not (folder / "model.ply").exists()
    assert (folder / "settings.json").is_file() and (folder / "input.png").is_file()
    assert hidden(folder) == [] and hidden(out) == []            # no partial file, no lock left
    assert [n for n in os.listdir(tmp) if n != "gradio"] == []   # no temp folder of ours left


@pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")
@pytest.mark.slow
def test_second_ctrl_c_stops_the_app_at_once_with_130(tiny_pipeline_dir, tmp_path, image):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    app = App(tiny_pipeline_dir, out, tmp)
    app.start_slow_job(image)
    app.proc.send_signal(signal.SIGINT)
    deadline = time.time() + TIMEOUT
    # The first Ctrl-C is being handled ("Stopping"), or the job already stopped at its next step ("Stopped.").
    while not any("Stopping" in line or "Stopped." in line for line in app.stderr):
        assert time.time() < deadline and app.proc.poll() is None, "".join(app.stderr)
        time.sleep(0.01)
    app.proc.send_signal(signal.SIGINT)
    code, err = app.wait_exit()
    assert code in (0, 130), err             # 0 when the job had stopped and the app exited before the second Ctrl-C
    assert "Traceback" not in err and "terminate called" not in err, err
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    if "Stopped without waiting" in err:     # cut short: the folder is marked at the next start
        assert code == 130, err
    else:
        assert "Stopped." in err, err
        assert json.loads((folder / "error.json").read_text())["state"] == "interrupted"


def test_console_close_event_stops_the_job_before_the_handler_returns(tiny_pipeline_dir, tmp_path, image):
    """What Windows does when the console window is closed: it calls the console control handler in a
    thread of its own and ends the process when the handler returns. Here that handler runs (on a real
    runner and job) exactly as Windows would call it; Ctrl-C and Ctrl-Break are left to the signals."""
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    stop = stopping.StopSignals(runner, "the app")
    assert stop.console_event(stopping.CTRL_C_EVENT) == 0 and stop.console_event(stopping.CTRL_BREAK_EVENT) == 0
    assert not stop.requested.is_set()
    settings = GenerationSettings.from_preset("fast", seed=2, ss_steps=500, slat_steps=500, formats=("ply",))
    job = runner.submit([str(image)], settings)
    deadline = time.time() + TIMEOUT
    while job.progress.stage not in ("sparse_structure", "slat"):
        assert time.time() < deadline and job.state in ("queued", "running"), job.to_dict()
        time.sleep(0.02)
    threading.Thread(target=stop._stop_jobs, daemon=True).start()      # what install() starts
    answer = []
    handler = threading.Thread(target=lambda: answer.append(stop.console_event(stopping.CTRL_CLOSE_EVENT)))
    handler.start()
    stop.wait(0.05)                    # the main thread's wait ends (the server loop would end here)
    assert handler.is_alive()          # the handler holds the process while the job stops
    assert stop.finish() == 0
    handler.join(5)
    assert answer == [1]
    assert job.state == "cancelled" and job.error_kind == "interrupted"
    assert "the app stopped: the console window was closed" in job.error
    record = json.loads((tmp_path / "out" / os.path.basename(job.out_dir) / "error.json").read_text())
    assert record["state"] == "interrupted"
