"""The mesh -> textured GLB / OBJ export of a TRELLIS result, one stage per sub-package in ``to_glb``'s order
(``schedule`` runs them and overlaps what can overlap):

* ``cleanup``: decimation (in pieces, in child processes), hidden-face removal, hole filling;
* ``uv``: the UV unwrap (our geometric charts, xatlas bounded in time, an axis-projected fallback);
* ``bake``: observations of the Gaussians baked into the texture, inpainted;
* ``assemble``: the textured mesh as GLB (y up, PBR) or OBJ + MTL + PNG, with vertex normals from ``normals``.

The result is a ``textured.TexturedMesh`` (``save_glb`` / ``save_obj``, and ``save`` for every format of ``formats``:
GLB, OBJ, STL, 3MF, USDZ, placed by ``placement``: height, pivot, up axis, units); ``job.ExportJob`` is the export's
scheduler: it starts the decimation early, so that it overlaps the caller's other work on the same result, and runs
the caller's side work (``SideWork``) beside the bake (DESIGN.md: what overlaps what); ``result_file`` keeps a result
(the Gaussians and the decoder mesh, exactly) for exporting it again later; ``keep_mesh`` bakes a look onto the
user's own mesh, its vertices, faces and usable UVs kept; ``pbr`` exports TRELLIS.2's O-Voxel (``ovoxel_to_glb``,
``bake_ovoxel``: base colour, alpha, metallic-roughness and normal maps sampled from its voxels, no views; also
``ExportJob``'s export where it is given one);
``shape_only`` is the clean-up alone, for files that hold no texture.

Shared: ``mesh_graph`` (edges, the dual graph, components), ``arrays`` (conversions, progress), ``processes`` (child
processes and their warm pool), ``gate`` (side work held through the export's critical GPU stages), ``temp_dirs``
(temp folders owned by their process), ``options`` (``ExportOptions`` for v1, ``PbrOptions`` for TRELLIS.2: every
option of the export, typed, with each family's defaults); threads, child processes and CUDA streams are started by
``trellis.core.concurrency`` alone. The names below load their stage on first use, so that importing this package
(e.g. for ``temp_dirs`` at the app's start) stays light.
"""
__all__ = ["to_glb", "to_obj", "bake_textured_mesh", "TexturedMesh", "ExportJob", "SideWork", "Background", "ExportOptions",
           "iter_pbr_video", "render_pbr_video", "PbrOptions", "DEFAULT_TEXTURE_SIZE", "warm_processes",
           "save_result", "load_result", "check_result", "DamagedResultError", "NOT_REGULAR_FILE", "EmptyMeshError",
           "describe_export", "placed_shape_facts", "check_limits", "DESTINATION_LIMITS",
           "face_budget", "lod_meshes", "LodTargetError", "QuadTargetError", "bake_onto_mesh", "uv_usable",
           "bake_uv_mesh", "bake_onto_user_mesh",
           "MIN_OBSERVED_SHARE", "observation_settings", "clean_shape",
           "Z_UP_TO_Y_UP", "make_glb_mesh", "save_glb", "save_obj",
           "ovoxel_to_glb", "bake_ovoxel", "EarlyPrepare", "PbrTexturedMesh", "save_vertex_color_ply",
           "save_ovoxel_result", "load_ovoxel_result", "check_ovoxel_result", "is_ovoxel_result"]

# Names defined in the stage modules, loaded when first asked for (they import numpy, torch).
_LAZY = {"to_glb": "schedule", "to_obj": "schedule", "bake_textured_mesh": "schedule",
         "TexturedMesh": "textured", "ExportJob": "job", "SideWork": "job", "Background": "..core.concurrency", "warm_processes": "job",
         "iter_pbr_video": "pbr.video",
         "render_pbr_video": "pbr.video",
         "ExportOptions": "options", "PbrOptions": "options", "DEFAULT_TEXTURE_SIZE": "options",
         "save_result": "result_file", "load_result": "result_file", "check_result": "result_file",
         "DamagedResultError": "result_file", "NOT_REGULAR_FILE": "result_file", "EmptyMeshError": "empty_mesh", "describe_export": "report",
         "placed_shape_facts": "report",
         "check_limits": "report", "DESTINATION_LIMITS": "report", "face_budget": "cleanup.chain",
         "lod_meshes": "lods", "LodTargetError": "lod_targets", "QuadTargetError": "quads.remesh", "bake_onto_mesh": "keep_mesh", "uv_usable": "keep_mesh", "bake_uv_mesh": "schedule",
         "MIN_OBSERVED_SHARE": "bake.coverage", "clean_shape": "shape_only",
         "observation_settings": "options", "Z_UP_TO_Y_UP": "assemble", "make_glb_mesh": "assemble",
         "save_glb": "assemble", "save_obj": "assemble",
         "ovoxel_to_glb": "pbr.export", "bake_ovoxel": "pbr.export", "EarlyPrepare": "pbr.early",
         "PbrTexturedMesh": "pbr.textured",
         "save_vertex_color_ply": "pbr.vertex_ply", "bake_onto_user_mesh": "pbr.onto_mesh",
         "save_ovoxel_result": "ovoxel_result", "load_ovoxel_result": "ovoxel_result",
         "check_ovoxel_result": "ovoxel_result", "is_ovoxel_result": "ovoxel_result"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = _LAZY[name]          # "..core.x": a module of the bottom layer the export re-offers
        return getattr(importlib.import_module(module if module.startswith(".") else f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
