"""TrellisDesktop(.exe): the one-click launcher, frozen with PyInstaller by installer/build_launcher.py.

It does what run.bat / run.sh do: find the app folder (the executable's own folder or one above it), find
a 64-bit Python 3.11 to 3.13, then run `python -m installer check`, `install` (only when check says 10)
and `launch` there with the same arguments. The executable holds no PyTorch and no app code; the app's
own installer/ package does the work, so the launcher does not go stale when the app is updated.

    TrellisDesktop [launcher options] [test [pytest args] | app options]
    TrellisDesktop --dry-run [--cpu] [--app-dir DIR]    print the plan and the steps; change nothing
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):       # run as a script (PyInstaller's entry point): make `installer` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from installer import options as launcher_options

PROBE = "import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14) and sys.maxsize > 2 ** 32))"
NEEDS_INSTALL = 10
NO_PYTHON_MESSAGE = """\
Trellis Desktop needs 64-bit Python 3.11 (3.12 works too), and none was found.
{how}
then start Trellis Desktop again. (TRELLIS_PYTHON may name a Python executable to use.)"""
HOW_WINDOWS = ('Install it from https://www.python.org/downloads/ (tick "Add python.exe to PATH"),\n'
               "or in a terminal run:  winget install Python.Python.3.11")
HOW_POSIX = ("Debian/Ubuntu: sudo apt install python3.11 python3.11-venv\n"
             "Fedora: sudo dnf install python3.11    macOS: brew install python@3.11")


def is_app_dir(path: Path) -> bool:
    return (path / "installer" / "__init__.py").is_file() and (path / "requirements_2.txt").is_file()


def find_app_dir(start: Path, levels: int = 3) -> Path | None:
    """The executable's folder, or one of the `levels` folders above it (dist/TrellisDesktop/ inside the app)."""
    p = start.resolve()
    for _ in range(levels + 1):
        if is_app_dir(p):
            return p
        if p.parent == p:
            break
        p = p.parent
    return None


def own_folder() -> Path:
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parent.parent


def python_candidates(windows: bool | None = None) -> list[list[str]]:
    windows = os.name == "nt" if windows is None else windows
    explicit = os.environ.get("TRELLIS_PYTHON")
    if explicit:
        return [[explicit]]
    if windows:
        return [["py", "-3.11"], ["py", "-3.12"], ["python"]]
    return [["python3.11"], ["python3.12"], ["python3"]]


def private_pythons(app: Path, windows: bool | None = None) -> list[list[str]]:
    """The app's own Pythons (.python/, made by installer/get_python.sh or .ps1), newest first."""
    windows = os.name == "nt" if windows is None else windows
    pattern = "cpython-3.11.*/python.exe" if windows else "cpython-3.11.*/bin/python3.11"
    return [[str(p)] for p in sorted((app / ".python").glob(pattern), reverse=True)]


def fetch_private_python(app: Path, env: dict) -> list[str] | None:
    """No Python at all: the same offer run.sh / run.bat make (the helper asks, or says why it does not)."""
    if os.name == "nt":
        system_root = Path(os.environ.get("SystemRoot", r"C:\Windows"))
        ps = system_root / "System32" / "WindowsPowerShell" / "v1.0" / "powershell.exe"
        cmd = [str(ps), "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", str(app / "installer" / "get_python.ps1"),
               str(app)]
    else:
        cmd = ["bash", str(app / "installer" / "get_python.sh"), str(app)]
    try:
        subprocess.call(cmd, cwd=app, env=env, stdout=subprocess.DEVNULL)
    except OSError:
        return None
    return find_python(private_pythons(app), env)


def child_env() -> dict:
    """This process's environment without what PyInstaller's bootloader added for itself."""
    env = dict(os.environ)
    if getattr(sys, "frozen", False):
        orig = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if orig is not None:
            env["LD_LIBRARY_PATH"] = orig
        else:
            env.pop("LD_LIBRARY_PATH", None)
        for key in [k for k in env if k.startswith("_PYI_") or k == "_MEIPASS2"]:
            del env[key]
    env.update({"PYTHONNOUSERSITE": "1", "PIP_USER": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def _reset_dll_directory() -> None:
    """PyInstaller's bootloader points the DLL search at its own folder, and children inherit that."""
    if os.name == "nt" and getattr(sys, "frozen", False):
        try:
            import ctypes

            ctypes.windll.kernel32.SetDllDirectoryW(None)
        except (AttributeError, OSError):
            pass


def find_python(candidates: list[list[str]], env: dict | None = None) -> list[str] | None:
    for cmd in candidates:
        exe = shutil.which(cmd[0], path=(env or os.environ).get("PATH"))
        if exe is None:
            continue
        try:
            rc = subprocess.call([exe, *cmd[1:], "-c", PROBE], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if rc == 0:
            return [exe, *cmd[1:]]
    return None


def dry_run(app: Path | None, python: list[str] | None, opts, argv: list[str], out=None) -> int:
    """What a real start would do here, without doing any of it."""
    from installer.detect import detect_system
    from installer.install import install_reason
    from installer.layout import Layout
    from installer.plan import describe, make_plan

    out = out or sys.stdout
    print("TrellisDesktop --dry-run: nothing is installed or started.", file=out)
    print(f"  app folder  {app if app else 'NOT FOUND (put TrellisDesktop next to run.bat / run.sh)'}", file=out)
    found = " ".join(python) if python else "NOT FOUND: a real start stops here and says what to install"
    print(f"  Python      {found}", file=out)
    if app is not None:
        layout = Layout.of(app)
        reason = install_reason(layout, opts)
        print(f"  .venv       {'installed and up to date' if reason is None else 'install needed: ' + reason}",
              file=out)
        py = " ".join(python) if python else "python"
        args = " ".join(argv)
        steps = [f"{py} -m installer check {args}".rstrip()]
        if reason is not None:
            steps.append(f"{py} -m installer install {args}".rstrip())
        steps.append(f"{py} -m installer launch {args}".rstrip())
        print("  steps       " + "\n              ".join(steps), file=out)
        print(file=out)
        print(describe(make_plan(detect_system(app_dir=str(app)), force_cpu=opts.cpu)), file=out)
    return 0


def _wait_on_error(rc: int) -> int:
    """A double-clicked console window closes at once: keep an error readable."""
    if rc != 0 and os.name == "nt" and not os.environ.get("TRELLIS_NO_PAUSE") and sys.stdin is not None \
            and sys.stdin.isatty():
        try:
            input("Press Enter to close this window.")
        except (EOFError, KeyboardInterrupt):
            pass
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.split("\n\n", 2)[2].rstrip() + "\n\n" + launcher_options.HELP)
        return 0
    dry = "--dry-run" in argv[:argv.index("test")] if "test" in argv else "--dry-run" in argv
    if dry:
        argv.remove("--dry-run")
    try:
        opts = launcher_options.parse(argv)
    except launcher_options.UsageError as e:
        print(f"TrellisDesktop: {e}\n\n{launcher_options.HELP}", file=sys.stderr)
        return 2
    app = Path(opts.app_dir).resolve() if opts.app_dir else find_app_dir(own_folder())
    if app is not None and not is_app_dir(app):
        print(f"TrellisDesktop: {app} is not a Trellis Desktop folder (no installer/ and requirements_2.txt).",
              file=sys.stderr)
        return 1 if not dry else dry_run(None, None, opts, argv)
    env = child_env()
    _reset_dll_directory()
    candidates = python_candidates()
    if app is not None and not os.environ.get("TRELLIS_PYTHON"):
        candidates = private_pythons(app) + candidates
    python = find_python(candidates, env)
    if python is None and app is not None and not dry and not os.environ.get("TRELLIS_PYTHON"):
        python = fetch_private_python(app, env)
    if dry:
        return dry_run(app, python, opts, argv)
    if app is None:
        print("TrellisDesktop: cannot find the Trellis Desktop folder. Put TrellisDesktop next to run.bat / run.sh "
              "(or in a folder below it), or give --app-dir DIR.", file=sys.stderr)
        return _wait_on_error(1)
    if python is None:
        print(NO_PYTHON_MESSAGE.format(how=HOW_WINDOWS if os.name == "nt" else HOW_POSIX), file=sys.stderr)
        return _wait_on_error(1)

    def step(name: str) -> int:
        try:
            return subprocess.call([*python, "-m", "installer", name, *argv], cwd=app, env=env)
        except KeyboardInterrupt:
            return 130

    rc = step("check")
    if rc == NEEDS_INSTALL:
        rc = step("install")
    if rc != 0:
        return _wait_on_error(rc)
    return _wait_on_error(step("launch"))


if __name__ == "__main__":
    sys.exit(main())
