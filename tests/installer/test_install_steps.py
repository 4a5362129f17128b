"""installer check / install / launch: the launcher's options, the state file, a real venv install from a
wheelhouse of made-up wheels (offline, a few seconds per step), rollback of a failed update, and what
`launch` starts with which environment. The plan table is in test_installer.py."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from installer import install as inst
from installer import launch as launch_mod
from installer import weights
from installer.layout import Layout, files_hash
from installer.log import Log
from installer.options import Options, UsageError, parse

from tests.helpers.install_apps import fake_venv, good_state, make_app, make_wheel
from tests.helpers.repo import ROOT


# ------------------------------------------------------------------------------------------ options

def test_options_split_launcher_app_and_test_arguments():
    o = parse(["--cpu", "test", "-q", "-k", "x", "--cpu"])
    assert o.cpu and o.test and o.rest == ["-q", "-k", "x", "--cpu"]
    o = parse(["--port", "8000", "--cpu", "--wheelhouse=/w", "--no-browser"])
    assert o.cpu and not o.test and o.wheelhouse == "/w" and o.rest == ["--port", "8000", "--no-browser"]
    o = parse(["--model", "test"])               # after an app option, "test" is just an argument
    assert not o.test and o.rest == ["--model", "test"]
    o = parse(["--update", "--retries", "0", "--", "--cpu"])
    assert o.update and o.retries == 0 and o.rest == ["--cpu"] and not o.cpu
    assert parse(["--hf-endpoint", "https://m.example", "--weights-repo", "a/b"]).launcher_args() == \
        ["--weights-repo", "a/b", "--hf-endpoint", "https://m.example"]
    for bad in (["--wheelhouse"], ["--retries", "x"], ["--repair", "--update"], ["--retries=-1"]):
        with pytest.raises(UsageError):
            parse(bad)


def test_isolated_env_keeps_pip_config_unless_asked():
    base = {"PATH": "/bin", "PYTHONPATH": "/x", "PYTHONHOME": "/y", "CONDA_PREFIX": "/c", "VIRTUAL_ENV": "/v",
            "PIP_FIND_LINKS": "/opt/wheels", "PIP_TARGET": "/t", "PIP_INDEX_URL": "https://mirror"}
    env = inst.isolated_env(base)
    assert env["PIP_FIND_LINKS"] == "/opt/wheels" and env["PIP_INDEX_URL"] == "https://mirror"
    assert not {"PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "VIRTUAL_ENV", "PIP_TARGET"} & set(env)
    assert env["PYTHONNOUSERSITE"] == "1" and env["PIP_USER"] == "0"
    strict = inst.isolated_env(base, no_pip_config=True)
    assert strict["PIP_CONFIG_FILE"] == os.devnull and "PIP_FIND_LINKS" not in strict and "PIP_INDEX_URL" not in strict


def test_pip_errors_become_advice():
    assert "disk is full" in inst.hint_for("OSError: [Errno 28] No space left on device")
    assert "network" in inst.hint_for("Failed to establish a new connection: [Errno 111]")
    assert "--wheelhouse" in inst.hint_for("ReadTimeoutError: HTTPSConnectionPool")
    assert "no wheel" in inst.hint_for("ERROR: No matching distribution found for torch==2.13.0+cu130")
    assert "Close Trellis Desktop" in inst.hint_for("PermissionError: [WinError 32] The process cannot access")
    assert "log" in inst.hint_for("something else entirely")


def test_import_names_cover_the_app_requirements():
    """Every package of requirements_1/2.txt maps to a module that exists (what the install's import check
    imports; the install itself imports them all, so this only checks the name mapping, quickly)."""
    import importlib.util

    from installer.licences import requirement_names

    names = requirement_names(str(ROOT / "requirements_1.txt")) + requirement_names(str(ROOT / "requirements_2.txt"))
    modules = [inst.import_name(n) for n in names]
    assert {"torch", "PIL", "python_multipart", "huggingface_hub", "gradio"} <= set(modules)
    assert [m for m in modules if importlib.util.find_spec(m) is None] == []


def test_import_check_script_reports_failures():
    proc = subprocess.run([sys.executable, "-c", inst.IMPORT_CHECK, "json", "no_such_module_xyz"],
                          capture_output=True, text=True, check=False, timeout=300, cwd=ROOT)
    line = [x for x in proc.stdout.splitlines() if x.startswith("IMPORT-CHECK ")]
    assert proc.returncode == 0 and line, proc.stderr
    assert list(json.loads(line[0][len("IMPORT-CHECK "):])) == ["no_such_module_xyz"]


# ------------------------------------------------------------------------------------- the state

def test_check_says_when_an_install_is_needed(tmp_path, capsys):
    layout = make_app(tmp_path)
    assert inst.check(layout, Options()) == inst.EXIT_NEEDS_INSTALL
    assert "not installed yet" in capsys.readouterr().err
    fake_venv(layout, good_state(layout))
    assert inst.check(layout, Options()) == inst.EXIT_OK
    assert inst.install_reason(layout, Options(test=True)) == \
        "the test tools (requirements_test.txt) are not installed yet"
    assert inst.install_reason(layout, Options(cpu=True)) == "--cpu: the installed PyTorch is the cu130 build"
    assert inst.install_reason(layout, Options(repair=True)).startswith("--repair")
    assert inst.install_reason(layout, Options(update=True)).startswith("--update")
    (layout.app_dir / "requirements_2.txt").write_text("fakeapp==2.0\n")
    assert inst.install_reason(layout, Options()) == "requirements_1.txt or requirements_2.txt changed"


def test_venv_of_the_old_run_sh_is_recognised(tmp_path):
    """The stamp files of the previous run.sh / run.bat (same hash) count as an install: no reinstall."""
    layout = make_app(tmp_path)
    fake_venv(layout, None)
    site = layout.venv / "lib" / "python3.11" / "site-packages" / "torch-2.13.0+cpu.dist-info"
    site.mkdir(parents=True)
    app_hash = files_hash([layout.requirement("requirements_1.txt"), layout.requirement("requirements_2.txt")])
    (layout.venv / f".installed-{app_hash}").touch()
    state = inst.load_state(layout)
    assert state["torch"] == "2.13.0+cpu" and state["cuda_tag"] == "cpu" and state["test_key"] is None
    assert inst.install_reason(layout, Options(cpu=True)) is None
    (layout.venv / f".installed-{layout.test_key()}").touch()
    assert inst.install_reason(layout, Options(test=True)) is None


def test_interrupted_install_restores_the_previous_venv(tmp_path):
    layout = make_app(tmp_path)
    layout.venv_previous.mkdir()
    (layout.venv_previous / "marker").write_text("old")
    layout.venv.mkdir()                              # half-built, no state file
    inst.recover_interrupted(layout, Log(None, quiet=True))
    assert (layout.venv / "marker").read_text() == "old" and not layout.venv_previous.exists()


# ------------------------------------------------------------------------- a real install, offline

FAKE_TORCH = '''
__version__ = "2.13.0+cpu"
class Tensor:
    def __init__(self, v):
        self.v = v
    def __matmul__(self, other):
        return Tensor(self.v * other.v * 8)
    def sum(self):
        return Tensor(self.v * 64)
    def __float__(self):
        return float(self.v)
def ones(*shape):
    return Tensor(1.0)
'''


@pytest.fixture
def wheelhouse(tmp_path):
    wh = tmp_path / "wheels"
    wh.mkdir()
    make_wheel(wh, "torch", "2.13.0+cpu", {"torch/__init__.py": FAKE_TORCH})
    for version in ("1.0", "2.0"):
        make_wheel(wh, "fakeapp", version, {"fakeapp/__init__.py": f"VERSION = {version!r}\n"})
    make_wheel(wh, "faketest", "1.0", {"faketest/__init__.py": ""})
    return wh


def installer_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run([sys.executable, "-m", "installer", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=600, env=env)


def venv_module_version(layout: Layout, module: str) -> str:
    out = subprocess.run([str(layout.venv_python()), "-c", f"import {module}; print({module}.VERSION)"],
                         capture_output=True, text=True, check=False, timeout=60)
    return out.stdout.strip()


@pytest.mark.slow
def test_install_from_a_wheelhouse_then_a_failed_and_a_good_update(tmp_path, wheelhouse):
    layout = make_app(tmp_path)
    common = ["--app-dir", str(layout.app_dir), "--wheelhouse", str(wheelhouse), "--no-pip-config", "--retries", "0"]

    proc = installer_cli("install", "--cpu", *common)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads(layout.state_file.read_text())
    assert (state["torch"], state["cuda_tag"], state["device"], state["cpu_requested"]) == \
        ("2.13.0+cpu", "cpu", "cpu", True)
    assert state["torch_source"].startswith("the wheelhouse") and state["app_key"] == layout.app_key()
    assert "Checking that every package imports (2)" in proc.stderr
    assert layout.log_file.exists() and layout.log_file.with_name("pip.log").exists()
    assert venv_module_version(layout, "fakeapp") == "1.0"
    assert installer_cli("check", *common).returncode == 0          # --cpu is remembered
    assert installer_cli("check", *common, "test").returncode == 10

    # Test mode adds the test tools to the working venv.
    proc = installer_cli("install", *common, "test", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert installer_cli("check", *common, "test").returncode == 0

    # An update that cannot be resolved leaves the installed venv exactly as it was.
    (layout.app_dir / "requirements_2.txt").write_text("fakeapp==3.0\n")
    proc = installer_cli("install", *common)
    assert proc.returncode == 1
    assert "pip found no wheel" in proc.stderr and "the folder lacks that wheel" in proc.stderr
    assert "The previous installation in .venv was kept unchanged." in proc.stderr
    assert str(layout.log_file) in proc.stderr
    assert venv_module_version(layout, "fakeapp") == "1.0" and not layout.venv_previous.exists()
    assert json.loads(layout.state_file.read_text())["installed_at"] == state["installed_at"]

    (layout.app_dir / "requirements_2.txt").write_text("fakeapp==2.0\n")
    proc = installer_cli("install", *common)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert venv_module_version(layout, "fakeapp") == "2.0" and not layout.venv_previous.exists()
    assert installer_cli("check", *common).returncode == 0


def test_missing_wheelhouse_is_a_clear_error(tmp_path):
    layout = make_app(tmp_path)
    proc = installer_cli("install", "--cpu", "--app-dir", str(layout.app_dir), "--wheelhouse", str(tmp_path / "no"))
    assert proc.returncode == 1 and "--wheelhouse" in proc.stderr and "no such folder" in proc.stderr
    assert not layout.venv.exists()


def test_torch_sources_in_order(tmp_path):
    from installer.detect import System
    from installer.plan import make_plan

    layout = make_app(tmp_path)
    plan = make_plan(System(), force_cpu=True)
    i = inst.Installer(layout, Options(), Log(None, quiet=True), {})
    assert i.torch_sources(plan) == [("pip's configured sources", []),
                                     ("https://download.pytorch.org/whl/cpu",
                                      ["--index-url", "https://download.pytorch.org/whl/cpu"])]
    i.opts = Options(torch_index_url="https://mirror.example/whl/cu130")
    assert i.torch_sources(plan) == [("https://mirror.example/whl/cu130",
                                      ["--index-url", "https://mirror.example/whl/cu130"])]


# ---------------------------------------------------------------------------------------- launch

@pytest.fixture
def started(monkeypatch):
    """What launch would exec: (command, environment)."""
    calls = []
    monkeypatch.setattr(launch_mod, "_run", lambda cmd, env, cwd, log: calls.append((cmd, env)) or 0)
    return calls


def test_launch_refuses_without_an_install(tmp_path, capsys, started):
    layout = make_app(tmp_path)
    assert launch_mod.launch(layout, Options(), Log(None)) == inst.EXIT_NOT_INSTALLED
    assert "not ready to start" in capsys.readouterr().err and not started


def test_launch_app_environment(tmp_path, started, monkeypatch):
    layout = make_app(tmp_path)
    fake_venv(layout, good_state(layout))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("HF_HOME", "/home/user/.cache/huggingface")
    assert launch_mod.launch(layout, parse(["--skip-weights", "--port", "7861"]), Log(None)) == 0
    (cmd, env), = started
    assert cmd == [str(layout.venv_python()), "-m", "desktop", "ui", "--port", "7861"]
    assert env["HF_HOME"] == str(layout.app_dir / ".cache" / "huggingface")       # caches inside the app folder
    assert env["TORCH_HOME"] == str(layout.app_dir / ".cache" / "torch")
    assert env["U2NET_HOME"] == str(layout.app_dir / ".cache" / "models" / "u2net")
    assert env["TRELLIS_MODEL_DIR"] == str(layout.app_dir / ".cache" / "models")
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"   # the planned GPU
    assert "PYTHONPATH" not in env and env["PYTHONNOUSERSITE"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")                                  # the user's choice wins
    launch_mod.launch(layout, parse(["--skip-weights"]), Log(None))
    assert started[-1][1]["CUDA_VISIBLE_DEVICES"] == "0"


def test_the_tests_spread_over_the_cores_unless_told():
    spread = ["--dist", "loadfile", "--no-loadscope-reorder"]
    assert launch_mod.test_workers([], cores=2) == ["-n", "2", *spread]
    assert launch_mod.test_workers(["-x"], cores=64) == ["-n", str(launch_mod.MAX_TEST_WORKERS), *spread]
    assert launch_mod.test_workers([], cores=1) == []
    for told in (["-n", "0"], ["-n3"], ["--numprocesses=2"], ["-p", "no:xdist"]):
        assert launch_mod.test_workers(told, cores=8) == [], told


def test_the_sources_are_byte_compiled_before_the_tests(tmp_path, monkeypatch):
    """compileall writes every package's bytecode even where PYTHONDONTWRITEBYTECODE is set; a file that does not
    compile is reported, and the others are still compiled."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    (tmp_path / "trellis" / "sub").mkdir(parents=True)
    (tmp_path / "trellis" / "sub" / "good.py").write_text("X = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "bad.py").write_text("def (:\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.py").write_text("Y = 2\n")
    log = Log(None)
    assert launch_mod.compile_sources(sys.executable, tmp_path, log) != 0
    assert list((tmp_path / "trellis" / "sub" / "__pycache__").glob("good.*.pyc"))
    assert not (tmp_path / "elsewhere" / "__pycache__").exists()            # only the repository's packages
    assert launch_mod.compile_sources(sys.executable, tmp_path / "elsewhere", log) == 0    # none there: nothing


def test_launch_tests_run_pytest(tmp_path, started, monkeypatch):
    layout = make_app(tmp_path)
    fake_venv(layout, good_state(layout, test_key=layout.test_key()))
    tools = []
    monkeypatch.setattr(launch_mod, "ensure_test_tools", lambda lay, log: tools.append(lay))
    monkeypatch.setattr(launch_mod, "compile_sources", lambda python, app_dir, log: tools.append(app_dir))
    assert launch_mod.launch(layout, parse(["test", "-q", "-x"]), Log(None)) == 0
    workers = launch_mod.test_workers(["-q", "-x"])
    assert started[0][0] == [str(layout.venv_python()), "-m", "pytest", *workers, "-q", "-x"]
    assert tools == [layout, layout.app_dir]                    # the test tools, then the sources compiled
    assert launch_mod.launch(layout, parse(["test", "-n", "0", "-k", "attention"]), Log(None)) == 0
    assert started[1][0] == [str(layout.venv_python()), "-m", "pytest", "-n", "0", "-k", "attention"]
    assert "HF_HOME" not in started[0][1] or started[0][1]["HF_HOME"] == os.environ.get("HF_HOME")


def _tiny_manifest(tmp_path: Path, base_url: str, server_files: dict) -> Path:
    """A manifest of the real layout (one repo file, DINOv2, u2net) with made-up small files."""
    def entry(data: bytes) -> dict:
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    pipeline, dino, u2 = b'{"name": "TrellisImageTo3DPipeline"}', b"dino" * 10, b"u2net" * 10
    rev = "0" * 40
    server_files[f"/microsoft/TRELLIS-image-large/resolve/{rev}/pipeline.json"] = pipeline
    server_files["/dinov2.pth"] = dino
    server_files["/u2net.onnx"] = u2
    manifest = {"pipeline": {"repo": "microsoft/TRELLIS-image-large", "revision": rev,
                             "files": {"pipeline.json": entry(pipeline)}},
                "extra": {"dinov2": {"file": "dinov2_vitl14_reg4_pretrain.pth", "url": f"{base_url}/dinov2.pth",
                                     **entry(dino)},
                          "u2net": {"file": "u2net.onnx", "url": f"{base_url}/u2net.onnx", **entry(u2)}}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_launch_fetches_the_weights_first(tmp_path, started, monkeypatch):
    from tests.helpers.servers import FileServer

    server = FileServer()
    try:
        monkeypatch.setattr(weights, "MANIFEST_PATH", _tiny_manifest(tmp_path, server.url, server.files))
        for var in ("TRELLIS_DESKTOP_MODEL", "TRELLIS_DINOV2_WEIGHTS", "TRELLIS_U2NET_URL", "TRELLIS_DINOV2_URL"):
            monkeypatch.delenv(var, raising=False)
        layout = make_app(tmp_path)
        fake_venv(layout, good_state(layout))
        assert launch_mod.launch(layout, parse(["--hf-endpoint", server.url]), Log(None)) == 0
        env = started[-1][1]
        model_dir = layout.models / "TRELLIS-image-large"
        assert env["TRELLIS_DESKTOP_MODEL"] == str(model_dir) and (model_dir / "pipeline.json").is_file()
        assert env["TRELLIS_DINOV2_WEIGHTS"] == str(layout.dinov2_dir / "dinov2_vitl14_reg4_pretrain.pth")
        assert (layout.u2net_dir / "u2net.onnx").is_file() and env["HF_ENDPOINT"] == server.url
        n = len(server.requests)
        launch_mod.launch(layout, parse(["--hf-endpoint", server.url]), Log(None))
        assert len(server.requests) == n                     # second start: nothing fetched, nothing hashed
        # --model FOLDER: the user's own pipeline; only u2net (already there) is needed.
        launch_mod.launch(layout, parse(["--model", str(tmp_path)]), Log(None))
        assert "TRELLIS_DESKTOP_MODEL" not in started[-1][1] and started[-1][0][-2:] == ["--model", str(tmp_path)]
    finally:
        server.close()


def test_launch_without_weights_says_what_to_do(tmp_path, started, monkeypatch, capsys):
    from tests.helpers.servers import closed_port_url

    monkeypatch.setattr(weights, "MANIFEST_PATH", _tiny_manifest(tmp_path, closed_port_url(), {}))
    monkeypatch.delenv("TRELLIS_DESKTOP_MODEL", raising=False)
    layout = make_app(tmp_path)
    fake_venv(layout, good_state(layout))
    rc = launch_mod.launch(layout, parse(["--hf-endpoint", closed_port_url(), "--retries", "0"]), Log(None))
    assert rc == inst.EXIT_WEIGHTS and not started
    err = capsys.readouterr().err
    assert "3 model file(s) are missing" in err and str(layout.u2net_dir / "u2net.onnx") in err
