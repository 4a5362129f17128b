"""O-Voxel -> PBR GLB in one call (TRELLIS2_FACTS.md §12, with our export's own tools; the module docs of
``prepare`` and ``bake`` say what each step does):

    textured = bake_ovoxel(mesh_with_voxel, PbrOptions(target_faces=500_000))   # or its keywords: a PbrTexturedMesh
    textured.save("model.glb")                           # or .obj / .usdz / .stl / .3mf, with formats.write's options
    ovoxel_to_glb(mesh_with_voxel, "model.glb")          # both at once

The GLB: vertices y up (``assemble``: (x, y, z) -> (x, z, -y), the rotation of ``ovoxel.to_gltf_frame``), UVs v up
in our arrays and 1 - v in the file (trimesh's writer flips them, once), ``pbrMetallicRoughness`` with the base
colour (+ alpha) and metallic-roughness textures, metallicFactor and roughnessFactor 1, an honest alpha mode
(``alpha_mode``), double-sided (the dual grid's surfaces may be open sheets), and the normal map with tangents.

``progress(stage, done, total)``: "cluster", "fill_holes", the quadric trim's stages ("simplify", "final_simplify"),
"orient", "uv_unwrap", "bake", "project", "attributes", "inpaint", "normal_map", "assemble"; ``cancel()`` returning
True raises ``trellis.core.callbacks.Cancelled`` between and inside the steps.
"""
from __future__ import annotations

import time

from ...core.callbacks import StageProgress, check
from ..arrays import report
from ..assemble import NO_SPLIT_ANGLE
from ..normals import SharedSplit
from ..options import PbrOptions
from .alpha_mode import choose_alpha_mode
from .bake import bake_pbr_textures
from .material import pbr_maps
from .prepare import prepare_ovoxel_mesh
from .textured import PbrTexturedMesh, pbr_textured_mesh

__all__ = ["bake_ovoxel", "ovoxel_to_glb"]


def bake_ovoxel(mesh, options: PbrOptions | None = None, *, progress: StageProgress = None, cancel=None,
                prepared=None, **changes) -> PbrTexturedMesh:
    """A ``MeshWithVoxel`` (with its attributes) -> ``PbrTexturedMesh`` with ``options`` (``changes``: changes to
    them, ``PbrOptions``' names): the mesh decimated to the options' face target and unwrapped, its base colour,
    alpha, metallic-roughness (and with ``normal_map`` tangent-space normal) textures at ``texture_size``², the
    material's alpha mode chosen from the baked alpha. ``project``: texels sampled at the closest point of the dense
    mesh (else where they lie on the decimated one). ``info``: per-step seconds ("seconds"), the preparation's
    record, "projection", "covered_share" and "pbr" (the alpha mode and what decided it). ``prepared``: an
    ``early.EarlyPrepare`` of this mesh with these options, started while the texture sampled: its result is used
    (waited for; "seconds" then holds "prepare" as the wait and "prepare_early" as its own run)."""
    o = PbrOptions.given(options, **changes)
    if mesh.attrs is None:
        raise ValueError("this O-Voxel mesh has no attributes (run the texture decoder before exporting)")
    if o.topology == "quads":
        from ..quads.bake import bake_ovoxel_quads
        return bake_ovoxel_quads(mesh, o, progress=progress, cancel=cancel)
    info: dict = {"seconds": {}}
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        info["seconds"][name] = round(now - clock[0], 3)
        clock[0] = now
        if o.verbose:
            print(f"[ovoxel_to_glb] {name}: {info['seconds'][name]:.2f} s", flush=True)

    if prepared is not None:
        if not prepared.fits(mesh, o):
            raise ValueError("the early preparation was made of another mesh or with other options")
        prepared, early_info, ran = prepared.result()
        info.update({k: v for k, v in early_info.items() if k != "seconds"})
        info["seconds"]["prepare_early"] = round(ran, 3)
    else:
        target = o.face_target(int(mesh.faces.shape[0]))
        prepared = prepare_ovoxel_mesh(mesh, target, o.texture_size, o.max_hole_perimeter, o.uv_method,
                                       o.uv_time_budget_s, progress, cancel, info)
    lap("prepare")
    split = None
    if o.crease_angle is not None and o.crease_angle < NO_SPLIT_ANGLE:
        split = SharedSplit(prepared.vertices, prepared.faces, o.crease_angle).start()   # meanwhile, in a thread
    textures = bake_pbr_textures(mesh, prepared.dense_vertices, prepared.dense_faces, prepared.vertices,
                                 prepared.faces, prepared.uvs, o.texture_size, o.project, o.normal_map,
                                 o.crease_angle, split, progress, cancel, info)
    lap("bake")
    check(cancel)
    mode, cutoff, facts = choose_alpha_mode(textures.alpha, textures.covered)
    info["pbr"] = {"alpha_mode": mode, "alpha_cutoff": cutoff, **facts}
    if o.normal_map:
        info["normal_map"] = {"crease_angle": o.crease_angle, "source": "dense mesh, closest point"}
    maps = pbr_maps(textures.metallic_roughness, textures.alpha, mode, cutoff, double_sided=True,
                    tangents=textures.tangents)
    return pbr_textured_mesh(prepared.vertices, prepared.faces, prepared.uvs, textures.base_color, info,
                             textures.normal, maps, split)


def ovoxel_to_glb(mesh, path, options: PbrOptions | None = None, *, cancel=None, progress: StageProgress = None,
                  **changes) -> PbrTexturedMesh:
    """``bake_ovoxel`` with ``options`` (``changes``: as there) and the GLB written to ``path`` (``formats.write``:
    nothing is written when cancelled). Returns the ``PbrTexturedMesh``; its ``info`` holds the export's record."""
    from ..formats import write

    o = PbrOptions.given(options, **changes)
    textured = bake_ovoxel(mesh, o, progress=progress, cancel=cancel)
    report(progress, "assemble", 0, 1)
    write(textured, path, "glb", crease_angle=o.crease_angle, cancel=cancel)
    report(progress, "assemble", 1, 1)
    return textured
