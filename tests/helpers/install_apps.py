"""Made-up app folders, venvs, wheels and machines for the installer's tests (offline, in a temp folder)."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from installer.detect import System, detect_system
from installer.layout import Layout


def make_app(tmp_path: Path, req2: str = "fakeapp==1.0\n") -> Layout:
    """An app folder with its three requirement files (torch pinned, `req2`, one test tool) and its Layout."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements_1.txt").write_text("torch==2.13.0\n")
    (app / "requirements_2.txt").write_text(req2)
    (app / "requirements_test.txt").write_text("faketest==1.0\n")
    return Layout.of(app)


def fake_venv(layout: Layout, state: dict | None) -> None:
    """The layout's venv as a link to this Python, with `state` as its state file (none when None)."""
    py = layout.venv_python()
    py.parent.mkdir(parents=True)
    py.symlink_to(sys.executable)
    if state is not None:
        layout.state_file.write_text(json.dumps(state))


def good_state(layout: Layout, **extra) -> dict:
    """The state file of a finished CUDA install of this layout (plus `extra` fields)."""
    return {"schema": 1, "app_key": layout.app_key(), "test_key": None, "torch": "2.13.0+cu130",
            "cuda_tag": "cu130", "device": "cuda", "cpu_requested": False,
            "env": {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}, **extra}


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> None:
    """A pure-Python wheel of `files` {path: text} with its METADATA, WHEEL and RECORD, written into `folder`."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    entries = {**files,
               f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                    "License-Expression: MIT\n"),
               f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: trellis-tests\nRoot-Is-Purelib: true\n"
                                 "Tag: py3-none-any\n")}
    record = "".join(f"{p},,\n" for p in entries) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as z:
        for path, text in entries.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", record)


def make_system(case) -> System:
    """The GPUs of a table row (its nvidia-smi output `smi`, its `os`, `wsl`) as detect_system reads them, on a fixed
    machine of the row's OS."""
    seen = detect_system(nvidia_smi_output=case.smi)
    windows = case.os == "Windows"
    return System(os=case.os, machine="x86_64", python=(3, 11, 9), wsl=case.wsl,
                  app_dir="C:\\TrellisDesktop" if windows else "/home/user/trellis-desktop", free_disk_bytes=None,
                  long_paths_enabled=True if windows else None, gpus=seen.gpus, gpu_error=seen.gpu_error,
                  notes=seen.notes)
