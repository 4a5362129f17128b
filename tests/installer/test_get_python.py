"""run.sh on a computer without a suitable Python: installer/get_python.sh fetches uv from a
package index and uv installs a private CPython into the app folder's .python/.

A local HTTP server stands in for both downloads: a PEP 503 index page with uv's real wheel (uv 0.13.9 for
Linux x86-64, fetched once with `pip download`, checked against the sha256 pinned in get_python.sh) and a
python-build-standalone style archive listed in a downloads JSON that uv reads (UV_PYTHON_DOWNLOADS_JSON_URL,
uv's own setting). The archive is fake but real: its python3.11 runs this machine's CPython, and its
sysconfig data is that interpreter's, so uv's own checks of the archive pass. run.sh runs with a PATH that has
the usual tools but no Python at all, and `--launcher-help` proves the new interpreter runs the installer.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import threading
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT
SCRIPT = (ROOT / "installer" / "get_python.sh").read_text()
UV_VERSION = re.search(r"^UV_VERSION=(\S+)$", SCRIPT, re.M).group(1)
WHEEL = f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA = re.search(rf"wheel=uv-\$UV_VERSION-py3-none-manylinux_2_17_x86_64[^\n]*\n\s*sha=([0-9a-f]{{64}})",
                      SCRIPT).group(1)
ARCHIVE = "cpython-3.11.99+20990101-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz"
TOOLS = ("bash", "sh", "env", "curl", "unzip", "sha256sum", "uname", "ldd", "grep", "sed", "head", "tail", "cut",
         "sort", "ls", "mkdir", "rm", "mv", "chmod", "cat", "dirname", "tee")

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64" and all(shutil.which(t) for t in TOOLS)
         and "glibc" in " ".join(platform.libc_ver())),
    reason="run.sh's download path is tested on glibc Linux x86-64 with curl and unzip")


# ------------------------------------------------------------------------------------ the mirror

class Mirror:
    """A folder served on 127.0.0.1 that records the paths asked for."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def uv_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uv-wheel")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--platform",
           "manylinux_2_17_x86_64", "--python-version", "3.11", "--disable-pip-version-check", "-d", str(out),
           f"uv=={UV_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"pip could not download uv {UV_VERSION} (this test needs PyPI or the configured pip mirror):\n"
                    + "\n".join((proc.stdout + proc.stderr).splitlines()[-6:]))
    wheel = out / WHEEL
    assert wheel.is_file(), list(out.iterdir())
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == WHEEL_SHA        # the pin in get_python.sh
    return wheel


def python_archive() -> bytes:
    """A python-build-standalone shaped archive whose python3.11 runs this machine's CPython."""
    base = getattr(sys, "_base_executable", sys.executable)
    data_module = sysconfig._get_sysconfigdata_name()           # uv reads and patches this file
    data_file = Path(sysconfig.get_path("stdlib")) / f"{data_module}.py"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, content: bytes, mode: int = 0o644):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
        add("python/bin/python3.11", f'#!/bin/sh\nexec "{base}" "$@"\n'.encode(), 0o755)
        add(f"python/lib/python3.11/{data_module}.py", data_file.read_bytes())
    return buf.getvalue()


@pytest.fixture
def mirror(tmp_path, uv_wheel):
    root = tmp_path / "mirror"
    (root / "simple" / "uv").mkdir(parents=True)
    (root / "files").mkdir()
    shutil.copy(uv_wheel, root / "files" / WHEEL)
    # A PEP 503 page as a pip mirror serves it: a relative link with the hash in the fragment.
    (root / "simple" / "uv" / "index.html").write_text(
        f'<html><body><a href="../../files/{WHEEL}#sha256={WHEEL_SHA}">{WHEEL}</a></body></html>\n')
    archive = python_archive()
    (root / ARCHIVE).write_bytes(archive)
    m = Mirror(root)
    (root / "downloads.json").write_text(json.dumps({"cpython-3.11.99-linux-x86_64-gnu": {
        "name": "cpython", "arch": {"family": "x86_64", "variant": None}, "os": "linux", "libc": "gnu",
        "major": 3, "minor": 11, "patch": 99, "prerelease": "", "url": f"{m.url}/{ARCHIVE}",
        "sha256": hashlib.sha256(archive).hexdigest(), "variant": None, "build": "20990101"}}))
    yield m
    m.close()


# ---------------------------------------------------------------------------------------- the app

def make_app(tmp_path: Path) -> Path:
    app = tmp_path / "My Apps" / "Trellis Desktop"          # spaces on purpose
    shutil.copytree(ROOT / "installer", app / "installer", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("run.sh", "requirements_1.txt", "requirements_2.txt", "requirements_test.txt"):
        shutil.copy(ROOT / name, app / name)
    return app


def no_python_env(tmp_path: Path, **extra: str) -> dict:
    """The usual tools, no Python: what run.sh sees on a machine that has none."""
    bin_dir = tmp_path / "bin-without-python"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool in TOOLS:
            os.symlink(shutil.which(tool), bin_dir / tool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRELLIS_", "UV_", "PIP_INDEX"))}
    env.update({"PATH": str(bin_dir), "HOME": str(tmp_path / "home"), **extra})
    return env


def run_sh(app: Path, env: dict, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(app / "run.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False, stdin=stdin, cwd=str(app.parent))


def private_pythons(app: Path) -> list[Path]:
    return sorted((app / ".python").glob("cpython-3.11.*/bin/python3.11"))


# ---------------------------------------------------------------------------------------- the cases

def test_without_a_terminal_nothing_is_downloaded_and_nothing_waits(tmp_path, mirror):
    app = make_app(tmp_path)
    env = no_python_env(tmp_path, TRELLIS_UV_INDEX_URL=f"{mirror.url}/simple")
    proc = run_sh(app, env)                         # stdin is not a terminal: CI, a pipe, a desktop launcher
    assert proc.returncode == 1
    assert "No terminal to ask in" in proc.stderr and "TRELLIS_FETCH_PYTHON=1" in proc.stderr
    assert "needs Python 3.11 or 3.12" in proc.stderr and "sudo apt install python3.11" in proc.stderr
    assert mirror.requests == [] and not (app / ".python").exists()


def test_declined_by_setting(tmp_path, mirror):
    app = make_app(tmp_path)
    proc = run_sh(app, no_python_env(tmp_path, TRELLIS_FETCH_PYTHON="0", TRELLIS_UV_INDEX_URL=f"{mirror.url}/simple"))
    assert proc.returncode == 1 and "needs Python 3.11 or 3.12" in proc.stderr
    assert mirror.requests == []


def test_fetches_a_private_python_then_reuses_it(tmp_path, mirror):
    app = make_app(tmp_path)
    env = no_python_env(tmp_path, TRELLIS_FETCH_PYTHON="1", TRELLIS_UV_INDEX_URL=f"{mirror.url}/simple",
                        UV_PYTHON_DOWNLOADS_JSON_URL=f"{mirror.url}/downloads.json")
    proc = run_sh(app, env, "--launcher-help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m installer launch" in proc.stdout           # the new interpreter ran the installer
    assert f"Downloading uv {UV_VERSION}" in proc.stderr and "Python 3.11 installed" in proc.stderr
    [py] = private_pythons(app)
    assert py.parent.parent.name == "cpython-3.11.99-linux-x86_64-gnu"
    assert (app / ".python" / "uv" / "uv").is_file()
    assert not list((app / ".python" / "downloads").glob("*.whl*"))    # the wheel is not kept
    asked = mirror.requests
    assert asked[0] == "/simple/uv/" and asked[1] == f"/files/{WHEEL}"
    assert "/downloads.json" in asked and f"/{ARCHIVE}" in asked
    assert not (tmp_path / "home" / ".local").exists()                 # nothing outside the app folder

    # Later runs use it without asking or downloading, even offline.
    mirror.requests.clear()
    mirror.close()
    proc = run_sh(app, no_python_env(tmp_path), "--launcher-help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m installer launch" in proc.stdout and proc.stderr == ""
    assert mirror.requests == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_says_so(tmp_path):
    app = make_app(tmp_path)
    env = no_python_env(tmp_path, TRELLIS_FETCH_PYTHON="1",
                        TRELLIS_UV_INDEX_URL=f"http://127.0.0.1:{_closed_port()}/simple")
    proc = run_sh(app, env)
    assert proc.returncode == 1
    assert "seems to be offline" in proc.stderr and "HTTPS_PROXY" in proc.stderr
    assert "needs Python 3.11 or 3.12" in proc.stderr                  # and how to install one by hand
    assert not (app / ".python" / "uv" / "uv").exists() and private_pythons(app) == []


@pytest.mark.slow
def test_python_download_offline_says_so(tmp_path, mirror):
    """uv itself arrives, then the Python download cannot connect."""
    app = make_app(tmp_path)
    json_file = mirror.root / "downloads.json"
    json_file.write_text(json_file.read_text().replace(mirror.url, f"http://127.0.0.1:{_closed_port()}"))
    env = no_python_env(tmp_path, TRELLIS_FETCH_PYTHON="1", TRELLIS_UV_INDEX_URL=f"{mirror.url}/simple",
                        UV_PYTHON_DOWNLOADS_JSON_URL=f"{mirror.url}/downloads.json")
    proc = run_sh(app, env)
    assert proc.returncode == 1
    assert "uv could not install Python 3.11" in proc.stderr and "seems to be offline" in proc.stderr
    assert private_pythons(app) == []


def test_a_wheel_that_is_not_the_published_one_is_refused(tmp_path, mirror):
    app = make_app(tmp_path)
    wheel = mirror.root / "files" / WHEEL
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF                    # one byte changed, same name and size
    wheel.write_bytes(bytes(data))
    env = no_python_env(tmp_path, TRELLIS_FETCH_PYTHON="1", TRELLIS_UV_INDEX_URL=f"{mirror.url}/simple")
    proc = run_sh(app, env)
    assert proc.returncode == 1
    assert "is not the published one" in proc.stderr and WHEEL_SHA in proc.stderr
    assert not (app / ".python" / "uv").exists() and not list((app / ".python" / "downloads").glob("*.whl*"))


@pytest.mark.parametrize("answer", ["n", "y"])
def test_in_a_terminal_it_asks(tmp_path, mirror, answer):
    """A real pseudo-terminal: the question is asked; 'n' changes nothing, 'y' installs (with progress)."""
    import pty
    import select

    app = make_app(tmp_path)
    env = no_python_env(tmp_path, TRELLIS_UV_INDEX_URL=f"{mirror.url}/simple",
                        UV_PYTHON_DOWNLOADS_JSON_URL=f"{mirror.url}/downloads.json", TERM="dumb")
    pid, fd = pty.fork()
    if pid == 0:                                    # the child: run.sh on the terminal
        os.chdir(app.parent)
        os.execve(shutil.which("bash"), ["bash", str(app / "run.sh"), "--launcher-help"], env)
    out, answered = b"", False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            assert ready, f"no output for 120 s:\n{out.decode(errors='replace')}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:                         # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"Download it now? [Y/n]" in out:
                os.write(fd, answer.encode() + b"\n")
                answered = True
    finally:
        _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert answered, text
    if answer == "n":
        assert os.waitstatus_to_exitcode(status) == 1 and "needs Python 3.11 or 3.12" in text
        assert mirror.requests == [] and private_pythons(app) == []
    else:
        assert os.waitstatus_to_exitcode(status) == 0, text
        assert "usage: python -m installer launch" in text and len(private_pythons(app)) == 1
