"""Build the one-click launcher TrellisDesktop (TrellisDesktop.exe on Windows) with PyInstaller.

    python -m installer.build_launcher [--onedir] [--dist DIR] [--work DIR]

Freezes installer/launcher.py, a few hundred lines of standard-library Python (no PyTorch, no app code),
into one file: dist/TrellisDesktop[.exe] by default. Put it in the app folder next to run.bat; double-click
it to install (first time) and start the app, as run.bat does. `TrellisDesktop --dry-run` prints the
plan and the steps without changing anything. PyInstaller (requirements_test.txt) builds for the system it
runs on: build the .exe on Windows. Licence: see installer/licences.py, SHIPPED.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "TrellisDesktop"
APP_DIR = Path(__file__).resolve().parent.parent
ENTRY = Path(__file__).resolve().with_name("launcher.py")
# Standard-library parts the launcher never uses; leaving them out keeps the file small and the build fast.
EXCLUDES = ("tkinter", "unittest", "pydoc", "doctest", "lib2to3", "xmlrpc", "sqlite3", "asyncio", "email.mime",
            "multiprocessing", "pdb", "distutils", "setuptools", "pip")


def pyinstaller_args(dist: Path, work: Path, onefile: bool = True) -> list[str]:
    args = [str(ENTRY), "--name", NAME, "--onefile" if onefile else "--onedir", "--console", "--noconfirm",
            "--distpath", str(dist), "--workpath", str(work), "--specpath", str(work), "--paths", str(APP_DIR),
            "--log-level", "WARN"]
    for module in EXCLUDES:
        args += ["--exclude-module", module]
    return args


def build(dist: Path, work: Path, onefile: bool = True) -> Path:
    """Run PyInstaller; the path of the built executable."""
    try:
        import PyInstaller.__main__ as pyinstaller
    except ImportError:
        raise SystemExit("PyInstaller is not installed: .venv/bin/python -m pip install pyinstaller==6.22.3 "
                         "(it is in requirements_test.txt)") from None
    pyinstaller.run(pyinstaller_args(dist, work, onefile))
    exe = NAME + (".exe" if sys.platform == "win32" else "")
    return dist / exe if onefile else dist / NAME / exe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m installer.build_launcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onedir", action="store_true", help="a folder with the executable and its files "
                                                               "(faster to build) instead of one file")
    parser.add_argument("--dist", default=str(APP_DIR / "dist"), help="output folder (default: dist/)")
    parser.add_argument("--work", default=str(APP_DIR / "build" / "launcher"),
                        help="PyInstaller's scratch folder (default: build/launcher/)")
    args = parser.parse_args(argv)
    exe = build(Path(args.dist), Path(args.work), onefile=not args.onedir)
    print(f"Built {exe}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
