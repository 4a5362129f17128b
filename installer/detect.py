"""What the installer needs to know about this machine: OS, Python, free disk, Windows long paths, NVIDIA GPUs.

Standard library only: this runs before torch is installed. GPUs come from nvidia-smi (it ships with
every NVIDIA driver), never from torch. Nothing here raises for a missing or broken nvidia-smi: the
failure is recorded as `System.gpu_error` and the plan turns it into a plain warning.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

# The one nvidia-smi query the plan reads; a FILE given to `plan --nvidia-smi-output` holds what this printed.
NVIDIA_SMI_FIELDS = ("name", "memory.total", "driver_version", "compute_cap")
NVIDIA_SMI_FORMAT = "--format=csv,noheader,nounits"
# nvidia-smi normally answers in well under a second; a wedged driver can make it hang for minutes.
NVIDIA_SMI_TIMEOUT_S = 20.0

# Used only when nvidia-smi cannot report compute_cap (drivers before it knew the field) or prints
# "[N/A]" for it. Values from NVIDIA's "CUDA GPUs - Compute Capability" list
# (https://developer.nvidia.com/cuda-gpus). First match wins, so specific names come before families.
COMPUTE_CAPABILITY_BY_NAME: tuple[tuple[str, tuple[int, int]], ...] = (
    (r"RTX 50\d0|RTX PRO \d+ Blackwell", (12, 0)),
    (r"\bG?B300\b", (10, 3)),
    (r"\bG?B200\b", (10, 0)),
    (r"\bG?H100\b|\bH200\b|\bH800\b", (9, 0)),
    (r"RTX 40\d0|\bAda Generation\b|\bL40S?\b|\bL4\b", (8, 9)),
    (r"\bA100\b|\bA800\b|\bA30\b", (8, 0)),
    (r"RTX 30\d0|RTX A\d{4}|\bA10G?\b|\bA40\b|\bA16\b|\bA2\b", (8, 6)),
    (r"RTX 20\d0|GTX 16\d0|TITAN RTX|Quadro RTX|\bT4\b|\bT\d00\b|\bT1000\b", (7, 5)),
    (r"TITAN V\b|\bV100\b", (7, 0)),
    (r"\bP100\b", (6, 0)),
    (r"GTX 10\d0|TITAN Xp|TITAN X \(Pascal\)|\bP40\b|\bP4\b|Quadro P\d+", (6, 1)),
    (r"GTX 750|GTX 745", (5, 0)),
    (r"GTX 9\d0|GTX TITAN X|Quadro M\d+|\bM40\b|\bM60\b", (5, 2)),
    (r"\bK80\b", (3, 7)),
    (r"GTX 7\d0|GTX 6\d0|GTX TITAN|\bK\d{2}m?\b|Quadro K\d+", (3, 5)),
)
COMPUTE_CAPABILITY_SOURCE = "NVIDIA, CUDA GPUs - Compute Capability (https://developer.nvidia.com/cuda-gpus)"


@dataclass(frozen=True)
class Gpu:
    index: int                                   # position in nvidia-smi's list (PCI bus order)
    name: str
    memory_mib: int | None                       # memory.total; None when nvidia-smi printed [N/A]
    driver_version: str | None                   # as printed: "535.104.05" (Linux), "572.16" (Windows)
    compute_capability: tuple[int, int] | None
    compute_capability_from: str = "nvidia-smi"  # "nvidia-smi", "name" (looked up) or "unknown"

    @property
    def driver(self) -> tuple[int, ...] | None:
        return parse_version(self.driver_version)

    @property
    def memory_gib(self) -> float | None:
        return None if self.memory_mib is None else self.memory_mib / 1024

    def describe(self) -> str:
        mem = "unknown memory" if self.memory_mib is None else f"{self.memory_mib / 1024:.1f} GiB"
        cc = self.compute_capability
        cc = "compute capability unknown" if cc is None else f"compute capability {cc[0]}.{cc[1]}"
        return f"GPU {self.index} ({self.name}, {mem}, {cc})"


@dataclass
class System:
    os: str = "Linux"                          # platform.system(): "Windows", "Linux", "Darwin"
    machine: str = "x86_64"                    # normalised: "x86_64", "arm64", ...
    python: tuple[int, int, int] = (3, 11, 0)
    wsl: bool = False                          # Linux under WSL: the GPU driver is the Windows one
    app_dir: str = ""
    free_disk_bytes: int | None = None
    long_paths_enabled: bool | None = None     # Windows only; None elsewhere or when unreadable
    gpus: list[Gpu] = field(default_factory=list)
    gpu_error: str | None = None               # why no GPU list could be read (nvidia-smi missing, failing)
    notes: list[str] = field(default_factory=list)  # detection remarks (skipped lines, guessed values)


# ------------------------------------------------------------------------------------------ parsing

def parse_version(text: str | None) -> tuple[int, ...] | None:
    """ "535.104.05" -> (535, 104, 5); anything that is not dot-separated digits -> None."""
    if text is None or not re.fullmatch(r"\d+(\.\d+)*", text.strip()):
        return None
    return tuple(int(p) for p in text.strip().split("."))


def _value(field_text: str) -> str | None:
    """nvidia-smi prints unavailable values in brackets: [N/A], [Not Supported], [Unknown Error]..."""
    v = field_text.strip()
    if not v or (v.startswith("[") and v.endswith("]")) or v.upper() == "N/A":
        return None
    return v


def _is_compute_capability(text: str) -> bool:
    return re.fullmatch(r"\d{1,2}\.\d", text.strip()) is not None


def _memory_mib(text: str | None) -> int | None:
    # "24564" with nounits; "24564 MiB" if someone left units on.
    m = re.match(r"\s*(\d+(?:\.\d+)?)", text or "")
    return int(float(m.group(1))) if m else None


def compute_capability_from_name(name: str) -> tuple[int, int] | None:
    for pattern, cc in COMPUTE_CAPABILITY_BY_NAME:
        if re.search(pattern, name, re.IGNORECASE):
            return cc
    return None


def parse_nvidia_smi(text: str) -> tuple[list[Gpu], list[str]]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.total,driver_version[,compute_cap] --format=csv,noheader,nounits`.

    One line per GPU, three or four fields (drivers that cannot report compute_cap print three).
    Returns (gpus, notes); lines that are not GPU rows (a header, an error message) become notes.
    """
    gpus: list[Gpu] = []
    notes: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if parts[0].lower() == "name":                      # a header: csv without noheader
            continue
        four = (len(parts) >= 4 and (_is_compute_capability(parts[-1]) or _value(parts[-1]) is None)
                and (_value(parts[-2]) is None or parse_version(parts[-2]) is not None))
        if four:
            name, mem, drv, cc_text = ",".join(parts[:-3]), parts[-3], parts[-2], parts[-1]
        elif len(parts) >= 3:
            name, mem, drv, cc_text = ",".join(parts[:-2]), parts[-2], parts[-1], None
        else:
            notes.append(f"nvidia-smi: skipped a line that is not a GPU row: {line[:120]!r}")
            continue
        driver = _value(drv)
        if driver is not None and parse_version(driver) is None:
            notes.append(f"nvidia-smi: unreadable driver version {driver!r} for {name}")
            driver = None
        cc_value = _value(cc_text) if cc_text is not None else None
        cc = tuple(int(x) for x in cc_value.split(".")) if cc_value and _is_compute_capability(cc_value) else None
        source = "nvidia-smi"
        if cc is None:
            cc = compute_capability_from_name(name)
            source = "name" if cc is not None else "unknown"
        gpus.append(Gpu(index=len(gpus), name=name, memory_mib=_memory_mib(_value(mem)),
                        driver_version=driver, compute_capability=cc, compute_capability_from=source))
    return gpus, notes


# ----------------------------------------------------------------------------------- nvidia-smi

Runner = Callable[[list, float], "subprocess.CompletedProcess"]


def _run(args: list, timeout: float) -> subprocess.CompletedProcess:
    extra = {}
    if sys.platform == "win32":   # no console window flashing up from a GUI launch
        extra["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **extra)


def find_nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    candidates = []
    if sys.platform == "win32":
        # Older Windows drivers installed it here without putting it on PATH (newer ones use System32).
        for base in (os.environ.get("ProgramW6432"), os.environ.get("ProgramFiles")):
            if base:
                candidates.append(os.path.join(base, "NVIDIA Corporation", "NVSMI", "nvidia-smi.exe"))
    elif sys.platform.startswith("linux"):
        candidates.append("/usr/lib/wsl/lib/nvidia-smi")   # WSL: provided by the Windows driver
    return next((c for c in candidates if os.path.isfile(c)), None)


def _first_line(*texts: str | None) -> str:
    for t in texts:
        for line in (t or "").splitlines():
            if line.strip():
                return line.strip()[:200]
    return "(no output)"


def query_nvidia_smi(runner: Runner = _run, executable: str | None = None,
                     timeout: float = NVIDIA_SMI_TIMEOUT_S) -> tuple[str | None, str | None]:
    """(stdout, None) when nvidia-smi answered, else (None, why). Never raises."""
    exe = executable or find_nvidia_smi()
    if exe is None:
        return None, "nvidia-smi was not found (no NVIDIA driver installed, or nvidia-smi is not on PATH)"
    fields = NVIDIA_SMI_FIELDS
    while True:
        args = [exe, "--query-gpu=" + ",".join(fields), NVIDIA_SMI_FORMAT]
        try:
            proc = runner(args, timeout)
        except FileNotFoundError:
            return None, f"nvidia-smi was not found ({exe})"
        except subprocess.TimeoutExpired:
            return None, f"nvidia-smi did not answer within {timeout:g} s (the driver may be stuck)"
        except OSError as e:
            return None, f"nvidia-smi could not be started: {e}"
        if proc.returncode == 0:
            return proc.stdout or "", None
        message = _first_line(proc.stderr, proc.stdout)
        # Drivers older than the compute_cap field refuse the whole query; ask again without it.
        if "compute_cap" in fields and "compute_cap" in message:
            fields = tuple(f for f in fields if f != "compute_cap")
            continue
        return None, f"nvidia-smi failed (exit status {proc.returncode}): {message}"


# --------------------------------------------------------------------------------- the machine

def default_app_dir() -> str:
    """The folder run.bat / run.sh live in: the parent of this package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_disk_bytes(path: str) -> int | None:
    p = os.path.abspath(path)
    while not os.path.exists(p):          # the app folder may not exist yet: ask its drive
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def windows_long_paths_enabled() -> bool | None:
    """HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem\\LongPathsEnabled; None off Windows or unreadable."""
    if sys.platform != "win32":
        return None
    try:
        import winreg
    except ImportError:
        return None
    try:
        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem")
    except OSError:
        return None
    try:
        with key:
            value, _ = winreg.QueryValueEx(key, "LongPathsEnabled")
        return bool(value)
    except FileNotFoundError:     # the value is absent: Windows' default, disabled
        return False
    except OSError:
        return None


_MACHINES = {"amd64": "x86_64", "x64": "x86_64", "x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def detect_system(app_dir: str | None = None, nvidia_smi_output: str | None = None,
                  runner: Runner | None = None, nvidia_smi: str | None = None) -> System:
    """Look at this machine. `nvidia_smi_output`: use this text instead of running nvidia-smi;
    `runner` / `nvidia_smi`: how to run it and which executable (default: found on PATH)."""
    app_dir = os.path.abspath(app_dir or default_app_dir())
    os_name = platform.system()
    machine = platform.machine()
    if nvidia_smi_output is None:
        text, error = query_nvidia_smi(runner or _run, executable=nvidia_smi)
    else:
        text, error = nvidia_smi_output, None
    gpus, notes = parse_nvidia_smi(text) if text is not None else ([], [])
    if text is not None and not gpus and text.strip():
        error = f"nvidia-smi listed no GPU: {_first_line(text)!r}"
    for g in gpus:
        if g.compute_capability_from == "name":
            major, minor = g.compute_capability
            notes.append(f"nvidia-smi did not report the compute capability of {g.name}; {major}.{minor} is "
                         "assumed from its name")
    return System(
        os=os_name,
        machine=_MACHINES.get(machine.lower(), machine.lower() or "unknown"),
        python=tuple(sys.version_info[:3]),
        wsl=os_name == "Linux" and "microsoft" in platform.release().lower(),
        app_dir=app_dir,
        free_disk_bytes=free_disk_bytes(app_dir),
        long_paths_enabled=windows_long_paths_enabled(),
        gpus=gpus,
        gpu_error=error,
        notes=notes,
    )
