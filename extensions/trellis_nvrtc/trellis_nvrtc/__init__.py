"""CUDA C kernels for Trellis Desktop's renderers, compiled at run time with ``torch.cuda._compile_kernel``.

That is the NVRTC shipped inside PyTorch's CUDA wheels (Windows included): no host compiler, no CUDA
toolkit, no Triton. Each compile takes about a second on first use and is kept for the process. The API
is private to PyTorch, so ``trellis.fastpaths`` calls these kernels behind its fallback: a compile or
launch failure switches the kernel off and the PyTorch twin redoes the call.

Kernels: ``gaussian_composite.composite`` (twin: ``trellis.renderers.gaussian_render.composite_torch``)
and ``mesh_raster.raster_keys`` (twin: ``trellis.renderers.mesh_render.raster_keys_torch``).
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
