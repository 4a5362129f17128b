"""Triton kernels for Trellis Desktop's renderers; each equals its PyTorch twin in ``trellis/``.

Chosen by ``trellis.fastpaths`` (never call them directly from library code): ``gaussian_composite.composite``
(twin: ``trellis.renderers.gaussian_render.composite_torch``), ``mesh_setup.triangle_setup`` (twin:
``trellis.renderers.mesh_render.triangle_setup_torch``) and ``mesh_raster.raster_keys`` (twin:
``trellis.renderers.mesh_render.raster_keys_torch``).
"""

# Triton, where it imports (Linux wheels of PyTorch; triton-windows): the kernel modules define their kernels only
# when AVAILABLE, and otherwise answer NotImplemented, so that the dispatcher falls through to the next path.
try:  # pragma: no cover - exercised on CUDA machines (or under TRITON_INTERPRET=1)
    import triton
    import triton.language as tl
    AVAILABLE = True
except Exception:  # pragma: no cover
    triton = tl = None
    AVAILABLE = False
