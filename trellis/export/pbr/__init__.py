"""O-Voxel (TRELLIS.2's ``MeshWithVoxel``) -> a PBR GLB through our export (TRELLIS2_FACTS.md §11-§12), one step per
module:

* ``prepare``: the dual-grid mesh reduced to the face target (``reduce``: grid clustering, ``cluster``, with its
  int64 sorts in ``sorting``; small holes closed, ``small_holes``; a quadric trim), wound facing out
  (``orientation``), UV-unwrapped; ``early``: the same, started in a thread once the shape is decoded, while the
  texture still samples;
* ``bake``: the UV layout rasterised, each texel's point projected onto the dense mesh (``surface_grid`` over
  ``triangle_distance``), the voxel attributes sampled there into base colour, alpha and metallic-roughness
  textures, inpainted; the normal map from the dense mesh's normals (``dense_normals``);
* ``alpha_mode`` (OPAQUE, MASK or BLEND from the baked alpha), ``material`` (the maps the GLB writer adds),
  ``textured`` (the result, a ``TexturedMesh`` with them);
* ``export``: ``bake_ovoxel`` and ``ovoxel_to_glb``, with a ``PbrOptions`` (``trellis.export.options``: the
  family's defaults, the texture size's among them) or its keywords;
* ``video``: the lit turntable of the baked mesh (the app's preview video).

The names below load their module on first use (they import torch).
"""
__all__ = ["bake_ovoxel", "ovoxel_to_glb", "prepare_ovoxel_mesh", "EarlyPrepare", "bake_pbr_textures",
           "PbrTexturedMesh", "PbrMaps", "choose_alpha_mode", "unify_orientation", "fill_small_holes", "SurfaceGrid",
           "PbrOptions", "DEFAULT_TARGET_FACES", "MAX_HOLE_PERIMETER"]

_LAZY = {"bake_ovoxel": "export", "ovoxel_to_glb": "export", "PbrOptions": "..options",
         "prepare_ovoxel_mesh": "prepare", "EarlyPrepare": "early", "DEFAULT_TARGET_FACES": "..options",
         "bake_pbr_textures": "bake",
         "PbrTexturedMesh": "textured", "PbrMaps": "material", "choose_alpha_mode": "alpha_mode",
         "unify_orientation": "orientation", "fill_small_holes": "small_holes", "MAX_HOLE_PERIMETER": "..options",
         "SurfaceGrid": "surface_grid"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = _LAZY[name]
        return getattr(importlib.import_module(module if module.startswith(".") else f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
