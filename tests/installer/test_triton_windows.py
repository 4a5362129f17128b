"""Triton on Windows (issue #11, part 1): the plan adds the pinned triton-windows wheel where Triton can run,
PyPI has that wheel for every supported Python, the install's fast-path check records whether our kernels
work, and the app says which renderer path it takes.

The plan rows follow tests/installer/test_installer.py: nvidia-smi's answer on a real machine, the expectation and the
published fact behind it (`why`; rule ids point into installer.plan.RULES). The wheel check needs PyPI (the
only test here that uses the network): it downloads, never installs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from installer import install as inst
from installer import licences, plan
from installer.detect import System
from installer.layout import Layout
from installer.log import Log
from installer.options import Options
from installer.plan import RULES, make_plan
from tests.helpers.install_apps import make_system   # a table row as detect_system reads its GPUs, on a fixed machine

from tests.helpers.repo import ROOT
PIN = f"triton-windows=={plan.TRITON_WINDOWS_VERSION}"
PIN_CU128 = f"triton-windows=={plan.TRITON_WINDOWS_VERSION_CU128}"     # for torch 2.11.0 (issue #16)


@dataclass
class Row:
    id: str
    smi: str
    os: str
    triton: bool                      # the plan has PIN (or `pin`) among its optional packages
    why: str
    rules: tuple[str, ...]            # RULES ids the plan must cite
    note: tuple[str, ...] = ()        # substrings expected in the notes
    force_cpu: bool = False
    wsl: bool = False
    pin: str = PIN


ROWS = [
    Row("windows_rtx4070", "NVIDIA GeForce RTX 4070, 12282, 591.44, 8.9\n", "Windows", True,
        why="PyTorch's Windows wheels ship no Triton; Ada (8.9) is above Triton's floor: the triton-windows build "
            "of torch 2.13's Triton line (3.7.1) is added.",
        rules=("triton_windows", "triton_floor")),
    Row("windows_rtx5090", "NVIDIA GeForce RTX 5090, 32607, 591.44, 12.0\n", "Windows", True,
        why="Blackwell (12.0) on cu130: Triton >= 3.3 supports sm_120; the same pin.",
        rules=("triton_windows",)),
    Row("windows_rtx5090_driver572_torch211", "NVIDIA GeForce RTX 5090, 32607, 572.16, 12.0\n", "Windows", True,
        pin=PIN_CU128,
        why="An R570 driver gets torch 2.11.0+cu128, whose Linux wheel requires triton==3.6.0: the triton-windows pin "
            "follows the planned torch, not torch 2.13.",
        rules=("triton_windows", "triton_windows_2_11")),
    Row("windows_rtx3060_driver472_cu118", "NVIDIA GeForce RTX 3060, 12288, 472.12, 8.6\n", "Windows", False,
        why="A CUDA 11 driver gets torch 2.7.1+cu118; triton-windows supports only CUDA 12 PyTorch and drivers, so "
            "none is planned even on Ampere, and the PyTorch twins run.",
        rules=("triton_windows_cu118", "fast_path_fallback"), note=("triton-windows is not installed", "CUDA 12")),
    Row("windows_rtx2060_turing", "NVIDIA GeForce RTX 2060, 6144, 591.44, 7.5\n", "Windows", True,
        why="Turing (7.5) is above Triton's 7.0 floor but below the 8.0 Triton's developers test: installed, and "
            "the plan says the install's GPU check decides.",
        rules=("triton_windows", "triton_floor", "fast_path_fallback"), note=("install's GPU check",)),
    Row("windows_gtx1080_pascal", "NVIDIA GeForce GTX 1080, 8192, 581.57, 6.1\n", "Windows", False,
        why="Pascal (6.1) is below Triton's 7.0: no triton-windows; the PyTorch twins run, and the plan says why.",
        rules=("triton_floor", "fast_path_fallback"),
        note=("triton-windows is not installed", "compute capability 7.0 or newer", "6.1", "PyTorch paths")),
    Row("linux_rtx4070", "NVIDIA GeForce RTX 4070, 12282, 580.95.05, 8.9\n", "Linux", False,
        why="PyTorch's Linux CUDA wheels require triton themselves (torch 2.13.0: triton==3.7.1).",
        rules=("triton_linux",)),
    Row("wsl_rtx4070", "NVIDIA GeForce RTX 4070, 12282, 591.44, 8.9\n", "Linux", False, wsl=True,
        why="WSL installs PyTorch's Linux wheels, which bring Triton.", rules=("triton_linux",)),
    Row("windows_cpu_requested", "NVIDIA GeForce RTX 4070, 12282, 591.44, 8.9\n", "Windows", False, force_cpu=True,
        why="--cpu: the CPU build; Triton kernels run on CUDA only.", rules=("cpu_requested",)),
    Row("windows_no_gpu", "", "Windows", False,
        why="No NVIDIA GPU: the CPU build, nothing for Triton.", rules=("no_gpu_cpu",)),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_plan_adds_triton_windows_only_where_it_can_run(row):
    p = json.loads(plan.to_json(make_plan(make_system(row), force_cpu=row.force_cpu)))
    assert p["optional_packages"] == ([row.pin] if row.triton else [])
    assert not any(pkg.startswith("triton") for pkg in p["packages"])          # never in torch's own step
    cited = {r["rule"]: r["source"] for r in p["rules"]}
    for rule in row.rules:
        assert rule in cited, (rule, sorted(cited))
        assert cited[rule] == RULES[rule]
    notes = "\n".join(p["notes"])
    for s in row.note:
        assert s in notes, (s, p["notes"])
    if row.triton:
        assert row.pin in plan.describe(make_plan(make_system(row)))              # the "extras" line
    if p["device"] == "cpu":
        assert "triton_windows" not in cited and "triton_linux" not in cited


def test_pin_follows_torch_and_fastpaths():
    # The pin's rule names the pin and the torch version it follows; the floor is the dispatcher's.
    assert plan.TRITON_WINDOWS_VERSION in RULES["triton_windows"]
    torch_minor = ".".join(plan.TORCH_VERSION.split(".")[:2])
    assert f"torch {torch_minor}" in RULES["triton_windows"]
    assert plan.TRITON_WINDOWS_VERSION.startswith("3.7.1")             # torch 2.13.0 requires triton==3.7.1
    assert plan.TRITON_WINDOWS_VERSION_CU128 in RULES["triton_windows_2_11"]
    assert plan.TRITON_WINDOWS_VERSION_CU128.startswith("3.6.0")       # torch 2.11.0 requires triton==3.6.0
    pins = {b.torch: b.triton_windows for b in plan.TORCH_CUDA_BUILDS}
    assert pins == {"2.13.0": plan.TRITON_WINDOWS_VERSION, "2.11.0": plan.TRITON_WINDOWS_VERSION_CU128,
                    "2.7.1": None}
    from trellis import fastpaths

    assert plan.TRITON_MIN_CC == fastpaths.MIN_CAPABILITY


def test_planned_packages_have_a_licence_record():
    assert "triton-windows" in licences.PLANNED and "triton-windows" in licences.BUNDLED
    assert "MIT" in licences.PLANNED["triton-windows"]
    assert inst.import_name("triton-windows") == "triton"


@pytest.mark.parametrize("pin", [PIN, PIN_CU128])
@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_pinned_wheel_exists_for_windows(python, pin, tmp_path):
    """pip resolves the pinned wheel for win_amd64 on each supported Python (downloaded, not installed), and its
    metadata says MIT. Needs PyPI (or the pip mirror configured on this machine)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--platform", "win_amd64",
           "--python-version", python, "--disable-pip-version-check", "-d", str(tmp_path), pin]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        pytest.fail(f"pip could not download {pin} for win_amd64 / Python {python}. If this machine cannot reach "
                    f"PyPI (or its pip mirror), this test needs the network; otherwise the pin is wrong.\n"
                    f"$ {' '.join(cmd)}\n{tail}")
    wheels = list(tmp_path.glob("*.whl"))
    tag = "cp" + python.replace(".", "")
    assert len(wheels) == 1 and wheels[0].name.endswith(f"-{tag}-{tag}-win_amd64.whl"), wheels
    info = licences.inspect_wheel(str(wheels[0]))
    assert (licences.normalise(info.name), info.version) == ("triton-windows", pin.split("==")[1])
    assert info.flagged == [] and "MIT" in info.licence


# ------------------------------------------------------------------------------ the install's steps

def test_fast_path_check_runs_our_renderers_and_records_the_path():
    """The install's check script, run for real (on the CPU here: the renderers run, status says why the
    kernels are off); on a GPU the same script makes Triton compile and launch each kernel."""
    layout = Layout.of(ROOT)
    installer = inst.Installer(layout, Options(), Log(None, quiet=True), inst.isolated_env())
    p = make_plan(System(), force_cpu=True)
    result = installer.fast_path_check(Path(sys.executable), p, device="cpu")
    assert result["error"] is None, result
    assert result["fast"] is False and result["line"] == "CPU: PyTorch paths (no GPU kernels)"
    assert set(result["kernels"]) == {"gaussian_composite", "mesh_setup", "mesh_raster", "sparse_conv3d",
                                      "flow_block", "norm_modulate", "head_rms_norm", "gated_residual",
                                      "linear_gelu", "attention_8bit"}
    assert all("CUDA only" in why for why in result["kernels"].values())


def test_fast_path_check_output_parsing():
    ok = {"device": "cuda", "fast": True, "line": "fast paths on (Triton kernels)", "kernels": {}, "reason": None,
          "error": None}
    assert inst.parse_fast_path_check("noise\nFAST-PATHS " + json.dumps(ok) + "\n") == ok
    assert inst.parse_fast_path_check("Segmentation fault (core dumped)") is None
    assert inst.parse_fast_path_check("FAST-PATHS {not json") is None


def test_a_crashing_check_is_recorded_not_fatal(tmp_path):
    """A check that dies without its record (e.g. a crash inside the Triton compiler) gives fast=False with
    the exit status; the install goes on."""
    (tmp_path / "trellis").mkdir()
    (tmp_path / "trellis" / "__init__.py").write_text("import os\nos._exit(7)\n")     # dies on import
    installer = inst.Installer(Layout.of(tmp_path), Options(), Log(None, quiet=True), inst.isolated_env())
    result = installer.fast_path_check(Path(sys.executable), make_plan(System(), force_cpu=True), device="cpu")
    assert result["fast"] is False and "exit status 7" in result["error"]


def test_optional_packages_install_or_are_reported(tmp_path):
    """A real venv and pip: the plan's optional package is installed from a wheelhouse next to a pinned torch;
    one that cannot be found is reported (the app runs without it), not raised."""
    from tests.helpers.install_apps import make_app, make_wheel

    layout = make_app(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "fake-accel", "1.0", {"fake_accel/__init__.py": "VERSION = '1.0'\n"})
    env = inst.isolated_env(no_pip_config=True)
    subprocess.run([sys.executable, "-m", "venv", str(layout.venv)], check=True, timeout=300, env=env)
    constraint = tmp_path / "constraint.txt"
    constraint.write_text("torch==2.13.0\n")
    installer = inst.Installer(layout, Options(wheelhouse=str(wheels), retries=0), Log(None, quiet=True), env)
    p = make_plan(System(), force_cpu=True)
    p.optional_packages = ["fake-accel==1.0", "fake-missing==1.0"]
    done = installer.install_optional(layout.venv_python(), p, constraint)
    assert done["installed"] == ["fake-accel==1.0"]
    assert list(done["failed"]) == ["fake-missing==1.0"] and "no wheel" in done["failed"]["fake-missing==1.0"]
    out = subprocess.run([str(layout.venv_python()), "-c", "import fake_accel; print(fake_accel.VERSION)"],
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    assert out.stdout.strip() == "1.0", out.stderr


# ------------------------------------------------------------------------------------------ the app

def test_app_says_which_path_it_takes(tmp_path):
    """The runner's per-device line, the UI header and the REST API's health carry trellis.fastpaths.describe."""
    import io

    from fastapi.testclient import TestClient

    from desktop import api, ui
    from desktop.jobs import JobRunner
    from trellis import fastpaths

    runner = JobRunner(str(tmp_path / "no-model"), tmp_path / "out", device="cpu")
    try:
        assert runner.fast_paths() == {"cpu": fastpaths.describe("cpu")}
        log = io.StringIO()
        runner.say_fast_paths(log)
        assert log.getvalue() == f"device cpu: {fastpaths.describe('cpu')}\n"
        header = ui.TrellisApp(runner).header_text()
        assert "device: `cpu` · outputs:" in header             # a CPU by its name: it has one path
        with TestClient(api.create_app(runner, allowed_hosts=["testserver"])) as client:
            assert client.get("/v1/health").json()["fast_paths"] == {"cpu": fastpaths.describe("cpu")}
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)


def test_device_line_groups_devices_and_shows_why():
    from desktop.ui import device_line

    slow = "slower path: PyTorch twins (Triton is not installed)"
    line = device_line({"cuda:0": "fast paths on (Triton kernels)", "cuda:1": slow, "cuda:2": slow})
    assert line.startswith("`cuda:0` (fast paths on \\(Triton kernels\\))")
    assert "`cuda:1, cuda:2` (slower path: PyTorch twins \\(Triton is not installed\\))" in line

