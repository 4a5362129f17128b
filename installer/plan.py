"""The install plan: which PyTorch build fits this GPU and driver, which backends and preset the app starts with.

Every decision comes from a rule in `RULES` (id -> where the fact comes from) and the plan lists the
rules it applied, so a reader can check each choice against its published source. The rules are
data: when PyTorch or NVIDIA publish a new matrix, edit the tables below, not the logic.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .detect import Gpu, System, parse_version

TORCH_VERSION = "2.13.0"                          # requirements_1.txt pins the same (tests check)
# Older releases, planned only where no build of TORCH_VERSION runs (RULES["torch_builds_older"]); CI runs the
# library's tests on the oldest of them (OLDEST_TORCH_VERSION, .ci/run).
TORCH_VERSION_CU128 = "2.11.0"                    # the last release with a CUDA 12.8 build
TORCH_VERSION_CU118 = "2.7.1"                     # the last release with a CUDA 11.8 build
TORCH_INDEX = "https://download.pytorch.org/whl/"  # + cuda tag ("cu130") or "cpu"
# Triton for PyTorch's Windows wheels (which ship none): the triton-windows release of the Triton line
# TORCH_VERSION is built with (RULES["triton_windows"]). tests/installer/test_triton_windows.py checks that PyPI has
# its win_amd64 wheels for every supported Python.
TRITON_WINDOWS_VERSION = "3.7.1.post27"
TRITON_WINDOWS_VERSION_CU128 = "3.6.0.post26"     # for torch 2.11.0 (RULES["triton_windows_2_11"])
TRITON_MIN_CC = (7, 0)                            # trellis/fastpaths.py MIN_CAPABILITY (tests check)
TRITON_TESTED_CC = (8, 0)                         # what Triton's developers list as supported


# ------------------------------------------------------------------------------------ the rules

RULES: dict[str, str] = {
    "torch_builds":
        "PyTorch 2.13 publishes CUDA 12.6 (legacy, for older GPUs) and CUDA 13.0 (stable) wheels on "
        "download.pytorch.org, plus CUDA 13.2 as experimental; the CUDA 12.8 build was dropped in 2.12 "
        "(pytorch/pytorch RELEASE.md release matrix, PR #187075; RFC #178665). shared/research/dependencies.md §6 "
        "still lists cu128, which applied to 2.11.",
    "gpu_arch":
        "PyTorch CUDA Support Matrix for 2.12-2.14, Linux x86 and Windows builds (pytorch/pytorch RELEASE.md, "
        "PR #182849 and #197555): CUDA 12.6.3 = Maxwell 5.0, Pascal 6.0, Volta 7.0, Turing 7.5, Ampere 8.0/8.6, "
        "Hopper 9.0; CUDA 13.0.2 = Turing 7.5, Ampere 8.0/8.6, Hopper 9.0, Blackwell 10.0/12.0 (+PTX, Linux only).",
    "binary_compat":
        "CUDA C++ Programming Guide, 'Binary Compatibility': code built for compute capability X.y runs on X.z "
        "for z >= y (so sm_86 kernels run on 8.9, sm_120 on 12.1), never on another major version; PTX is "
        "compiled by the driver for newer GPUs.",
    "driver_cuda12":
        "NVIDIA CUDA Toolkit Release Notes, 'CUDA Toolkit and Corresponding Driver Versions': CUDA 12.6 Update 3 "
        "needs >= 560.35.05 (Linux) / >= 561.17 (Windows); CUDA 12.x minor-version compatibility runs on "
        ">= 525.60.13 (Linux) / >= 528.33 (Windows) (CUDA Compatibility guide). That holds for PyTorch's CUDA 12 "
        "wheels because they carry their own CUDA runtime and libraries (torch 2.7.1's Linux wheel on PyPI requires "
        "nvidia-cuda-runtime-cu12==12.6.77, nvidia-cublas-cu12, nvidia-cudnn-cu12, ...; the Windows wheels ship the "
        "DLLs), so only the driver comes from the system, and the kernels they launch are compiled SASS, which "
        "minor-version compatibility covers (JIT-compiling PTX would need the full driver of that CUDA release).",
    "driver_cuda13":
        "NVIDIA CUDA Toolkit 13.x Release Notes, 'CUDA Driver': CUDA 13.0 corresponds to driver branch R580 "
        "(13.0 GA >= 580.65.06 on Linux) and 13.x applications run on drivers >= 580 under minor-version "
        "compatibility; nothing older runs CUDA 13.",
    "torch_builds_older":
        "Older PyTorch releases keep a CUDA build for drivers that cannot run CUDA 12.6 U3 / 13.0 wheels of "
        "torch 2.13: torch 2.11.0 is the last release with a CUDA 12.8 (cu128) build (pytorch/FBGEMM#5976, checked on "
        "download.pytorch.org: 'cu128's last version was 2.11'; pytorch/pytorch#179072 removed cu128 for 2.12) and "
        "torch 2.7.1 the last with a CUDA 11.8 (cu118) build (pytorch/pytorch RFC #147383: CUDA 11.8 kept as legacy "
        "in 2.7 and dropped in 2.8). Both have win_amd64 and manylinux_2_28_x86_64 wheels for CPython 3.11 and 3.12 "
        "(e.g. download.pytorch.org/whl/cu118/torch-2.7.1%2Bcu118-cp311-cp311-win_amd64.whl and "
        ".../whl/cu128/torch-2.11.0%2Bcu128-cp312-cp312-win_amd64.whl; PyPI's torch 2.7.1 and 2.11.0 list "
        "cp39-cp313 and cp310-cp314). The plan takes the NEWEST release whose build runs on the driver and has "
        "code for the GPU; a newer release always wins over an older one.",
    "gpu_arch_cu128":
        "PyTorch CUDA Support Matrix for release 2.11 (pytorch/pytorch RELEASE.md, PR #175253; RFC #172352 dropped "
        "Volta from cu128 in 2.11): CUDA 12.8.1 = Turing 7.5, Ampere 8.0/8.6, Hopper 9.0, Blackwell 10.0/12.0 on "
        "Linux x86 and Windows, no PTX (.ci/pytorch/windows/cuda128.bat: TORCH_CUDA_ARCH_LIST=7.5;8.0;8.6;9.0;10.0;"
        "12.0). The only build before torch 2.13's cu130 with Blackwell (sm_120) code.",
    "gpu_arch_cu118":
        "torch 2.7's CUDA 11.8 build: Windows compiles TORCH_CUDA_ARCH_LIST=3.7+PTX;5.0;6.0;6.1;7.0;7.5;8.0;8.6;9.0 "
        "(pytorch/pytorch .ci/pytorch/windows/cuda118.bat); the Linux binaries hold sm_37, sm_50, sm_60, sm_70, "
        "sm_75, sm_80, sm_86, sm_90 (cuobjdump table of pytorch-2.7.0 cuda11.8, moi90/pytorch_compute_capabilities). "
        "So Maxwell 5.x, Pascal 6.x (GTX 10xx: sm_61 on Windows, sm_60 code on Linux by binary compatibility) through "
        "Hopper; Kepler 3.7 is left out as it is below this app's floor of compute capability 5.0 (docs/install.md, 'Requirements').",
    "driver_cuda12_8":
        "NVIDIA CUDA Toolkit Release Notes, 'CUDA Toolkit and Corresponding Driver Versions': CUDA 12.8 Update 1 "
        "needs >= 570.124.06 (Linux) / >= 572.61 (Windows); older 12.x drivers (>= 525.60.13 Linux / >= 528.33 "
        "Windows) run it under CUDA minor-version compatibility (CUDA Compatibility guide). Blackwell GPUs need an "
        "R570 or newer driver in any case.",
    "driver_cuda11":
        "NVIDIA CUDA Toolkit Release Notes, 'CUDA Toolkit and Corresponding Driver Versions': CUDA 11.8 GA needs "
        ">= 520.61.05 (Linux) / >= 520.06 (Windows); CUDA 11.x minor-version compatibility runs it on >= 450.80.02 "
        "(Linux) / >= 452.39 (Windows) (same notes, 'Minimum Required Driver Version for CUDA Minor Version "
        "Compatibility'; CUDA Compatibility guide). PyTorch's cu118 wheels carry their own CUDA 11.8 runtime.",
    "triton_windows_cu118":
        "triton-windows README, section 'PyTorch': 'PyTorch tagged with CUDA 12 is required. CUDA 11 is not "
        "supported.' and section 'CUDA': its wheels bundle a CUDA 12 toolchain that works with CUDA 12.x drivers "
        "through minor-version compatibility; 'CUDA 11 and older versions are not supported'. So a cu118 plan (a "
        "driver older than CUDA 12) gets no triton-windows.",
    "wsl_driver":
        "NVIDIA CUDA on WSL User Guide: inside WSL the GPU driver is the Windows driver, so its version is "
        "checked against the Windows column.",
    "platform":
        "PyTorch's CUDA wheels for the builds above (and this app's installer) cover Windows and Linux on "
        "x86-64; other systems get the CPU build (DESIGN.md: Windows/Linux app on the user's NVIDIA GPU).",
    "no_gpu_cpu":
        "No usable NVIDIA GPU: the CPU wheels at https://download.pytorch.org/whl/cpu (DESIGN.md: CPU runs "
        "everything, slowly).",
    "cpu_requested":
        "--cpu (run.sh / run.bat / TrellisDesktop): the CPU build of PyTorch whatever GPU is present (docs/install.md).",
    "torch_local_version":
        "PyTorch's wheel indexes (download.pytorch.org/whl/<tag>) name their Linux and Windows x86-64 wheels "
        "with a PEP 440 local version, 2.13.0+cu130 / 2.13.0+cu126 / 2.13.0+cpu; PyPI hosts no local versions "
        "(PEP 440, 'Local version identifiers'), so pinning the local version picks exactly the planned build "
        "from whichever source has it. macOS and Arm wheels carry no local version.",
    "cc_from_name":
        "Compute capability looked up from the GPU's name when nvidia-smi cannot report it: NVIDIA, "
        "'CUDA GPUs - Compute Capability' (https://developer.nvidia.com/cuda-gpus).",
    "attention_varlen":
        "attention 'torch_varlen': torch.nn.attention.varlen.varlen_attn, the FlashAttention-2 kernel inside "
        "PyTorch (dependencies.md §5-6, trellis/modules/attention); FlashAttention-2 refuses GPUs below compute "
        "capability 8.0 ('FlashAttention only supports Ampere GPUs or newer').",
    "attention_varlen_torch":
        "torch.nn.attention.varlen.varlen_attn is new in PyTorch 2.10 (pytorch/pytorch PR #164502, release feature "
        "RFC #171814); with an older torch (the cu118 plan's 2.7.1) the library's attention falls back to SDPA "
        "(trellis/modules/attention/functional.py: has_torch_varlen).",
    "attention_cudnn":
        "on compute capability 9.0 and newer PyTorch's cuDNN attention can run the flows (ATTN_BACKEND / "
        "SPARSE_ATTN_BACKEND=cudnn): faster than FlashAttention-2 per call, but slower in the whole v1 chain, so "
        "'auto' keeps FlashAttention-2 below trellis.tuning's cudnn_min_tokens query tokens and takes cuDNN for "
        "longer sequences (TRELLIS.2's 1024 flows) (measured: docs/benchmarks/kernels.md, trellis2.md; "
        "trellis/modules/attention/functional.py: cudnn_in_auto).",
    "attention_sdpa":
        "attention 'sdpa': padded/per-sequence scaled_dot_product_attention, which runs on every device "
        "(trellis/modules/attention/functional.py); used on the CPU and on GPUs below compute capability 8.0.",
    "sparse_conv_torch":
        "sparse conv 'torch': our gather-GEMM convolution (trellis/modules/sparse/conv.py) measured faster than "
        "spconv-cu126 on the flows' layers (docs/benchmarks/kernels.md).",
    "preset_memory":
        "precision/offload: the thresholds of trellis/pipelines/memory.py::pick_preset (precision_for: fp16, fp32 "
        "on compute capability < 7.0 with >= 7.5 GiB; model offload below 10 GiB free (fp32: 16); sequential CFG "
        "below 6 GiB free (fp32: 12); fp32 on the CPU), applied to an estimate of free memory (memory.total minus "
        "512 MiB for the CUDA context and the desktop).",
    "xformers_not_planned":
        "xformers is not installed: its wheels are built for one torch build (0.0.35: torch 2.10.0+cu128) and "
        "cannot load their kernels with another (shared/research/dependencies.md §1, §6).",
    "flash_attn_not_planned":
        "flash-attn is not installed: PyPI has only its source (needs nvcc), no wheels (dependencies.md §1).",
    "spconv_not_planned":
        "spconv is not installed: PyPI spconv has no sm_100/sm_120 kernels (dependencies.md §1; "
        "traveller59/spconv#746) and our torch sparse conv is faster (docs/benchmarks/kernels.md).",
    "multi_gpu":
        "CUDA C++ Programming Guide, 'CUDA Environment Variables': CUDA numbers GPUs fastest-first unless "
        "CUDA_DEVICE_ORDER=PCI_BUS_ID, which matches nvidia-smi's order; CUDA_VISIBLE_DEVICES picks the GPU.",
    "pascal_fp16":
        "CUDA C++ Programming Guide, 'Arithmetic Instructions' throughput table: compute capability 6.1 runs "
        "16-bit float add/multiply at 2 results per clock per SM, against 128 for 32-bit float.",
    "small_gpu":
        "docs/benchmarks/memory.md: the low-VRAM preset (fp16, model offload, sequential CFG) peaked at 2.78 GiB "
        "allocated on the 20 000-voxel benchmark structure.",
    "python_version":
        "DESIGN.md and dependencies.md §1: Python 3.11 (3.12 fine), not 3.10; torch 2.13 has wheels for "
        "3.10-3.15 (pytorch/pytorch PR #187075).",
    "disk_space":
        "dependencies.md §1-2: the venv with CPU torch is 2.2 GB; a CUDA torch adds about 3 GB of nvidia-* "
        "wheels; the weights (TRELLIS-image-large, DINOv2 ViT-L/14, u2net) are about 4.5 GB.",
    "triton_windows":
        "PyTorch's Windows wheels ship no Triton, so on Windows the app's Triton kernels need the triton-windows "
        "wheel (PyPI, MIT; wheels for CPython 3.10-3.14 on win_amd64 with a bundled CUDA toolchain and C "
        "compiler). Its version follows PyTorch's: torch 2.13.0's own wheel metadata requires triton==3.7.1 on "
        "Linux (Requires-Dist: triton==3.7.1; platform_system == \"Linux\"); the triton-windows README, "
        "section 'PyTorch': 'Each PyTorch minor version is only guaranteed to work with a specific Triton minor "
        "version' (its table: 2.6-3.2, 2.7-3.3, ..., 2.10-3.6); triton-lang/triton-windows#42, its maintainer: "
        "'torch 2.13 works with triton 3.7.x'. So the pin is the newest 3.7.1 build, 3.7.1.post27.",
    "triton_windows_2_11":
        "torch 2.11.0's own wheel metadata (PyPI, manylinux_2_28_x86_64) requires triton==3.6.0 on Linux, and the "
        "triton-windows README pairs each PyTorch minor version with one Triton minor version; so where the plan "
        "picks torch 2.11.0 (the cu128 build) the triton-windows pin is the newest 3.6.0 build, 3.6.0.post26 (PyPI "
        "has its win_amd64 wheels for CPython 3.10-3.14).",
    "triton_floor":
        "Triton compiles for NVIDIA GPUs of compute capability 7.0 and newer (trellis/fastpaths.py "
        "MIN_CAPABILITY; the triton-windows README: 'GTX 10xx (Pascal architecture, sm61) and older: This is not "
        "supported'); Triton's developers list 8.0 and newer as supported, so on 7.x the install's GPU check "
        "compiles and runs our kernels and records whether they work.",
    "triton_linux":
        "On Linux, PyTorch's CUDA wheels require Triton themselves (torch 2.13.0: triton==3.7.1 from PyPI), so "
        "the plan adds nothing for the fast kernels.",
    "fast_path_fallback":
        "trellis/fastpaths.py: every Triton kernel has a pure-PyTorch twin with the same results; where Triton "
        "cannot run (no Triton, compute capability below 7.0, a failed compile) the twin runs, slower.",
    "windows_long_paths":
        "Microsoft, 'Maximum Path Length Limitation': paths are limited to 260 characters unless "
        "LongPathsEnabled is set; the deepest file of our venv is about 200 characters below the app folder "
        "(torch 2.13's bundled licence files, measured).",
}


@dataclass(frozen=True)
class TorchCudaBuild:
    tag: str                                   # wheel index and local version: cu130, cu126
    torch: str                                 # the PyTorch release planned with this build
    cuda: str                                  # CUDA toolkit the wheels are built with
    sass: tuple[tuple[int, int], ...]          # GPU code compiled in (Linux x86-64 and Windows)
    ptx_linux: tuple[int, int] | None          # PTX also shipped on Linux: the driver compiles it for newer GPUs
    driver_full: dict[str, str]                # the driver of this CUDA release, per OS
    driver_compat: dict[str, str]              # the oldest driver under CUDA minor-version compatibility
    pythons: tuple[tuple[int, int], tuple[int, int]]   # inclusive range of CPython versions with wheels
    triton_windows: str | None                 # the triton-windows pin for this torch (None: none works)
    rules: tuple[str, ...]

    def kernel_for(self, cc: tuple[int, int], os_name: str) -> str | None:
        """"sass" if compiled code runs on this GPU, "ptx" if only the JIT path does, else None."""
        if any(major == cc[0] and minor <= cc[1] for major, minor in self.sass):
            return "sass"
        if self.ptx_linux is not None and os_name == "Linux" and cc >= self.ptx_linux:
            return "ptx"
        return None

    @property
    def name(self) -> str:
        return f"torch {self.torch}+{self.tag}"

    @property
    def arch_range(self) -> str:
        lo, hi = self.sass[0], self.sass[-1]
        return f"{self.name}: compute capability {lo[0]}.{lo[1]} to {hi[0]}.x"


# In order of preference: PyTorch's stable build first, the legacy one for GPUs and drivers it leaves out, then
# older releases for drivers too old for both. cu132 is experimental in 2.13 and not planned. choose_build
# takes the newest torch release that fits; this order only breaks ties within one release.
TORCH_CUDA_BUILDS: tuple[TorchCudaBuild, ...] = (
    TorchCudaBuild(
        tag="cu130", torch=TORCH_VERSION, cuda="13.0.2",
        sass=((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)), ptx_linux=(12, 0),
        driver_full={"Linux": "580.65.06", "Windows": "580"},
        driver_compat={"Linux": "580", "Windows": "580"},
        pythons=((3, 10), (3, 15)), triton_windows=TRITON_WINDOWS_VERSION,
        rules=("torch_builds", "gpu_arch", "driver_cuda13"),
    ),
    TorchCudaBuild(
        tag="cu126", torch=TORCH_VERSION, cuda="12.6.3",
        sass=((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)), ptx_linux=None,
        driver_full={"Linux": "560.35.05", "Windows": "561.17"},
        driver_compat={"Linux": "525.60.13", "Windows": "528.33"},
        pythons=((3, 10), (3, 15)), triton_windows=TRITON_WINDOWS_VERSION,
        rules=("torch_builds", "gpu_arch", "driver_cuda12"),
    ),
    TorchCudaBuild(
        tag="cu128", torch=TORCH_VERSION_CU128, cuda="12.8.1",
        sass=((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)), ptx_linux=None,
        driver_full={"Linux": "570.124.06", "Windows": "572.61"},
        driver_compat={"Linux": "525.60.13", "Windows": "528.33"},
        pythons=((3, 10), (3, 14)), triton_windows=TRITON_WINDOWS_VERSION_CU128,
        rules=("torch_builds_older", "gpu_arch_cu128", "driver_cuda12_8"),
    ),
    TorchCudaBuild(
        tag="cu118", torch=TORCH_VERSION_CU118, cuda="11.8.0",
        sass=((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)), ptx_linux=None,
        driver_full={"Linux": "520.61.05", "Windows": "520.06"},
        driver_compat={"Linux": "450.80.02", "Windows": "452.39"},
        pythons=((3, 9), (3, 13)), triton_windows=None,
        rules=("torch_builds_older", "gpu_arch_cu118", "driver_cuda11"),
    ),
)
OLDEST_TORCH_VERSION = min((b.torch for b in TORCH_CUDA_BUILDS), key=lambda v: tuple(map(int, v.split("."))))

# Same thresholds as trellis/pipelines/memory.py::pick_preset. Not imported from there: the installer
# runs before torch exists. tests/installer/test_installer.py checks that the two agree.
RESIDENT_BUDGET_BYTES = 10 * 2 ** 30     # memory.RESIDENT_BUDGET_BYTES: below it, model offload
CFG_BATCH_MIN_BYTES = 6 * 2 ** 30        # below it, the CFG passes run one after the other
RESIDENT_BUDGET_FP32_BYTES = 16 * 2 ** 30   # memory.RESIDENT_BUDGET_FP32_BYTES: the same in fp32 (CFG: twice)
FP32_MIN_GIB = 7.5                       # memory.FP32_MIN_GIB: Pascal and older with this much memory run fp32
# pick_preset measures free memory when the app starts; the installer only has memory.total. The CUDA
# context and (on the display GPU) the desktop usually hold a few hundred MiB before the app starts.
ASSUMED_IN_USE_MIB = 512
SMALL_GPU_FREE_BYTES = 4 * 2 ** 30       # below this, warn: little room above the low-VRAM peak
LOW_VRAM_PEAK_GIB = 2.78                 # low-VRAM preset, peak allocated (docs/benchmarks/memory.md#low-vram-peak)

# Estimates for the app folder (venv + weights + room for pip's unpacking), see RULES["disk_space"].
DISK_NEEDED_GIB = {"cpu": 8, "cuda": 15}
# Windows without long paths: the app folder path plus this must stay under 260 characters. Measured:
# the longest file below the app folder is ".venv/" + 200 characters on Linux (torch 2.13's bundled
# licence files under lib/python3.11/site-packages); Windows' Lib\site-packages is 11 characters
# shorter and a "+cu130" dist-info 2 longer, so 200 covers ".venv\" as well.
WINDOWS_MAX_PATH = 260
DEEPEST_VENV_FILE_CHARS = 200

SUPPORTED_PYTHONS = ((3, 11), (3, 12))
VARLEN_MIN_TORCH = (2, 10)               # torch.nn.attention.varlen (RULES["attention_varlen_torch"])
TORCH_PYTHONS = ((3, 10), (3, 15))       # inclusive range torch 2.13 has wheels for


@dataclass
class Plan:
    device: str                       # "cuda" | "cpu"
    cuda_tag: str                     # "cu130", "cu126", "cu128", "cu118" or "cpu"
    torch_index_url: str
    packages: list[str]               # installed from torch_index_url (step 1, before requirements_2.txt)
    optional_packages: list[str]      # accelerators added on top (triton-windows); the app runs without them
    attention_backend: str            # "torch_varlen" | "sdpa" (cuDNN too on sm_90+: rule attention_cudnn)
    sparse_conv_backend: str          # "torch"
    precision: str                    # "fp16" | "fp32"
    offload: str                      # "none" | "model"
    cfg_batch: bool
    gpu: dict | None                  # the GPU the app will use
    env: dict[str, str] = field(default_factory=dict)   # for the app's process (several GPUs)
    warnings: list[str] = field(default_factory=list)   # what the user should read or act on
    notes: list[str] = field(default_factory=list)      # what was left out, and why
    rules: list[dict] = field(default_factory=list)     # [{"rule", "source"}] behind each decision
    system: dict = field(default_factory=dict)          # what was detected


def to_json(plan: Plan) -> str:
    return json.dumps(asdict(plan), indent=2)


# ------------------------------------------------------------------------------------ choosing

def _v(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def _cc(cc: tuple[int, int] | None) -> str:
    return "unknown" if cc is None else f"{cc[0]}.{cc[1]}"


def driver_os(system: System) -> str:
    return "Windows" if system.os == "Windows" or system.wsl else "Linux"


@dataclass
class BuildChoice:
    gpu: Gpu
    build: TorchCudaBuild | None
    kernel: str | None = None          # "sass" or "ptx"
    compat_only: bool = False          # driver older than the build's CUDA release: minor-version compatibility
    better_with_new_driver: TorchCudaBuild | None = None
    why_not: str | None = None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def choose_build(gpu: Gpu, system: System) -> BuildChoice:
    """The newest PyTorch release with a CUDA build that has kernels for this GPU and runs on its driver;
    within one release the build that runs with full driver support, then TORCH_CUDA_BUILDS' order."""
    os_key = driver_os(system)
    cc = gpu.compute_capability
    py = tuple(system.python[:2])
    for_python = [b for b in TORCH_CUDA_BUILDS if b.pythons[0] <= py <= b.pythons[1]]
    if cc is None:     # unknown GPU: keep every build, the warning says so
        builds = for_python
    else:
        builds = [b for b in for_python if b.kernel_for(cc, system.os)]
        if not builds:
            ranges = "; ".join(b.arch_range for b in TORCH_CUDA_BUILDS)
            return BuildChoice(gpu, None, why_not=(
                f"compute capability {_cc(cc)} is not supported by any PyTorch CUDA build for Python "
                f"{py[0]}.{py[1]} ({ranges})"))
    if not builds:
        return BuildChoice(gpu, None, why_not=f"no PyTorch CUDA build has wheels for Python {py[0]}.{py[1]}")
    driver = gpu.driver
    if driver is None:
        return BuildChoice(gpu, builds[0], kernel=builds[0].kernel_for(cc, system.os) if cc else None)
    runnable = [b for b in builds if driver >= parse_version(b.driver_compat[os_key])]
    if not runnable:
        need = min(builds, key=lambda b: parse_version(b.driver_compat[os_key]))
        target = f"compute capability {_cc(cc)}" if cc else "this GPU"
        return BuildChoice(gpu, None, why_not=(
            f"the NVIDIA driver {gpu.driver_version} is too old: the oldest PyTorch CUDA build for {target}, "
            f"{need.name} (CUDA {need.cuda}), needs driver {need.driver_compat[os_key]} or newer on {os_key}. "
            "Update the driver (https://www.nvidia.com/drivers) and run the installer again"))

    def full(b: TorchCudaBuild) -> bool:
        return driver >= parse_version(b.driver_full[os_key])

    chosen = max(runnable, key=lambda b: (_release(b.torch), full(b), -TORCH_CUDA_BUILDS.index(b)))
    better = builds[0] if builds[0] is not chosen else None
    return BuildChoice(gpu, chosen, kernel=chosen.kernel_for(cc, system.os) if cc else None,
                       compat_only=not full(chosen), better_with_new_driver=better)


def precision_for(capability: tuple[int, int] | None, vram_gib: float | None) -> str:
    """memory.precision_for (see its table): fp32 on Pascal and older with >= FP32_MIN_GIB, else fp16."""
    if capability is None or tuple(capability) >= (7, 0):
        return "fp16"
    return "fp32" if vram_gib is not None and vram_gib >= FP32_MIN_GIB else "fp16"


def preset_for_free_bytes(free_bytes: int | None, capability: tuple[int, int] | None = None,
                          total_bytes: int | None = None) -> tuple[str, str, bool]:
    """(precision, offload, cfg_batch) on a GPU, as pick_preset chooses them for this much free memory on a card
    of this compute capability and total memory (default: the free memory)."""
    total = free_bytes if total_bytes is None else total_bytes
    precision = precision_for(capability, None if total is None else total / 2 ** 30)
    fp32 = precision == "fp32"
    budget = RESIDENT_BUDGET_FP32_BYTES if fp32 else RESIDENT_BUDGET_BYTES
    cfg_min = CFG_BATCH_MIN_BYTES * (2 if fp32 else 1)
    if free_bytes is None or free_bytes < budget:
        return precision, "model", free_bytes is not None and free_bytes >= cfg_min
    return precision, "none", True


def _total_bytes(gpu) -> int | None:
    return None if gpu.memory_mib is None else gpu.memory_mib * 2 ** 20


CPU_PRESET = ("fp32", "none", True)


def estimated_free_bytes(gpu: Gpu) -> int | None:
    if gpu.memory_mib is None:
        return None
    return max(0, gpu.memory_mib - ASSUMED_IN_USE_MIB) * 2 ** 20


class _Builder:
    """Collects warnings, notes and the rules behind them while the plan is made."""

    def __init__(self):
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.rule_ids: list[str] = []

    def rule(self, *ids: str) -> None:
        for rule_id in ids:
            if rule_id not in RULES:
                raise KeyError(f"unknown rule {rule_id!r}")
            if rule_id not in self.rule_ids:
                self.rule_ids.append(rule_id)

    def warn(self, text: str, *ids: str) -> None:
        self.warnings.append(text)
        self.rule(*ids)

    def note(self, text: str, *ids: str) -> None:
        self.notes.append(text)
        self.rule(*ids)


def _system_summary(system: System) -> dict:
    return {
        "os": system.os, "machine": system.machine, "python": ".".join(map(str, system.python)),
        "wsl": system.wsl, "app_dir": system.app_dir,
        "free_disk_gib": None if system.free_disk_bytes is None else round(system.free_disk_bytes / 2 ** 30, 1),
        "long_paths_enabled": system.long_paths_enabled,
        "gpus": [_gpu_summary(g) for g in system.gpus],
        "gpu_error": system.gpu_error,
    }


def _gpu_summary(gpu: Gpu) -> dict:
    return {"index": gpu.index, "name": gpu.name, "memory_mib": gpu.memory_mib,
            "driver_version": gpu.driver_version, "compute_capability": _cc(gpu.compute_capability),
            "compute_capability_from": gpu.compute_capability_from}


def _check_machine(system: System, b: _Builder) -> None:
    py = tuple(system.python[:2])
    if not TORCH_PYTHONS[0] <= py <= TORCH_PYTHONS[1]:
        b.warn(f"Python {py[0]}.{py[1]} cannot be used: PyTorch {TORCH_VERSION} has wheels for Python "
               f"{_v(TORCH_PYTHONS[0])} to {_v(TORCH_PYTHONS[1])} only. Install Python 3.11 and run the installer "
               "again.", "python_version")
    elif py not in SUPPORTED_PYTHONS:
        b.warn(f"Python {py[0]}.{py[1]} is not one Trellis Desktop is tested with (3.11, 3.12); some packages may "
               "fall back to older releases. Python 3.11 is recommended.", "python_version")
    if system.os == "Windows" and system.long_paths_enabled is False:
        room = WINDOWS_MAX_PATH - 1 - DEEPEST_VENV_FILE_CHARS
        if len(system.app_dir) > room:
            b.warn(f"Windows long paths are off and the app folder path is {len(system.app_dir)} characters long: "
                   f"installing PyTorch needs paths about {DEEPEST_VENV_FILE_CHARS} characters below it, over the "
                   f"{WINDOWS_MAX_PATH}-character limit. Move the app to a shorter folder (at most {room} "
                   "characters, e.g. C:\\TrellisDesktop) or enable long paths (as administrator: "
                   "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem /v LongPathsEnabled /t REG_DWORD "
                   "/d 1 /f).", "windows_long_paths")
        else:
            b.note("Windows long paths are off; the app folder path is short enough for the install.",
                   "windows_long_paths")


def _check_disk(system: System, device: str, b: _Builder) -> None:
    need = DISK_NEEDED_GIB[device]
    if system.free_disk_bytes is not None and system.free_disk_bytes < need * 2 ** 30:
        b.warn(f"Only {system.free_disk_bytes / 2 ** 30:.1f} GiB free on the drive of {system.app_dir}; the "
               f"{device.upper()} install and the model weights need about {need} GiB. Free some space first.",
               "disk_space")


_DRIVER_HINT = (" If this computer has an NVIDIA GPU, install or update its driver (https://www.nvidia.com/drivers) "
                "and run the installer again.")


def _cpu_plan(system: System, b: _Builder, reason: str, hint: str = "") -> Plan:
    b.warn(f"{reason}. Trellis Desktop will install the CPU build of PyTorch: everything works, but it is very "
           f"slow (minutes per asset instead of seconds on a GPU).{hint}", "no_gpu_cpu")
    b.rule("attention_sdpa", "sparse_conv_torch", "preset_memory")
    _check_disk(system, "cpu", b)
    precision, offload, cfg_batch = CPU_PRESET
    return Plan(device="cpu", cuda_tag="cpu", torch_index_url=TORCH_INDEX + "cpu",
                packages=[torch_requirement(system, "cpu", b)], optional_packages=[], attention_backend="sdpa",
                sparse_conv_backend="torch", precision=precision, offload=offload, cfg_batch=cfg_batch, gpu=None)


def torch_requirement(system: System, tag: str, b: _Builder | None = None, version: str = TORCH_VERSION) -> str:
    """The pip requirement of the planned build: `torch==2.13.0+cu130` where PyTorch tags its wheels."""
    if system.os in ("Windows", "Linux") and system.machine == "x86_64":
        if b is not None:
            b.rule("torch_local_version")
        return f"torch=={version}+{tag}"
    return f"torch=={version}"


def make_plan(system: System, force_cpu: bool = False) -> Plan:
    """The install plan for this machine; installs nothing. `force_cpu`: the CPU build (--cpu)."""
    b = _Builder()
    for n in system.notes:
        if "assumed from its name" in n:
            b.note(n, "cc_from_name")
        else:
            b.notes.append(n)
    _check_machine(system, b)
    if force_cpu:
        b.rule("cpu_requested")
        plan = _cpu_plan(system, b, "--cpu was given")
    else:
        plan = _plan_device(system, b)
    plan.warnings, plan.notes = b.warnings, b.notes
    plan.rules = [{"rule": r, "source": RULES[r]} for r in b.rule_ids]
    plan.system = _system_summary(system)
    return plan


# Every build's facts: why a GPU fits none of them.
_CANNOT_USE_RULES = ("gpu_arch", "gpu_arch_cu128", "gpu_arch_cu118", "binary_compat", "driver_cuda13",
                     "driver_cuda12", "driver_cuda12_8", "driver_cuda11", "torch_builds_older")


def _plan_device(system: System, b: _Builder) -> Plan:
    if system.os not in ("Windows", "Linux") or system.machine != "x86_64":
        b.rule("platform")
        return _cpu_plan(system, b, f"GPU builds are planned for Windows and Linux on x86-64 only, not "
                                    f"{system.os} on {system.machine}")
    if not system.gpus:
        b.rule("no_gpu_cpu")
        why = system.gpu_error or "nvidia-smi listed no GPU"
        return _cpu_plan(system, b, f"No NVIDIA GPU was found ({why})", _DRIVER_HINT)
    if system.wsl:
        b.rule("wsl_driver")

    choices = [choose_build(g, system) for g in system.gpus]
    usable = [c for c in choices if c.build is not None]
    for c in choices:
        if c.build is None and (len(choices) == 1 or usable):
            (b.note if usable else b.warn)(f"{c.gpu.describe()} cannot be used: {c.why_not}.", *_CANNOT_USE_RULES)
    if not usable:
        reasons = "; ".join(f"{c.gpu.describe()}: {c.why_not}" for c in choices)
        if len(choices) > 1:
            b.warn(f"None of the {len(choices)} NVIDIA GPUs can be used: {reasons}.", *_CANNOT_USE_RULES)
        return _cpu_plan(system, b, "No usable NVIDIA GPU")

    # The GPU that holds the most of the pipeline (resident beats offload, batched CFG beats sequential),
    # then the newest architecture, then the most memory; ties go to the first in nvidia-smi's order.
    def rank(c: BuildChoice):
        _, offload, cfg_batch = preset_for_free_bytes(estimated_free_bytes(c.gpu), c.gpu.compute_capability,
                                                      _total_bytes(c.gpu))
        return (offload == "none", cfg_batch, c.gpu.compute_capability or (0, 0), c.gpu.memory_mib or 0, -c.gpu.index)
    best = max(usable, key=rank)
    gpu, build = best.gpu, best.build
    b.rule(*build.rules)
    if gpu.compute_capability is not None:
        b.rule("binary_compat")
    else:
        b.warn(f"Could not tell the compute capability of {gpu.name}; planning PyTorch's {build.name} build. If the "
               "app reports 'no kernel image is available', reinstall with the CPU build (run.bat --cpu / "
               "./run.sh --cpu).", "gpu_arch")
    if gpu.driver is None:
        b.warn(f"Could not read the NVIDIA driver version; {build.name} needs driver "
               f"{build.driver_compat[driver_os(system)]} or newer.", build.rules[-1])
    if best.kernel == "ptx":
        b.note(f"{build.tag} has no compiled kernels for compute capability {_cc(gpu.compute_capability)}; the "
               "driver compiles them from PTX on first use (the first run is slower).", "binary_compat")
    if best.compat_only:
        b.warn(f"The NVIDIA driver {gpu.driver_version} is older than the driver of CUDA {build.cuda} "
               f"({build.driver_full[driver_os(system)]}): PyTorch's {build.name} build runs on it through CUDA "
               "minor-version compatibility, but updating the driver (https://www.nvidia.com/drivers) is "
               "recommended.", build.rules[-1])
    if best.better_with_new_driver is not None:
        nb = best.better_with_new_driver
        b.note(f"With NVIDIA driver {nb.driver_compat[driver_os(system)]} or newer, PyTorch's {nb.name} build "
               f"(CUDA {nb.cuda}) would be used instead of {build.name}.", *nb.rules)
    if build.torch != TORCH_VERSION:
        b.note(f"This driver runs no CUDA build of PyTorch {TORCH_VERSION} with code for this GPU, so the newest "
               f"release that has one is planned: {build.name} (CUDA {build.cuda}). The app and its library run on "
               "it (our CI tests the library on the oldest release the plan can pick); updating the driver gets "
               f"PyTorch {TORCH_VERSION}.", "torch_builds_older")

    if len(system.gpus) > 1:
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu.index)}
        b.note(f"{len(system.gpus)} NVIDIA GPUs: the app will use GPU {gpu.index} ({gpu.name}), the one that holds "
               "the most of the pipeline in memory (then the newest).", "multi_gpu")
        for c in choices:
            if c is not best and c.build is not None and (c.gpu.compute_capability is None
                                                          or not build.kernel_for(c.gpu.compute_capability, system.os)):
                b.note(f"{c.gpu.describe()} has no kernels in the {build.tag} build and will not be used.", "gpu_arch")
    else:
        env = {}

    cc = gpu.compute_capability
    varlen_torch = _release(build.torch) >= VARLEN_MIN_TORCH
    attention = "torch_varlen" if cc is not None and cc >= (8, 0) and varlen_torch else "sdpa"
    b.rule("attention_varlen" if attention == "torch_varlen" else "attention_sdpa")
    if not varlen_torch:
        b.note(f"Attention uses PyTorch's scaled_dot_product_attention: torch {build.torch} has no varlen_attn "
               "(new in 2.10).", "attention_varlen_torch")
    elif attention == "sdpa":
        b.note(f"Attention uses PyTorch's scaled_dot_product_attention: the varlen FlashAttention kernel needs "
               f"compute capability 8.0 or newer (this GPU: {_cc(cc)}).", "attention_varlen")
    if attention == "torch_varlen" and cc >= (9, 0):
        b.note("Attention: FlashAttention-2 (varlen); cuDNN attention is there on this Hopper-or-newer GPU and runs "
               "the long sequences of TRELLIS.2's 1024 flows (ATTN_BACKEND=cudnn: every length).", "attention_cudnn")

    free = estimated_free_bytes(gpu)
    precision, offload, cfg_batch = preset_for_free_bytes(free, cc, _total_bytes(gpu))
    b.rule("preset_memory")
    if free is None:
        b.warn(f"nvidia-smi did not report the memory of {gpu.name}; starting with the low-memory preset "
               "(fp16, model offload).", "preset_memory")
    elif free < SMALL_GPU_FREE_BYTES:
        b.warn(f"{gpu.name} has {gpu.memory_mib / 1024:.1f} GiB: the app starts with its low-memory preset (fp16, "
               f"each network on the GPU only while it runs); that preset peaked at {LOW_VRAM_PEAK_GIB} GiB in our "
               "benchmark, so close other programs that use the GPU. If it still runs out of memory, the app says so "
               "(a CUDA build of PyTorch also runs on the CPU).", "small_gpu")
    if cc is not None and cc < (7, 0):
        if precision == "fp32":
            b.note(f"{gpu.name} computes fp16 far slower than fp32 (compute capability {_cc(cc)}): the app runs "
                   "fp32 on it.", "pascal_fp16")
        else:
            b.note(f"{gpu.name} computes fp16 far slower than fp32 (compute capability {_cc(cc)}), but fp32 needs "
                   f"{FP32_MIN_GIB} GiB: the app stores fp16 and computes in fp32 (PyTorch's half GEMMs use fp32 "
                   "maths).", "pascal_fp16")

    b.note("xformers is not installed: its wheels are built against one torch build, not torch "
           f"{build.torch}; the built-in PyTorch attention gives the same results.", "xformers_not_planned")
    b.note("flash-attn is not installed: PyPI has no wheels for it (it needs a CUDA compiler).",
           "flash_attn_not_planned")
    spconv_why = (f"it has no kernels for this GPU (compute capability {_cc(cc)})"
                  if cc is not None and cc[0] >= 10 else "our built-in sparse convolution is faster")
    b.note(f"spconv is not installed: {spconv_why}.", "spconv_not_planned", "sparse_conv_torch")
    optional = _plan_triton(system, cc, build, b)
    _check_disk(system, "cuda", b)

    gpu_info = _gpu_summary(gpu)
    gpu_info["estimated_free_gib"] = None if free is None else round(free / 2 ** 30, 2)
    return Plan(device="cuda", cuda_tag=build.tag, torch_index_url=TORCH_INDEX + build.tag,
                packages=[torch_requirement(system, build.tag, b, build.torch)], optional_packages=optional,
                attention_backend=attention, sparse_conv_backend="torch", precision=precision, offload=offload,
                cfg_batch=cfg_batch, gpu=gpu_info, env=env)


def _plan_triton(system: System, cc: tuple[int, int] | None, build: TorchCudaBuild, b: _Builder) -> list[str]:
    """The triton-windows wheel where the renderers' Triton kernels can run on Windows; [] elsewhere."""
    if system.os != "Windows":       # WSL included: it installs PyTorch's Linux wheels
        b.rule("triton_linux")
        return []
    if cc is not None and cc < TRITON_MIN_CC:
        b.note(f"triton-windows is not installed: Triton needs compute capability {_cc(TRITON_MIN_CC)} or newer "
               f"and this GPU has {_cc(cc)} (Pascal or older), so the renderers use their PyTorch paths (the same "
               "results, slower).", "triton_floor", "fast_path_fallback")
        return []
    if build.triton_windows is None:
        b.note(f"triton-windows is not installed: it needs PyTorch built for CUDA 12 or newer and a CUDA 12 driver, "
               f"and this plan is {build.name} for an older driver, so the renderers use their PyTorch paths (the "
               "same results, slower).", "triton_windows_cu118", "fast_path_fallback")
        return []
    requirement = f"triton-windows=={build.triton_windows}"
    b.rule("triton_windows", "triton_floor")
    if build.torch == TORCH_VERSION_CU128:
        b.rule("triton_windows_2_11")
    if cc is None or cc < TRITON_TESTED_CC:
        b.note(f"{requirement} is installed for the fast renderers, but Triton is tested on compute capability "
               f"{_cc(TRITON_TESTED_CC)} and newer (this GPU: {_cc(cc)}): the install's GPU check compiles our "
               "kernels and records whether they work; if not, the app uses the PyTorch paths (slower).",
               "triton_floor", "fast_path_fallback")
    return [requirement]


def describe(plan: Plan) -> str:
    """The plan for people (what `python -m installer plan` prints without --json)."""
    lines = ["Trellis Desktop install plan (nothing has been installed)"]
    if plan.gpu:
        g = plan.gpu
        mem = "?" if g["memory_mib"] is None else f"{g['memory_mib'] / 1024:.1f} GiB"
        lines.append(f"  device       cuda: GPU {g['index']} {g['name']} ({mem}, compute capability "
                     f"{g['compute_capability']}, driver {g['driver_version']})")
    else:
        lines.append("  device       cpu")
    lines += [
        f"  PyTorch      {' '.join(plan.packages)} from {plan.torch_index_url} ({plan.cuda_tag})",
        f"  extras       {', '.join(plan.optional_packages) or 'none'}",
        f"  attention    {plan.attention_backend}; sparse conv {plan.sparse_conv_backend}",
        f"  preset       {plan.precision}, offload {plan.offload}, CFG "
        + ("batched" if plan.cfg_batch else "sequential"),
    ]
    for key, value in plan.env.items():
        lines.append(f"  env          {key}={value}")
    for title, items in (("Warnings", plan.warnings), ("Notes", plan.notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {item}" for item in items]
    return "\n".join(lines)
