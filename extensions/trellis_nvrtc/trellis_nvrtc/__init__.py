"""CUDA C kernels for Trellis Desktop's renderers, compiled at run time with ``torch.cuda._compile_kernel``.

That is the NVRTC shipped inside PyTorch's CUDA wheels (Windows included): no host compiler, no CUDA
toolkit, no Triton. A process's first compile loads NVRTC, the slow part; each compile after it is short
(docs/benchmarks/kernels.md#nvrtc-ptx-cache). The kernel is kept for the process and its PTX on disk
(``cache_dir``) for the next processes. The API
is private to PyTorch, so ``trellis.fastpaths`` calls these kernels behind its fallback: a compile or launch
failure switches the kernel off and the PyTorch twin redoes the call.

Kernels: ``gaussian_composite.composite`` (twin: ``trellis.renderers.gaussian_render.composite_torch``),
``mesh_setup.triangle_setup`` (twin: ``trellis.renderers.mesh_render.triangle_setup_torch``),
``mesh_raster.raster_keys`` (twin: ``trellis.renderers.mesh_render.raster_keys_torch``), and the flow blocks'
``block_norm.norm_modulate`` / ``block_norm.head_rms_norm`` / ``block_norm.gated_residual`` (twins in
``trellis.modules.transformer``) and ``sparse_conv.submanifold_conv3d`` (twin:
``trellis.modules.sparse.conv.submanifold_conv3d_torch``). Also here, though not NVRTC code: ``gemm_epilogue.linear_gelu``
(cuBLASLt's GELU epilogue through a private PyTorch entry point; twin ``trellis.modules.transformer.linear_gelu_torch``).
"""

import hashlib
import os
import threading
from pathlib import Path

# CUDA C that several kernels share (prepended to their sources; no CUDA headers needed): a 16-byte vector type,
# and fp16 / bf16 <-> fp32 conversions by PTX ``cvt`` and, for bfloat16, bit arithmetic with round-to-nearest-even
# (``bf`` a run-time flag, or a compile-time constant the compiler folds).
HALF_C = r"""
struct __align__(16) U4 { unsigned int a, b, c, d; };

__device__ __forceinline__ float h2f(unsigned short h, int bf) {
    if (bf) return __uint_as_float(((unsigned int)h) << 16);
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short f2h(float f, int bf) {
    if (bf) {
        unsigned int u = __float_as_uint(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
        u += 0x7fffu + ((u >> 16) & 1u);
        return (unsigned short)(u >> 16);
    }
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
"""

_cache: dict = {}
_lock = threading.Lock()
# How this process got its kernels: "compiled" by NVRTC, "from_disk" (the PTX cache), "failed_writes".
stats = {"compiled": 0, "from_disk": 0, "failed_writes": 0}
CACHE_ENV = "TRELLIS_KERNEL_CACHE"
_OFF = {"0", "off", "no", "false", "none"}


def cache_dir():
    """Folder of the PTX disk cache, or None when it is off. ``TRELLIS_KERNEL_CACHE``: a folder, or ``off``;
    default ``%LOCALAPPDATA%\\trellis-desktop\\nvrtc`` on Windows, ``$XDG_CACHE_HOME/trellis-desktop/nvrtc``
    (``~/.cache/...``) elsewhere. A process that finds every PTX there never loads NVRTC (most of a cold start's
    kernel time; docs/benchmarks/kernels.md#nvrtc-ptx-cache); the driver keeps the machine code it makes from the
    PTX in its own cache."""
    raw = os.environ.get(CACHE_ENV)
    if raw is not None:
        return None if raw.strip().lower() in _OFF or not raw.strip() else Path(raw).expanduser()
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trellis-desktop" / "nvrtc"


def _ptx_path(source: str, name: str, arch: str):
    """Cache file of one kernel: the name, then a digest of everything the PTX depends on (the source, the
    architecture, the PyTorch build and so its NVRTC)."""
    import torch

    folder = cache_dir()
    if folder is None:
        return None
    key = "\0".join((source, name, arch, torch.__version__, str(torch.version.cuda)))
    return folder / f"{name}-sm{arch}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.ptx"


_MAGIC = b"// trellis-nvrtc ptx sha256 "


def _read_checked(path: Path):
    """The PTX of a cache file when its header's digest matches what follows, else None. The driver must never
    see a damaged file: a truncated PTX makes cuModuleLoadData crash the process."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head, sep, ptx = data.partition(b"\n")
    if not sep or not head.startswith(_MAGIC) or head[len(_MAGIC):].decode("ascii", "replace") != \
            hashlib.sha256(ptx).hexdigest():
        return None
    return ptx


def _build(source: str, name: str, device):
    """The loaded kernel: PTX from the disk cache when there and intact (a digest of the PTX heads the file),
    else compiled by NVRTC (and written there: a temporary file renamed into place, so a killed process leaves
    no half file). A damaged file is compiled again and replaced; a cache that cannot be written (read-only,
    full disk) only costs the next process its compile."""
    import torch

    try:
        from torch.cuda._utils import _cuda_load_module, _nvrtc_compile
    except ImportError:        # another PyTorch: its one entry point, no disk cache
        stats["compiled"] += 1
        return torch.cuda._compile_kernel(source, name)
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"{major}{minor}"
    path = _ptx_path(source, name, arch)
    ptx = _read_checked(path) if path is not None and path.is_file() else None
    if ptx is not None:
        try:
            kernel = _cuda_load_module(ptx, [name])[name]
            stats["from_disk"] += 1
            return kernel
        except Exception:      # intact but not loadable here (another driver): compile again below
            pass
    ptx, mangled = _nvrtc_compile(source, name, arch)
    kernel = _cuda_load_module(ptx, [mangled])[mangled]
    stats["compiled"] += 1
    if path is not None and mangled == name:
        body = ptx if isinstance(ptx, bytes) else str(ptx).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
            os.replace(tmp, path)
        except OSError:
            stats["failed_writes"] += 1
            try:
                tmp.unlink()
            except OSError:
                pass
    return kernel


def compiled(source: str, name: str, device):
    """Kernel ``name`` of ``source`` compiled for and loaded on ``device`` (once per process and GPU: a
    loaded module belongs to one device's context, so two GPUs of the same kind each get their own; the PTX
    is kept on disk between processes, see ``cache_dir``). Kernel names must be unique per source."""
    import torch

    device = torch.device(device)
    key = (name, device.index if device.index is not None else torch.cuda.current_device())
    with _lock:
        if key not in _cache:
            with torch.cuda.device(device):
                _cache[key] = _build(source, name, device)
        return _cache[key]


class Launcher:
    """A compiled kernel launched with little Python work: for kernels called ~100 times per network pass (the
    flow blocks' norms), where PyTorch's generic launch (new ctypes objects for every argument, a stream object)
    costs more host time than the kernels it replaces. The argument ``signature`` is fixed ("p" pointer to a
    tensor's data, "i" C int, "l" C long long, "d" C double); the ctypes cells that hold the values are reused under a lock
    (the driver copies the values at launch). Launches on the current stream of the current device, as PyTorch's
    launch does; a launch error raises RuntimeError (the dispatcher then falls back to the twin)."""

    def __init__(self, kernel, signature: str):
        import ctypes

        import torch

        cell = {"p": ctypes.c_void_p, "i": ctypes.c_int, "l": ctypes.c_longlong, "d": ctypes.c_double}
        self._kernel = kernel
        self._signature = signature
        self._cells = [cell[c]() for c in signature]
        self._params = (ctypes.c_void_p * len(signature))(
            *[ctypes.cast(ctypes.pointer(c), ctypes.c_void_p) for c in self._cells])
        self._launch = torch.cuda._utils._get_gpu_runtime_library().cuLaunchKernel
        self._lock = threading.Lock()
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        self._stream = (lambda index: ctypes.c_void_p(raw(index))) if raw is not None else \
            (lambda index: ctypes.c_void_p(torch.cuda.current_stream(index).cuda_stream))

    def __call__(self, grid: int, block: int, device_index: int, *args) -> None:
        if len(args) != len(self._signature):
            raise TypeError(f"{len(self._signature)} kernel arguments expected, got {len(args)}")
        stream = self._stream(device_index)
        with self._lock:
            for c, kind, a in zip(self._cells, self._signature, args):
                c.value = a.data_ptr() if kind == "p" else a
            rc = self._launch(self._kernel.func, grid, 1, 1, block, 1, 1, 0, stream, self._params, None)
        if rc != 0:
            raise RuntimeError(f"cuLaunchKernel failed with CUDA error {rc}")


_launchers: dict = {}


def launcher(source: str, name: str, device, signature: str) -> Launcher:
    """``Launcher`` of kernel ``name`` of ``source`` on ``device`` (compiled once per process and GPU)."""
    import torch

    device = torch.device(device)
    key = (name, device.index if device.index is not None else torch.cuda.current_device())
    got = _launchers.get(key)
    if got is None:
        kernel = compiled(source, name, device)
        with _lock:
            got = _launchers.setdefault(key, Launcher(kernel, signature))
    return got
