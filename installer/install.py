"""`python -m installer check|install`: the app's own Python environment, `.venv` in the app folder.

install, in order: plan (installer.plan) -> a new venv (the old one, if any, waits as .venv.previous) ->
PyTorch of the planned build -> requirements_2.txt -> the plan's optional accelerators (triton-windows on
Windows with a GPU Triton supports; a failure there is reported, not fatal) (-> requirements_test.txt in test
mode) -> every package imported once, and when a GPU is planned a tiny CUDA computation plus one render through
each fast kernel (whether the fast paths work is recorded, never fatal) -> the state file
.venv/trellis-install.json.
Only then is .venv.previous deleted; any failure deletes the new venv and puts the previous one back, so a
venv is never left half-updated. Everything pip prints also goes to logs/pip.log.

Where PyTorch comes from (the plan's build, e.g. torch==2.13.0+cu130, pinned with its local version):
1. --wheelhouse DIR: only DIR (pip --no-index --find-links DIR), for offline installs;
2. --torch-index-url URL: only URL;
3. otherwise pip's configured sources first (pip.conf, PIP_* variables: mirrors, find-links; this is how
   CI's local CPU wheel is found), and PyTorch's own index for the build (download.pytorch.org/whl/<tag>)
   when they do not have that exact build. PyPI never has it (it hosts no local versions), so on a plain
   machine this costs one quick look-up.
The rest comes from pip's configured sources (PyPI by default), wheels only.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import APP_REQUIREMENTS, STATE_NAME, TEST_REQUIREMENTS, Layout, files_hash
from .log import Log
from .options import Options

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_INSTALLED = 3
EXIT_WEIGHTS = 4
EXIT_NEEDS_INSTALL = 10    # `check`: an install (or an update) is needed first

# Ray, the optional extra of `python -m desktop batch --ray` (--with-ray); kept by later installs once there.
RAY_REQUIREMENTS = "requirements_ray.txt"


def ray_key(layout: Layout) -> str:
    return files_hash([layout.requirement(RAY_REQUIREMENTS)])

STATE_SCHEMA = 1

# Distribution name -> module to import, where they differ (the rest: name with "-" -> "_").
IMPORT_NAMES = {
    "pillow": "PIL",
    "opencv-python-headless": "cv2",
    "python-multipart": "python_multipart",
    "huggingface-hub": "huggingface_hub",
    "imageio-ffmpeg": "imageio_ffmpeg",
    "fast-simplification": "fast_simplification",
    "triton-windows": "triton",
    "usd-core": "pxr",
    "dracopy": "DracoPy",
}

# Run by the venv's Python: import each module, report failures as JSON.
IMPORT_CHECK = r"""
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = f"{type(e).__name__}: {e}"[:500]
import torch
x = torch.ones(8, 8)
assert float((x @ x).sum()) == 512.0
print("IMPORT-CHECK " + json.dumps(failed))
"""

CUDA_SMOKE = r"""
import sys, torch
if not torch.cuda.is_available():
    print(f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    sys.exit(1)
x = torch.randn(256, 256, device="cuda")
value = float((x @ x).sum())
torch.cuda.synchronize()
print(f"CUDA-OK {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
"""

# Run by the venv's Python in the app folder, after CUDA_SMOKE: one tiny render through each renderer that has a
# fast kernel (the mesh rasteriser and the Gaussian compositor), so that Triton compiles and launches our own
# kernels, then trellis.fastpaths.status says which kernels stay on (a failed one is switched off with the
# reason). Prints FAST-PATHS {json}; never fails: the app falls back to the PyTorch twins. argv[1]: the device.
FAST_PATH_CHECK = r"""
import json, sys
device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
result = {"device": device, "fast": False, "line": None, "kernels": {}, "reason": None, "error": None}
try:
    import torch
    from trellis import fastpaths
    from trellis.renderers.cameras import orbit_cameras
    from trellis.renderers.gaussian_render import render_gaussians
    from trellis.renderers.mesh_render import rasterize
    from trellis.representations.gaussian import Gaussian

    dev = torch.device(device)
    # Two triangles in clip space, one in front of the other over part of a 32 x 48 image.
    verts = torch.tensor([[-0.8, -0.8, 0.5, 1.0], [0.8, -0.8, 0.5, 1.0], [0.0, 0.8, 0.5, 1.0],
                          [-0.5, 0.0, 0.2, 1.0], [0.5, 0.0, 0.2, 1.0], [0.0, 0.9, 0.2, 1.0]], device=dev)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]], device=dev)
    face_id, _, _ = rasterize(verts, faces, 32, 48)
    covered = sorted(int(f) for f in torch.unique(face_id).tolist())
    if covered != [0, 1, 2]:
        raise RuntimeError(f"the mesh raster test image shows faces {covered}, expected 0 (empty), 1 and 2")
    # A few hundred small Gaussians around the origin, seen from a camera at distance 2.
    gen = torch.Generator().manual_seed(0)
    n = 300
    g = Gaussian([-0.5, -0.5, -0.5, 1.0, 1.0, 1.0])
    g.from_xyz(((torch.rand(n, 3, generator=gen) - 0.5) * 0.6).to(dev))
    g.from_scaling(torch.full((n, 3), 0.03).to(dev))
    g.from_rotation(torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1).to(dev))
    g.from_opacity(torch.full((n, 1), 0.8).to(dev))
    g.from_features(torch.randn(n, 1, 3, generator=gen).to(dev))
    extrinsics, intrinsics = orbit_cameras([0.3], [0.2], radius=2.0, fov=40.0, device=dev)
    out = render_gaussians(g, extrinsics[0], intrinsics[0], 32)
    alpha = float(out["alpha"].max())
    if not alpha > 0.5 or not bool(torch.isfinite(out["color"]).all()):
        raise RuntimeError(f"the Gaussian test image is wrong (max alpha {alpha})")
    # The sparse 3x3x3 conv of the decoders (Triton's implicit GEMM on a GPU) on a little cube of voxels.
    from trellis.modules.sparse import SparseTensor
    from trellis.modules.sparse.conv import SparseConv3d
    ijk = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(len(ijk), 1, dtype=torch.long), ijk], 1).int().to(dev)
    conv = SparseConv3d(16, 16, 3).to(dev)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    with torch.no_grad():     # as in inference: the kernel leaves calls that need gradients to the twin
        y = conv.to(dtype)(SparseTensor(feats=torch.randn(len(ijk), 16, generator=gen).to(dev, dtype), coords=coords))
    if y.feats.shape != (len(ijk), 16) or not bool(torch.isfinite(y.feats).all()):
        raise RuntimeError("the sparse conv test gave a wrong result")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    st = fastpaths.status(dev)
    result.update(fast=st["fast"], kernels=st["kernels"], reason=st["reason"], line=fastpaths.describe(dev))
except Exception as e:
    result["error"] = f"{type(e).__name__}: {e}"[:500]
print("FAST-PATHS " + json.dumps(result))
"""

# Error text from pip -> what the user should do.
PIP_HINTS = (
    (("No space left on device", "Errno 28"),
     ("The disk is full. Free some space on the drive of the app folder (the install needs up to 15 GB) and run "
      "it again.")),
    (("Could not find a version that satisfies", "No matching distribution found"),
     ("pip found no wheel for one of the packages on this system. Check that this is 64-bit Python 3.11 or 3.12 "
      "(the plan above says which Python was used); with --wheelhouse, the folder lacks that wheel.")),
    (("THESE PACKAGES DO NOT MATCH THE HASHES", "hash mismatch"),
     "A download arrived damaged. Run it again; if it repeats, clear pip's cache (python -m pip cache purge)."),
    (("Failed to establish a new connection", "Temporary failure in name resolution", "Name or service not known",
      "getaddrinfo failed", "ConnectionError", "ReadTimeoutError", "Connection reset", "ProxyError", "SSLError",
      "CERTIFICATE_VERIFY_FAILED", "timed out"),
     ("The network failed. Check the internet connection (a proxy is taken from HTTPS_PROXY / pip.conf) and run "
      "it again; to install without a network, use --wheelhouse DIR (see docs/install.md, 'Offline install').")),
    (("Permission denied", "Access is denied", "WinError 5", "WinError 32"),
     ("A file in the app folder could not be written. Close Trellis Desktop (and anything else using .venv) and "
      "check that you may write to the app folder.")),
)


class InstallError(Exception):
    """What went wrong and what to do; printed as is."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def hint_for(output: str) -> str:
    for needles, hint in PIP_HINTS:
        if any(n.lower() in output.lower() for n in needles):
            return hint
    return "See the log for pip's full message."


# ------------------------------------------------------------------------------------- the state

def _torch_from_site_packages(venv: Path) -> str | None:
    for pattern in ("lib/python*/site-packages/torch-*.dist-info", "Lib/site-packages/torch-*.dist-info"):
        for d in sorted(venv.glob(pattern)):
            return d.name[len("torch-"):-len(".dist-info")]
    return None


def load_state(layout: Layout) -> dict | None:
    """The install record, or None. A venv made by the old run.sh / run.bat (stamp files
    .venv/.installed-<hash>, the same hash as `app_key`) is recognised without reinstalling."""
    try:
        state = json.loads(layout.state_file.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and state.get("schema") == STATE_SCHEMA else None
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    try:
        app_key = layout.app_key()
    except OSError:
        return None
    if not (layout.venv / f".installed-{app_key}").exists():
        return None
    torch_version = _torch_from_site_packages(layout.venv)
    if torch_version is None:
        return None
    tag = torch_version.partition("+")[2] or "pypi"
    try:
        test_key = layout.test_key()
    except OSError:
        test_key = None
    return {"schema": STATE_SCHEMA, "app_key": app_key,
            "test_key": test_key if (layout.venv / f".installed-{test_key}").exists() else None,
            "torch": torch_version, "cuda_tag": tag, "device": "cuda" if tag.startswith("cu") else "cpu",
            "cpu_requested": False, "env": {}, "legacy_stamps": True}


def write_state(layout: Layout, state: dict) -> None:
    tmp = layout.state_file.with_name(STATE_NAME + ".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    os.replace(tmp, layout.state_file)
    for stamp in layout.venv.glob(".installed-*"):      # the old run.sh / run.bat stamps
        stamp.unlink(missing_ok=True)


def install_reason(layout: Layout, opts: Options, state: dict | None = None) -> str | None:
    """Why an install is needed before the app (or the tests) can start; None when nothing is."""
    if opts.repair:
        return "--repair: rebuilding .venv"
    if opts.update:
        return "--update: re-resolving the install"
    if state is None:
        state = load_state(layout)
    if state is None:
        return "not installed yet" if not layout.venv.exists() else "the installation in .venv is incomplete"
    if not layout.venv_python().exists():
        return f"{layout.venv_python()} is missing"
    try:
        if state.get("app_key") != layout.app_key():
            return "requirements_1.txt or requirements_2.txt changed"
        if opts.test and state.get("test_key") != layout.test_key():
            return "the test tools (requirements_test.txt) are not installed yet"
        if opts.with_ray and state.get("ray_key") != ray_key(layout):
            return f"Ray ({RAY_REQUIREMENTS}, --with-ray) is not installed yet"
    except OSError as e:
        return f"cannot read the requirements: {e}"
    if opts.cpu and state.get("cuda_tag") != "cpu":
        return f"--cpu: the installed PyTorch is the {state.get('cuda_tag')} build"
    return None


# ------------------------------------------------------------------------------------ environment

# Variables that would send a pip install somewhere else than the venv, or change what it resolves.
_PIP_REDIRECTS = ("PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_CONSTRAINT", "PIP_EDITABLE", "PIP_REQUIREMENT",
                  "PIP_NO_DEPS", "PIP_NO_BUILD_ISOLATION", "PIP_UPGRADE", "PIP_FORCE_REINSTALL")


def isolated_env(base: dict | None = None, no_pip_config: bool = False) -> dict:
    """The environment for pip and the app: no user site, PYTHONPATH/PYTHONHOME, conda or other venv.

    pip's configuration (index, mirrors, find-links, proxy, certificates) is kept unless `no_pip_config`:
    it is how a mirror (and CI's local PyTorch wheel) is found."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "VIRTUAL_ENV", "CONDA_PREFIX",
                "CONDA_DEFAULT_ENV", "CONDA_SHLVL", "__PYVENV_LAUNCHER__", *_PIP_REDIRECTS):
        env.pop(key, None)
    if no_pip_config:
        for key in [k for k in env if k.startswith("PIP_")]:
            del env[key]
        env["PIP_CONFIG_FILE"] = os.devnull
    env.update({"PYTHONNOUSERSITE": "1", "PIP_USER": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_INPUT": "1"})
    return env


def base_python() -> str:
    """The interpreter to make the venv with: this one, or the one behind it when run from a venv."""
    if sys.prefix != sys.base_prefix:
        return getattr(sys, "_base_executable", None) or sys.executable
    return sys.executable


# ------------------------------------------------------------------------------------ the install

@dataclass
class Installer:
    layout: Layout
    opts: Options
    log: Log
    env: dict
    sleep: object = time.sleep

    @property
    def pip_log(self) -> Path:
        return self.layout.log_file.with_name("pip.log")

    def pip(self, python: Path, args: list[str], what: str, give_up_on_missing: bool = False) -> tuple[bool, str]:
        """pip install with retries. (ok, what pip said at the end). Output goes to the console as pip
        prints it (progress bars included) and, in full, to logs/pip.log."""
        cmd = [str(python), "-m", "pip", "install", "--only-binary=:all:", "--log", str(self.pip_log), *args]
        attempts = 1 + self.opts.retries
        output = ""
        for attempt in range(1, attempts + 1):
            start = self.pip_log.stat().st_size if self.pip_log.exists() else 0
            self.log.detail("$ " + " ".join(cmd))
            rc = _run_inherit(cmd, self.env, self.layout.app_dir)
            self.log.detail(f"(exit status {rc})")
            output = _read_from(self.pip_log, start)
            if rc == 0:
                return True, output
            not_found = "No matching distribution found" in output or "Could not find a version" in output
            if give_up_on_missing and not_found:
                return False, output
            if attempt < attempts and not not_found and "No space left" not in output:
                self.log.say(f"pip failed while installing {what}; trying again ({attempt + 1} of {attempts})...")
                self.sleep(min(5 * attempt, 30))
                continue
            return False, output
        return False, output

    # ------------------------------------------------------------------ steps
    def create_venv(self) -> None:
        base = base_python()
        self.log.say(f"Creating .venv with {base} (Python {sys.version.split()[0]})")
        rc, out = self.log.run([base, "-m", "venv", str(self.layout.venv)], env=self.env, echo=False)
        if rc != 0 or not self.layout.venv_python().exists():
            debian = ("On Debian/Ubuntu install the venv module first: sudo apt install python3-venv "
                      f"(or python{sys.version_info[0]}.{sys.version_info[1]}-venv). " if sys.platform.startswith(
                          "linux") else "")
            raise InstallError(f"Could not create the virtual environment .venv with {base}:\n{_last_lines(out)}\n"
                               f"{debian}Then run the installer again.")

    def torch_sources(self, plan) -> list[tuple[str, list[str]]]:
        if self.opts.wheelhouse:
            return [(f"the wheelhouse {self.opts.wheelhouse}", self.wheelhouse_args())]
        if self.opts.torch_index_url:
            return [(self.opts.torch_index_url, ["--index-url", self.opts.torch_index_url])]
        return [("pip's configured sources", []), (plan.torch_index_url, ["--index-url", plan.torch_index_url])]

    def wheelhouse_args(self) -> list[str]:
        wh = os.path.abspath(self.opts.wheelhouse)
        if not os.path.isdir(wh):
            raise InstallError(f"--wheelhouse {self.opts.wheelhouse}: no such folder. Make one on a computer with "
                               "internet access (docs/install.md, 'Offline install') and copy it here.")
        return ["--no-index", "--find-links", wh]

    def install_torch(self, python: Path, plan) -> str:
        requirement = plan.packages[0]
        output = ""
        sources = self.torch_sources(plan)
        for i, (where, args) in enumerate(sources):
            last = i == len(sources) - 1
            self.log.say(f"Installing PyTorch ({requirement}) from {where}...")
            ok, output = self.pip(python, [requirement, *args], "PyTorch", give_up_on_missing=not last)
            if ok:
                self.log.detail(f"PyTorch came from {where}")
                return where
            if not last:
                self.log.say(f"{where} do not have {requirement}; using {sources[i + 1][0]}.")
        raise InstallError(f"Installing PyTorch ({requirement}) failed. {hint_for(output)}")

    def install_requirements(self, python: Path, names: list[str], constraints: list[Path], what: str) -> None:
        args = []
        for n in names:
            args += ["-r", str(self.layout.requirement(n))]
        for c in constraints:
            args += ["-c", str(c)]
        if self.opts.wheelhouse:
            args += self.wheelhouse_args()
        self.log.say(f"Installing {what}...")
        ok, output = self.pip(python, args, what)
        if not ok:
            raise InstallError(f"Installing {what} failed. {hint_for(output)}")

    def check_imports(self, python: Path, names: list[str], plan_env: dict) -> None:
        modules = [import_name(n) for n in names]
        self.log.say(f"Checking that every package imports ({len(modules)})...")
        rc, out = self.log.run([str(python), "-c", IMPORT_CHECK, *modules], env={**self.env, **plan_env},
                               echo=False, shown=f"{python} -c <import check> {' '.join(modules)}")
        failed = None
        for line in out.splitlines():
            if line.startswith("IMPORT-CHECK "):
                failed = json.loads(line[len("IMPORT-CHECK "):])
        if rc != 0 or failed is None:
            raise InstallError(f"The installed packages do not work: importing them failed:\n{_last_lines(out)}\n"
                               "Run the installer with --repair to rebuild .venv.")
        if failed:
            listing = "\n".join(f"  {k}: {v}" for k, v in failed.items())
            raise InstallError(f"These packages were installed but cannot be imported:\n{listing}\nOn Windows this "
                               "usually means the Microsoft Visual C++ Redistributable is missing "
                               "(https://aka.ms/vs/17/release/vc_redist.x64.exe); otherwise run the installer "
                               "with --repair.")

    def cuda_smoke(self, python: Path, plan) -> str:
        self.log.say("Checking that PyTorch can use the GPU...")
        _, out = self.log.run([str(python), "-c", CUDA_SMOKE], env={**self.env, **plan.env}, echo=False,
                               shown=f"{python} -c <CUDA smoke test>")
        for line in out.splitlines():
            if line.startswith("CUDA-OK "):
                return line[len("CUDA-OK "):]
        gpu = plan.gpu["name"] if plan.gpu else "the GPU"
        raise InstallError(
            f"PyTorch ({plan.packages[0]}) was installed but could not compute on {gpu}:\n{_last_lines(out)}\n"
            "Update the NVIDIA driver (https://www.nvidia.com/drivers) and run the installer with --update, or "
            "install the CPU build instead with --cpu (slow, but it works without the GPU).")

    def install_optional(self, python: Path, plan, constraint: Path) -> dict:
        """The plan's optional accelerators (triton-windows). {"installed": [...], "failed": {requirement: why}}:
        the app runs without them (the PyTorch paths), so a failure is said, not raised."""
        done: dict = {"installed": [], "failed": {}}
        for requirement in plan.optional_packages:
            args = [requirement, "-c", str(constraint)]
            if self.opts.wheelhouse:
                args += self.wheelhouse_args()
            self.log.say(f"Installing {requirement} (optional: the fast GPU kernels)...")
            ok, output = self.pip(python, args, requirement)
            if ok:
                done["installed"].append(requirement)
            else:
                done["failed"][requirement] = hint_for(output)
                self.log.say(f"  ! {requirement} could not be installed ({hint_for(output)}). The app works "
                             "without it, on its slower PyTorch paths; run the installer with --update to try "
                             "again.")
        return done

    def fast_path_check(self, python: Path, plan, device: str = "cuda") -> dict:
        """Render through each fast kernel once (FAST_PATH_CHECK) and say whether the fast paths work."""
        self.log.say("Checking the fast GPU kernels (Triton compiles them on first use)...")
        rc, out = self.log.run([str(python), "-c", FAST_PATH_CHECK, device], env={**self.env, **plan.env},
                               cwd=self.layout.app_dir, echo=False, shown=f"{python} -c <fast path check> {device}")
        result = parse_fast_path_check(out)
        if result is None:
            result = {"device": device, "fast": False, "line": None, "kernels": {}, "reason": None,
                      "error": f"the check stopped (exit status {rc}):\n{_last_lines(out, 6)}"}
        if result["fast"]:
            self.log.say(f"Fast paths work: {result['line']}.")
        else:
            why = result["error"] or result["reason"] or "unknown"
            self.log.say(f"  ! The fast GPU kernels are off ({why}). The app works on its slower PyTorch paths "
                         "(the same results).")
        return result


def parse_fast_path_check(output: str) -> dict | None:
    """The FAST-PATHS record FAST_PATH_CHECK printed, or None when it printed none (it crashed)."""
    for line in reversed(output.splitlines()):
        if line.startswith("FAST-PATHS "):
            try:
                result = json.loads(line[len("FAST-PATHS "):])
            except ValueError:
                return None
            return result if isinstance(result, dict) and "fast" in result else None
    return None


def import_name(requirement_name: str) -> str:
    from .licences import normalise

    key = normalise(requirement_name)
    return IMPORT_NAMES.get(key, key.replace("-", "_"))


def _run_inherit(cmd: list[str], env: dict, cwd) -> int:
    import subprocess

    try:
        return subprocess.call(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    except OSError as e:
        print(f"could not start {cmd[0]}: {e.strerror or e}", file=sys.stderr)
        return 127


def _read_from(path: Path, offset: int, limit: int = 200_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _last_lines(text: str, n: int = 15) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join("  " + line for line in lines[-n:]) or "  (no output)"


# --------------------------------------------------------------------------- venv swap (atomic-ish)

def recover_interrupted(layout: Layout, log: Log) -> None:
    """A previous install stopped half-way (power cut, Ctrl-C): put the last good venv back."""
    prev = layout.venv_previous
    if not prev.exists():
        return
    if layout.state_file.exists():
        log.detail("removing the old .venv.previous left by a finished install")
        shutil.rmtree(prev, ignore_errors=True)
        return
    log.say("An earlier install was interrupted; restoring the previous .venv first.")
    if layout.venv.exists():
        _rmtree(layout.venv)
    os.replace(prev, layout.venv)


def _rmtree(path: Path) -> None:
    def retry_writable(func, p, _exc):
        try:
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry_writable)
    else:
        shutil.rmtree(path, onerror=retry_writable)


def _move_aside(layout: Layout) -> bool:
    if not layout.venv.exists():
        return False
    if layout.venv_previous.exists():
        _rmtree(layout.venv_previous)
    try:
        os.replace(layout.venv, layout.venv_previous)
    except OSError as e:
        raise InstallError(f"Cannot move the old .venv aside ({e.strerror or e}): a file in it is in use. Close "
                           "Trellis Desktop (and any terminal or editor using .venv) and try again.") from None
    return True


# ------------------------------------------------------------------------------------- entry points

def check(layout: Layout, opts: Options, out=None) -> int:
    out = out or sys.stderr
    state = load_state(layout)
    reason = install_reason(layout, opts, state)
    if reason is None:
        return EXIT_OK
    print(f"Trellis Desktop: install needed ({reason}).", file=out)
    return EXIT_NEEDS_INSTALL


def install(layout: Layout, opts: Options, log: Log, system=None, sleep=time.sleep) -> int:
    try:
        return _install(layout, opts, log, system, sleep)
    except InstallError as e:
        log.error(f"\n{e}\nThe full log is {layout.log_file} "
                  f"(pip's own output: {layout.log_file.with_name('pip.log')}).")
        return EXIT_ERROR
    except KeyboardInterrupt:
        log.error("Install interrupted; the next start continues it.")
        return 130


def _install(layout: Layout, opts: Options, log: Log, system, sleep) -> int:
    from .detect import detect_system
    from .plan import TORCH_PYTHONS, describe, make_plan

    log.detail(f"==== install {_now()} {opts}")
    recover_interrupted(layout, log)
    state = load_state(layout)
    reason = install_reason(layout, opts, state)
    if reason is None:
        log.say("Trellis Desktop is installed and up to date.")
        return EXIT_OK
    env = isolated_env(no_pip_config=opts.no_pip_config)
    inst = Installer(layout, opts, log, env, sleep)
    if opts.wheelhouse:
        inst.wheelhouse_args()          # a wrong folder is reported before anything is touched
    if inst.pip_log.exists():     # pip's --log is verbose (tens of MB per install): keep the last install's only
        try:
            os.replace(inst.pip_log, inst.pip_log.with_name("pip.log.1"))
        except OSError:
            pass
    python = layout.venv_python()

    # Only the test tools are missing: add them to the working venv.
    app_ok = install_reason(layout, Options(cpu=opts.cpu), state) is None
    if (opts.test or opts.with_ray) and app_ok and not (opts.repair or opts.update):
        constraint = _torch_constraint(layout, state["torch"])
        constraints = [layout.requirement(n) for n in APP_REQUIREMENTS] + [constraint]
        if opts.test and state.get("test_key") != layout.test_key():
            inst.install_requirements(python, [TEST_REQUIREMENTS], constraints, "the test tools")
            state = {**state, "test_key": layout.test_key()}
            log.say("Test tools installed.")
        if opts.with_ray and state.get("ray_key") != ray_key(layout):
            inst.install_requirements(python, [RAY_REQUIREMENTS], constraints, f"Ray ({RAY_REQUIREMENTS})")
            state = {**state, "ray_key": ray_key(layout)}
            log.say("Ray installed.")
        state.pop("legacy_stamps", None)
        write_state(layout, state)
        return EXIT_OK

    log.say(f"Installing Trellis Desktop into {layout.venv} ({reason}).")
    if system is None:
        system = detect_system(app_dir=str(layout.app_dir))
    keep_cpu = bool(state and state.get("cpu_requested")) and not opts.update
    force_cpu = opts.cpu or keep_cpu
    if opts.gpu_build:
        from .target import plan_for_build

        try:
            plan = plan_for_build(system, opts.gpu_build)
        except ValueError as e:
            raise InstallError(str(e)) from None
    else:
        plan = make_plan(system, force_cpu=force_cpu)
    log.detail(describe(plan))
    py = tuple(system.python[:2])
    if not TORCH_PYTHONS[0] <= py <= TORCH_PYTHONS[1]:
        raise InstallError(next(w for w in plan.warnings if "cannot be used" in w))
    where = f"GPU {plan.gpu['index']}: {plan.gpu['name']}" if plan.gpu else "CPU"
    extras = f" + {', '.join(plan.optional_packages)}" if plan.optional_packages else ""
    log.say(f"Plan: {plan.packages[0]}{extras} for the {where}; attention {plan.attention_backend}, preset "
            f"{plan.precision}{', model offload' if plan.offload == 'model' else ''}. "
            "(Details: python -m installer plan)")
    for w in plan.warnings:
        log.say(f"  ! {w}")
    log.say("This takes a few minutes (PyTorch alone is a large download).")

    had_previous = _move_aside(layout)
    try:
        inst.create_venv()
        source = inst.install_torch(python, plan)
        torch_version = _installed_torch(layout) or plan.packages[0].split("==", 1)[1]
        constraint = _torch_constraint(layout, torch_version)
        inst.install_requirements(python, ["requirements_2.txt"], [constraint],
                                  "the app's packages (requirements_2.txt)")
        optional = inst.install_optional(python, plan, constraint)
        if opts.test:
            inst.install_requirements(python, [TEST_REQUIREMENTS],
                                      [layout.requirement(n) for n in APP_REQUIREMENTS] + [constraint],
                                      "the test tools")
        with_ray = opts.with_ray or bool(state and state.get("ray_key"))
        if with_ray:
            inst.install_requirements(python, [RAY_REQUIREMENTS],
                                      [layout.requirement(n) for n in APP_REQUIREMENTS] + [constraint],
                                      f"Ray ({RAY_REQUIREMENTS})")
        from .licences import requirement_names

        names = []
        for n in APP_REQUIREMENTS:
            names += requirement_names(str(layout.requirement(n)))
        inst.check_imports(python, names, plan.env)
        on_gpu = plan.device == "cuda" and not opts.gpu_build        # --gpu-build: the GPU is elsewhere
        gpu_check = inst.cuda_smoke(python, plan) if on_gpu else None
        fast_paths = inst.fast_path_check(python, plan) if on_gpu else None
        new_state = {
            "schema": STATE_SCHEMA, "installed_at": _now(), "app_key": layout.app_key(),
            "test_key": layout.test_key() if opts.test else None,
            "ray_key": ray_key(layout) if with_ray else None,
            "python": ".".join(map(str, system.python)), "base_python": base_python(),
            "torch": torch_version, "torch_source": source, "cuda_tag": plan.cuda_tag, "device": plan.device,
            "cpu_requested": force_cpu, "gpu": plan.gpu, "gpu_check": gpu_check, "fast_paths": fast_paths,
            "optional_packages": optional["installed"], "optional_failed": optional["failed"], "env": plan.env,
            "attention_backend": plan.attention_backend, "precision": plan.precision, "offload": plan.offload,
            "warnings": plan.warnings,
        }
        write_state(layout, new_state)
    except BaseException:
        log.detail("install failed; removing the new .venv")
        if layout.venv.exists():
            _rmtree(layout.venv)
        if had_previous:
            os.replace(layout.venv_previous, layout.venv)
            log.say("The previous installation in .venv was kept unchanged.")
        raise
    if had_previous:
        _rmtree(layout.venv_previous)
    log.say(f"Installed: torch {torch_version} ({plan.cuda_tag}) from {source}."
            + (f" GPU check passed: {gpu_check}." if gpu_check else "")
            + (f" Fast paths: {'on' if fast_paths['fast'] else 'off (slower PyTorch paths)'}." if fast_paths else ""))
    return EXIT_OK


def _installed_torch(layout: Layout) -> str | None:
    return _torch_from_site_packages(layout.venv)


def _torch_constraint(layout: Layout, torch_version: str) -> Path:
    """A constraints file that keeps the installed PyTorch build while the other packages install."""
    path = layout.venv / "trellis-torch-constraint.txt"
    path.write_text(f"torch=={torch_version}\n", encoding="utf-8")
    return path
