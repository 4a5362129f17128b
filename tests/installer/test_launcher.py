"""The one-click launcher TrellisDesktop: its steps (with a stand-in Python that records its calls), and the
real PyInstaller build, whose `--dry-run` must print the plan (issue #6: "The PyInstaller build runs in CI on
Linux and its --dry-run prints the plan")."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from installer import launcher, licences

from tests.helpers.repo import ROOT
POSIX = os.name != "nt"


def fake_python(tmp_path: Path, check: int = 0, install: int = 0, launch: int = 0) -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    exe = tmp_path / "fakepython"
    exe.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$*" >> "{log}"
        case "$*" in
          *"installer check"*) exit {check};;
          *"installer install"*) exit {install};;
          *"installer launch"*) exit {launch};;
        esac
        exit 0
    """))
    exe.chmod(0o755)
    return exe, log


def run_launcher(*args: str, python: Path | str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRELLIS_PYTHON": str(python), "TRELLIS_NO_PAUSE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "installer" / "launcher.py"), *args], capture_output=True,
                          text=True, check=False, timeout=120, env=env, cwd=str(ROOT))


def calls(log: Path) -> list[str]:
    return [line[3:] if line.startswith("-m ") else "probe" for line in log.read_text().splitlines()]


@pytest.mark.skipif(not POSIX, reason="the stand-in Python is a shell script")
@pytest.mark.parametrize("check, install, launch, expected_calls, rc", [
    (10, 0, 0, ["probe", "installer check --cpu --port 7861", "installer install --cpu --port 7861",
                "installer launch --cpu --port 7861"], 0),                                        # first run
    (0, 0, 0, ["probe", "installer check --cpu --port 7861", "installer launch --cpu --port 7861"], 0),  # later run
    (10, 1, 0, ["probe", "installer check --cpu --port 7861", "installer install --cpu --port 7861"], 1),  # failed
    (0, 0, 7, ["probe", "installer check --cpu --port 7861", "installer launch --cpu --port 7861"], 7),  # app's code
], ids=["first_run", "later_run", "install_fails", "app_exit_code"])
def test_launcher_steps(tmp_path, check, install, launch, expected_calls, rc):
    exe, log = fake_python(tmp_path, check, install, launch)
    proc = run_launcher("--cpu", "--port", "7861", python=exe)
    assert proc.returncode == rc, proc.stderr
    assert calls(log) == expected_calls


def test_launcher_without_python_says_what_to_install(tmp_path):
    proc = run_launcher("--cpu", python=tmp_path / "no-such-python")
    assert proc.returncode == 1
    assert "needs 64-bit Python 3.11" in proc.stderr and "python3.11" in proc.stderr


@pytest.mark.skipif(not POSIX, reason="the stand-in Python is a shell script")
def test_launcher_uses_the_apps_private_python_first(tmp_path, monkeypatch):
    """A Python in .python/ (installer/get_python.sh made it) is used before the system's."""
    app = tmp_path / "app"
    shutil.copytree(ROOT / "installer", app / "installer", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements_2.txt", app / "requirements_2.txt")
    private = app / ".python" / "cpython-3.11.99-linux-x86_64-gnu" / "bin"
    private.mkdir(parents=True)
    exe, log = fake_python(tmp_path, check=0)
    shutil.copy(exe, private / "python3.11")
    assert launcher.private_pythons(app, windows=False) == [[str(private / "python3.11")]]
    env = {k: v for k, v in os.environ.items() if k != "TRELLIS_PYTHON"}
    proc = subprocess.run([sys.executable, str(app / "installer" / "launcher.py"), "--app-dir", str(app), "--cpu"],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**env, "TRELLIS_NO_PAUSE": "1"}, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert calls(log) == ["probe", "installer check --app-dir " + str(app) + " --cpu",
                          "installer launch --app-dir " + str(app) + " --cpu"]


def test_launcher_finds_the_app_folder(tmp_path, monkeypatch):
    app = tmp_path / "app"
    (app / "installer").mkdir(parents=True)
    (app / "installer" / "__init__.py").write_text("")
    (app / "requirements_2.txt").write_text("")
    (app / "dist" / "TrellisDesktop").mkdir(parents=True)
    assert launcher.find_app_dir(app / "dist" / "TrellisDesktop") == app.resolve()
    assert launcher.find_app_dir(tmp_path) is None
    monkeypatch.delenv("TRELLIS_PYTHON", raising=False)
    assert launcher.python_candidates(windows=True) == [["py", "-3.11"], ["py", "-3.12"], ["python"]]
    assert launcher.python_candidates(windows=False) == [["python3.11"], ["python3.12"], ["python3"]]
    monkeypatch.setenv("TRELLIS_PYTHON", "/opt/py/bin/python3")
    assert launcher.python_candidates() == [["/opt/py/bin/python3"]]


def test_build_tool_licences_are_allowed():
    report = licences.check_distributions(list(licences.SHIPPED_BUILD_TOOLS))
    if "pyinstaller" in report.missing:
        pytest.skip("PyInstaller is not installed (requirements_test.txt)")
    assert report.rejected == [], report.summary()
    assert {"pyinstaller", "pyinstaller-hooks-contrib"} <= {licences.normalise(i.name) for i in report.allowed}


# ------------------------------------------------------------------------------ the frozen build

@pytest.fixture(scope="module")
def built_launcher(tmp_path_factory):
    pytest.importorskip("PyInstaller", reason="PyInstaller is not installed (requirements_test.txt)")
    from installer.build_launcher import build

    out = tmp_path_factory.mktemp("launcher")
    exe = build(out / "dist", out / "work", onefile=True)
    assert exe.is_file()
    return exe


@pytest.mark.slow
def test_built_launcher_dry_run_prints_the_plan(built_launcher, tmp_path):
    # Unpacked next to the app as a user would have it: <app>/dist/TrellisDesktop (found one level up).
    app = tmp_path / "app"
    shutil.copytree(ROOT / "installer", app / "installer", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements_1.txt", "requirements_2.txt", "requirements_test.txt"):
        shutil.copy(ROOT / name, app / name)
    (app / "dist").mkdir()
    exe = app / "dist" / built_launcher.name
    shutil.copy(built_launcher, exe)
    env = {**os.environ, "TRELLIS_PYTHON": sys.executable}
    proc = subprocess.run([str(exe), "--dry-run", "--cpu"], capture_output=True, text=True, check=False, timeout=120,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "nothing is installed or started" in out
    assert f"app folder  {app.resolve()}" in out and f"Python      {sys.executable}" in out
    assert ".venv       install needed: not installed yet" in out
    for step in ("check", "install", "launch"):
        assert f"-m installer {step} --cpu" in out
    assert "Trellis Desktop install plan" in out and "torch==2.13.0+cpu" in out
    assert not (app / ".venv").exists() and not (app / "logs").exists()       # a dry run changes nothing

    # Somewhere else it says that it cannot find the app, still without failing.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(built_launcher, lone / built_launcher.name)
    proc = subprocess.run([str(lone / built_launcher.name), "--dry-run"], capture_output=True, text=True,
                          check=False, timeout=120, env=env)
    assert proc.returncode == 0 and "app folder  NOT FOUND" in proc.stdout
