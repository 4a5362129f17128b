"""CUDA C kernels for Trellis Desktop's renderers, compiled at run time with ``torch.cuda._compile_kernel``.

That is the NVRTC shipped inside PyTorch's CUDA wheels (Windows included): no host compiler, no CUDA
toolkit, no Triton. Each compile takes about a second on first use and is kept for the process. The API
is private to PyTorch, so ``trellis.fastpaths`` calls these kernels behind its fallback: a compile or
launch failure switches the kernel off and the PyTorch twin redoes the call.

Kernels: ``gaussian_composite.composite`` (twin: ``trellis.renderers.gaussian_render.composite_torch``),
``mesh_raster.raster_keys`` (twin: ``trellis.renderers.mesh_render.raster_keys_torch``), and the flow blocks'
``block_norm.norm_modulate`` / ``block_norm.head_rms_norm`` (twins in ``trellis.modules.transformer``).
"""

import threading

_cache: dict = {}
_lock = threading.Lock()


def compiled(source: str, name: str, device):
    """Kernel ``name`` of ``source`` compiled for and loaded on ``device`` (once per process and GPU: a
    loaded module belongs to one device's context, so two GPUs of the same kind each get their own)."""
    import torch

    device = torch.device(device)
    key = (name, device.index if device.index is not None else torch.cuda.current_device())
    with _lock:
        if key not in _cache:
            with torch.cuda.device(device):
                _cache[key] = torch.cuda._compile_kernel(source, name)
        return _cache[key]


class Launcher:
    """A compiled kernel launched with little Python work: for kernels called ~100 times per network pass (the
    flow blocks' norms), where PyTorch's generic launch (new ctypes objects for every argument, a stream object)
    costs more host time than the kernels it replaces. The argument ``signature`` is fixed ("p" pointer to a
    tensor's data, "i" C int, "d" C double); the ctypes cells that hold the values are reused under a lock
    (the driver copies the values at launch). Launches on the current stream of the current device, as PyTorch's
    launch does; a launch error raises RuntimeError (the dispatcher then falls back to the twin)."""

    def __init__(self, kernel, signature: str):
        import ctypes

        import torch

        cell = {"p": ctypes.c_void_p, "i": ctypes.c_int, "d": ctypes.c_double}
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
