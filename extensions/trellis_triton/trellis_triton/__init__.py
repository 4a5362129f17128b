"""Triton kernels for Trellis Desktop's renderers; each equals its PyTorch twin in ``trellis/``.

Chosen by ``trellis.fastpaths`` (never call them directly from library code): ``gaussian_composite.composite``
(twin: ``trellis.renderers.gaussian_render.composite_torch``), ``mesh_setup.triangle_setup`` (twin:
``trellis.renderers.mesh_render.triangle_setup_torch``) and ``mesh_raster.raster_keys`` (twin:
``trellis.renderers.mesh_render.raster_keys_torch``).
"""
