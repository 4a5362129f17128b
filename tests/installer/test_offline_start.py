"""The first start offline with the user's own model folder (`./run.sh --model DIR`): only u2net (background
removal) is missing and cannot be downloaded. `python -m installer launch` runs as run.sh runs it, in an app folder
whose .venv is this test's environment (its interpreter and packages, linked): it ends with exit 4 and a short
message whose first lines give the command that starts without the file, and that command starts the app."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from installer.launch import skip_weights_command
from installer.options import parse
from tests.helpers.install_apps import good_state, make_app
from tests.helpers.servers import closed_port_url, free_port

from tests.helpers.repo import ROOT


def app_folder(tmp_path: Path):
    """An app folder (requirements, install record) whose .venv is a view of this test's venv, and whose code is
    the repository's (linked), so that the launcher's `.venv/<python> -m desktop ui` really starts the app."""
    layout = make_app(tmp_path)
    venv = layout.venv_python().parent.parent
    (venv / "bin").mkdir(parents=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    layout.venv_python().symlink_to(base)
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if sys.prefix == sys.base_prefix or not cfg.is_file() or os.name != "posix":
        pytest.skip("needs a POSIX venv to lend its packages to the app folder's .venv")
    shutil.copyfile(cfg, venv / "pyvenv.cfg")
    (venv / "lib").symlink_to(Path(sys.prefix) / "lib")
    for name in ("desktop", "trellis", "assets", "extensions"):
        (layout.app_dir / name).symlink_to(ROOT / name)
    layout.state_file.write_text(json.dumps(good_state(layout, env={})))
    return layout


def launch(layout, *args, **kw):
    env = {**os.environ, "TRELLIS_U2NET_URL": closed_port_url() + "/u2net.onnx", "PYTHONPATH": str(ROOT)}
    for var in ("TRELLIS_DESKTOP_MODEL", "HF_ENDPOINT"):
        env.pop(var, None)
    return subprocess.Popen([sys.executable, "-m", "installer", "launch", "--app-dir", str(layout.app_dir), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.skipif(os.name != "posix", reason="run.sh's start; the stand-in venv is POSIX")
def test_offline_start_with_a_model_folder_says_skip_weights_first(tiny_pipeline_dir, tmp_path):
    layout = app_folder(tmp_path)
    port = str(free_port())
    started = time.time()
    proc = launch(layout, "--model", tiny_pipeline_dir, "--no-browser", "--port", port)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err                                   # EXIT_WEIGHTS, as the README says
    lines = err.strip().splitlines()
    head = next(i for i, line in enumerate(lines) if "cannot start" in line)
    assert "1 model file(s) are missing" in lines[head] and "Connection refused" in lines[head], err
    fix = lines[head + 1]
    assert fix == f"Quickest fix: start without it: ./run.sh --skip-weights --model {tiny_pipeline_dir} " \
                  f"--no-browser --port {port}", err
    assert "only for removing photo backgrounds" in lines[head + 2] and "Remove background" in lines[head + 2]
    # The whole answer fits a terminal: the remedy, three other ways, the file; the reason is said once.
    assert len(lines) <= 16 and err.count("Connection refused") == 3, err   # two retries and the headline
    assert str(layout.u2net_dir / "u2net.onnx") in err and not (layout.u2net_dir / "u2net.onnx").exists()
    assert time.time() - started < 60

    # The suggested command, as the launcher gets it: the app starts (and Ctrl-C stops it, exit 0).
    args = skip_weights_command(parse(["--model", tiny_pipeline_dir, "--no-browser", "--port", port])).split()[1:]
    assert args[0] == "--skip-weights"
    proc = launch(layout, *args, "--device", "cpu")
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.time() + 120
        while not any("running at http://" in line for line in list(lines)):
            assert proc.poll() is None and time.time() < deadline, "".join(lines) + proc.stderr.read()
            time.sleep(0.2)
        assert f"running at http://127.0.0.1:{port}" in "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0


def test_the_suggested_command_keeps_the_users_options():
    if os.name == "nt":
        pytest.skip("run.bat's quoting")
    assert skip_weights_command(parse(["--cpu", "--model", "/my models/x", "--port", "7861"])) == \
        "./run.sh --cpu --skip-weights --model '/my models/x' --port 7861"
    assert skip_weights_command(parse([])) == "./run.sh --skip-weights"
