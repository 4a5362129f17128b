"""run.bat under Wine's cmd, with a stand-in python.exe (tests/data/winfake/fake_python.c, built here with
mingw-w64) that records every call and answers with configured exit codes. Each case checks the path the
batch file takes (which Python commands, in which order, with which arguments) and its exit code.

Needs `wine` and `x86_64-w64-mingw32-gcc` (Debian: apt-get install wine mingw-w64; `./run.sh test` installs
them when run as root, as CI does). A throw-away Wine prefix is made for the session (about 10 s).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT
FAKE_SOURCE = ROOT / "tests" / "data" / "winfake" / "fake_python.c"
WINE = shutil.which("wine")
GCC = shutil.which("x86_64-w64-mingw32-gcc")
PROBE = '-c "import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14) and sys.maxsize > 2 ** 32))"'

pytestmark = pytest.mark.skipif(
    not (WINE and GCC), reason="needs wine and mingw-w64 (Debian/Ubuntu: sudo apt-get install wine mingw-w64)")


def wine_path(p: Path) -> str:
    return "Z:" + str(p).replace("/", "\\")


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    base = tmp_path_factory.mktemp("wine")
    exe = base / "python.exe"
    subprocess.run([GCC, "-O2", "-o", str(exe), str(FAKE_SOURCE)], check=True, timeout=120)
    env = {**os.environ, "WINEPREFIX": str(base / "prefix"), "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml=",
           "TRELLIS_NO_PAUSE": "1"}
    for key in ("WINEPATH", "DISPLAY", "WAYLAND_DISPLAY", "TRELLIS_PYTHON"):
        env.pop(key, None)
    _boot_prefix(env, base / "prefix", base / "wineboot.log")
    yield exe, env
    subprocess.run(["wineserver", "-k"], env=env, check=False, timeout=60)


def _boot_prefix(env: dict, prefix: Path, log: Path, attempts: int = 3) -> None:
    """Make the throw-away Wine prefix. Wine's own start-up sometimes fails on a given machine for reasons of its
    own (seen in CI: wineboot exit 53, its loader unable to map kernel32.dll); a fresh prefix and a fresh
    wineserver then boot. Tries `attempts` times and fails with what Wine printed if none boots: never skips."""
    # Wine's background processes (wineserver, services.exe, ...) outlive the command that started them and
    # inherit its stdout: start them with no pipe attached (their output goes to a file), and give the cases
    # files, not pipes.
    failures = []
    for attempt in range(1, attempts + 1):
        with open(log, "wb") as out:
            quiet = {"stdin": subprocess.DEVNULL, "stdout": out, "stderr": subprocess.STDOUT}
            boot = subprocess.run(["wineboot", "-i"], env=env, check=False, timeout=300, **quiet)
            if boot.returncode == 0:
                # Persistent from here on, so the cases do not each start one (it needs the prefix to exist).
                subprocess.run(["wineserver", "-p"], env=env, check=False, timeout=60, **quiet)
                subprocess.run(["wine", "cmd", "/c", "echo", "ready"], env=env, check=False, timeout=120, **quiet)
                return
        failures.append(f"attempt {attempt}: wineboot -i exited {boot.returncode}; Wine printed:\n"
                        + log.read_text(errors="replace")[-2000:])
        subprocess.run(["wineserver", "-k"], env=env, check=False, timeout=60, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(prefix, ignore_errors=True)
    free = shutil.disk_usage(prefix.parent).free / 2 ** 20
    pytest.fail(f"could not make a Wine prefix in {prefix} ({free:.0f} MiB free there; a prefix takes ~700 MiB):\n"
                + "\n".join(failures), pytrace=False)


class BatRun:
    def __init__(self, wine, tmp_path: Path, pythons=("python.exe",), exit_codes: dict | None = None):
        exe, self.env = wine
        self.app = tmp_path / "My Apps" / "Trellis Desktop"      # spaces on purpose
        self.app.mkdir(parents=True)
        shutil.copy(ROOT / "run.bat", self.app / "run.bat")
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for name in pythons:
            shutil.copy(exe, self.bin / name)
        lines = [f"{k}\t{v}" for k, v in (exit_codes or {}).items()]
        (self.bin / "exit_codes.txt").write_text("\n".join(lines) + "\n")
        self.log = self.bin / "calls.log"

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if any(self.bin.glob("*.exe")):
            env["WINEPATH"] = wine_path(self.bin)
        out_file, err_file = self.bin.parent / "stdout.txt", self.bin.parent / "stderr.txt"
        with open(out_file, "wb") as out, open(err_file, "wb") as err:
            # Started from another folder: run.bat must cd to its own.
            proc = subprocess.run(["wine", "cmd", "/c", wine_path(self.app / "run.bat"), *args], env=env,
                                  stdout=out, stderr=err, check=False, timeout=120, cwd=str(self.bin.parent),
                                  stdin=subprocess.DEVNULL)
        proc.stdout = out_file.read_text(errors="replace").replace("\r\n", "\n")
        proc.stderr = err_file.read_text(errors="replace")
        return proc

    def calls(self) -> list[tuple[str, str, str, str]]:
        if not self.log.exists():
            return []
        return [tuple(line.rstrip("\r").split("\t")) for line in self.log.read_text().splitlines()]


def steps(run: BatRun) -> list[str]:
    return [args.strip() if "-m installer" in args else f"{exe} probe" for exe, args, _, _ in run.calls()]


def test_first_run_installs_then_launches(wine, tmp_path):
    run = BatRun(wine, tmp_path, exit_codes={"-m installer check": 10})
    proc = run("--cpu", "test", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert steps(run) == ["python.exe probe", "-m installer check --cpu test -q", "-m installer install --cpu test -q",
                          "-m installer launch --cpu test -q"]
    assert run.calls()[0][1].strip() == PROBE
    assert all(c[2] == wine_path(run.app) for c in run.calls())            # ran in the app folder
    assert all(c[3] == "PYTHONNOUSERSITE=1" for c in run.calls())           # no user site-packages


def test_later_run_only_launches(wine, tmp_path):
    run = BatRun(wine, tmp_path)                      # check answers 0: installed and up to date
    proc = run("--port", "7861")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert steps(run) == ["python.exe probe", "-m installer check --port 7861", "-m installer launch --port 7861"]


def test_no_python_found(wine, tmp_path):
    run = BatRun(wine, tmp_path, pythons=())
    proc = run()
    assert proc.returncode == 1
    assert "needs 64-bit Python 3.11" in proc.stdout and "winget install Python.Python.3.11" in proc.stdout
    assert run.calls() == []


def test_too_old_python_counts_as_none(wine, tmp_path):
    run = BatRun(wine, tmp_path, exit_codes={"sys.version_info": 1})
    proc = run()
    assert proc.returncode == 1 and "needs 64-bit Python 3.11" in proc.stdout
    assert steps(run) == ["python.exe probe"]


def test_failed_install_stops_with_its_exit_code(wine, tmp_path):
    run = BatRun(wine, tmp_path, exit_codes={"-m installer check": 10, "-m installer install": 1})
    proc = run()
    assert proc.returncode == 1
    assert steps(run) == ["python.exe probe", "-m installer check", "-m installer install"]     # no launch
    assert "could not be installed (exit status 1)" in proc.stdout and "logs\\installer.log" in proc.stdout


def test_check_error_and_app_exit_code_are_passed_on(wine, tmp_path):
    run = BatRun(wine, tmp_path, exit_codes={"-m installer check": 2})
    assert run("--bad").returncode == 2 and steps(run) == ["python.exe probe", "-m installer check --bad"]
    run2 = BatRun(wine, tmp_path / "b", exit_codes={"-m installer launch": 3})
    assert run2().returncode == 3


def test_py_launcher_is_preferred(wine, tmp_path):
    run = BatRun(wine, tmp_path, pythons=("py.exe", "python.exe"))
    assert run("--cpu").returncode == 0
    calls = run.calls()
    assert [c[0] for c in calls] == ["py.exe", "py.exe", "py.exe"]
    assert calls[0][1].startswith("-3.11 -c ") and calls[1][1].strip() == "-3.11 -m installer check --cpu"


# ----------------------------------------------------------------- a private Python

def test_private_python_comes_first(wine, tmp_path):
    """.python\\cpython-3.11.*\\python.exe (made by installer\\get_python.ps1) is used before any other Python."""
    run = BatRun(wine, tmp_path)                                         # a system python.exe is there too
    private = run.app / ".python" / "cpython-3.11.99-windows-x86_64-none"
    private.mkdir(parents=True)
    shutil.copy(run.bin / "python.exe", private / "python.exe")
    assert run("--cpu").returncode == 0
    assert run.calls() == []                                             # the system one was not even probed
    used = [line.split("\t")[1].strip() for line in (private / "calls.log").read_text().splitlines()]
    assert used == [PROBE, "-m installer check --cpu", "-m installer launch --cpu"]


@pytest.fixture
def stand_in_powershell(wine):
    """Windows PowerShell's own path in the Wine prefix holds the recording stand-in for one test."""
    exe, env = wine
    ps_dir = Path(env["WINEPREFIX"]) / "drive_c" / "windows" / "system32" / "WindowsPowerShell" / "v1.0"
    ps_dir.mkdir(parents=True, exist_ok=True)
    ps = ps_dir / "powershell.exe"
    saved = ps.read_bytes() if ps.exists() else None
    shutil.copy(exe, ps)
    yield ps_dir
    for name in ("calls.log", "exit_codes.txt"):
        (ps_dir / name).unlink(missing_ok=True)
    if saved is None:
        ps.unlink()
    else:
        ps.write_bytes(saved)


@pytest.mark.parametrize("answer", [3, 1], ids=["declined_or_no_console", "download_failed"])
def test_no_python_runs_the_download_helper(wine, tmp_path, stand_in_powershell, answer):
    """No Python: run.bat hands over to installer\\get_python.ps1 (which asks, or says why not); when it installs
    nothing, the usual instructions follow, now with the download option."""
    (stand_in_powershell / "exit_codes.txt").write_text(f"get_python.ps1\t{answer}\n")
    run = BatRun(wine, tmp_path, pythons=())
    proc = run()
    assert proc.returncode == 1
    assert "needs 64-bit Python 3.11" in proc.stdout and "TRELLIS_FETCH_PYTHON=1" in proc.stdout
    [call] = [line.split("\t") for line in (stand_in_powershell / "calls.log").read_text().splitlines()]
    assert call[1].strip() == (f'-NoProfile -ExecutionPolicy Bypass -File "{wine_path(run.app)}\\installer\\'
                               f'get_python.ps1" "{wine_path(run.app)}"')


def test_trellis_python_set_means_no_download(wine, tmp_path, stand_in_powershell):
    run = BatRun(wine, tmp_path, pythons=())
    env_python = {**run.env, "TRELLIS_PYTHON": "C:\\nowhere\\python.exe"}
    run.env = env_python
    assert run().returncode == 1
    assert not (stand_in_powershell / "calls.log").exists()
