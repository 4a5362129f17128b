"""Textured quad meshes for both families: the export's surface remeshed to quads, unwrapped, and its look re-baked.

    textured = bake_quads(gaussians, (vertices, faces), target_faces=4000)          # TRELLIS v1: colour
    textured = bake_ovoxel_quads(mesh_with_voxel, target_faces=4000)                # TRELLIS.2: PBR maps
    textured.save("model.obj")        # quads as quads (formats.quad_files); .glb/.usdz/.stl/.3mf as there

The remesher runs on the export's own clean surface (v1: ``cleanup.clean_mesh_for_export``; TRELLIS.2: the
prepared O-Voxel mesh, welded), reduced first to ``REMESH_INPUT_FACTOR`` times the quads asked: enough triangles
for the quad field, few enough for its seconds. The quad mesh's triangulation (``triangulate_quads``: quads as
leading pairs) is unwrapped by ``uv.unwrap.unwrap_uv``, which keeps the faces' order, so the pairs survive; the
result's ``quad_pairs`` attribute tells the file writers, ``info["quads"]`` holds the ``QuadReport``. A chart seam
that crosses a quad's diagonal leaves that quad two triangles in the textured files (``info["textured_quads"]``
counts the quads they keep; geometry-only files keep every quad).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...core.callbacks import check
from ..options import ExportOptions, PbrOptions, mesh_arrays
from .rejoin import rejoin_cut_quads
from .remesh import DEFAULT_CREASE_ANGLE as FEATURE_ANGLE
from .remesh import remesh_quads
from .triangulate import corner_keys, merge_pairs, triangulate_quads

__all__ = ["REMESH_INPUT_FACTOR", "bake_ovoxel_quads", "bake_quads", "quad_target", "shape_quads", "unwrap_quads"]

# Triangles handed to the remesher per quad asked.
REMESH_INPUT_FACTOR = 8


def quad_target(n_faces: int, options) -> int:
    """The quads asked for a source of ``n_faces`` triangles: the options' face target (or ``simplify``'s share),
    counted in quads."""
    from ..cleanup.chain import face_budget
    target = options.face_target(int(n_faces))
    return int(target) if target is not None else face_budget(int(n_faces), options.simplify)


def unwrap_quads(quad_mesh, texture_size: int, uv_method: str = "auto", time_budget_s: float = 10.0,
                 cancel=None, info: dict | None = None):
    """(vertices, triangles, uvs, quad_pairs) of a ``QuadMesh``: triangulated with its quads as leading pairs, then
    unwrapped (seams split vertices; the faces' order is kept)."""
    from ..uv.unwrap import unwrap_uv
    tris, quad_pairs = triangulate_quads(quad_mesh.vertices, quad_mesh.faces)
    v = np.asarray(quad_mesh.vertices, np.float32)
    uv_info: dict = {}
    _, faces, uvs, vmap = unwrap_uv(v, tris, time_budget_s=time_budget_s, cancel=cancel, texture_size=texture_size,
                                    method=uv_method, info=uv_info)
    # quads a chart seam cut along their diagonal: the second triangle moved into the first one's chart where it fits
    v, faces, uvs, joined = rejoin_cut_quads(v[vmap], faces, uvs, quad_pairs, texture_size)
    if info is not None:
        info["uv_method"] = uv_info.get("method")
        info["quads_rejoined"] = joined
        # a chart seam still through a quad's diagonal leaves it two triangles in the textured files
        sizes, _ = merge_pairs(faces, quad_pairs, corner_keys(v, uvs))
        info["textured_quads"] = int((sizes == 4).sum())
    return v, np.asarray(faces, np.int64), np.asarray(uvs, np.float32), quad_pairs


def _remeshed(vertices, faces, target: int, crease_angle, info: dict, cancel):
    check(cancel)
    result = remesh_quads(vertices, faces, target, crease_angle=crease_angle)
    info["quads"] = result.report.as_dict()
    info.setdefault("warnings", []).extend(result.report.warnings)
    check(cancel)
    return result.mesh


def bake_quads(app_rep, mesh, options: ExportOptions | None = None, *, target_faces: int | None = None,
               feature_angle: float | None = FEATURE_ANGLE, progress=None, cancel=None, **changes):
    """TRELLIS v1: a ``TexturedMesh`` of about ``target_faces`` quads (None: ``quad_target``) with its colour
    texture baked from ``app_rep`` (the Gaussians) through the export's views and bake (``schedule.bake_uv_mesh``).
    ``feature_angle``: sharper edges kept as feature lines (None: none). The normal map is not baked here."""
    from ..cleanup.chain import clean_mesh_for_export
    from ..schedule import bake_uv_mesh
    from ..textured import TexturedMesh

    o = ExportOptions.given(options, **changes)
    vertices, faces = mesh_arrays(mesh)
    target = int(target_faces) if target_faces is not None else quad_target(len(faces), o)
    info: dict = {"seconds": {}, "input_faces": len(faces), "topology": "quads"}
    v_np, f_np = clean_mesh_for_export(vertices, faces, simplify=o.simplify, fill_holes=o.fill_holes,
                                       fill_holes_max_size=o.fill_holes_max_size, device=o.device,
                                       cancel=cancel, info=info.setdefault("cleanup", {}),
                                       target_faces=min(len(faces), REMESH_INPUT_FACTOR * target))
    quad_mesh = _remeshed(v_np, f_np, target, feature_angle, info, cancel)
    v, f, uv, pairs = unwrap_quads(quad_mesh, o.texture_size, o.uv_method, o.uv_time_budget_s, cancel, info)
    check(cancel)
    if o.normal_map:
        info.setdefault("warnings", []).append("no normal map on a quad mesh yet: the file has the colour texture")
    views = dataclasses.replace(o, normal_map=False)
    texture = bake_uv_mesh(app_rep, v, f, uv, views, progress=progress, cancel=cancel, info=info)
    info["faces"] = len(f)
    out = TexturedMesh(v, f, uv, texture, info)
    out.quad_pairs = pairs
    return out


def shape_quads(mesh, options: ExportOptions | None = None, *, target_faces: int | None = None,
                feature_angle: float | None = FEATURE_ANGLE, progress=None, cancel=None, **changes):
    """Files that hold no texture (geometry-only, STL, 3MF): the quad mesh of ``bake_quads`` alone, as
    ``shape_only.clean_shape`` gives a triangle mesh: no UVs (every vertex at (0, 0)), no texture, nothing baked."""
    from ..cleanup.chain import clean_mesh_for_export
    from ..textured import TexturedMesh

    o = ExportOptions.given(options, **changes)
    vertices, faces = mesh_arrays(mesh)
    target = int(target_faces) if target_faces is not None else quad_target(len(faces), o)
    info: dict = {"seconds": {}, "input_faces": len(faces), "topology": "quads", "texture": None}
    v_np, f_np = clean_mesh_for_export(vertices, faces, simplify=o.simplify, fill_holes=o.fill_holes,
                                       fill_holes_max_size=o.fill_holes_max_size, device=o.device,
                                       progress=progress, cancel=cancel, info=info.setdefault("cleanup", {}),
                                       target_faces=min(len(faces), REMESH_INPUT_FACTOR * target))
    quad_mesh = _remeshed(v_np, f_np, target, feature_angle, info, cancel)
    tris, pairs = triangulate_quads(quad_mesh.vertices, quad_mesh.faces)
    v = np.ascontiguousarray(quad_mesh.vertices, np.float32)
    info["faces"] = len(tris)
    out = TexturedMesh(v, np.ascontiguousarray(tris, np.int64), np.zeros((len(v), 2), np.float32), None, info)
    out.quad_pairs = pairs
    return out


def bake_ovoxel_quads(mesh, options: PbrOptions | None = None, *, target_faces: int | None = None,
                      feature_angle: float | None = FEATURE_ANGLE, progress=None, cancel=None, **changes):
    """TRELLIS.2: a ``PbrTexturedMesh`` of about ``target_faces`` quads (None: ``quad_target``) with base colour,
    alpha, metallic-roughness (and with ``normal_map`` normal) maps baked from the dense O-Voxel mesh
    (``pbr.bake.bake_pbr_textures``)."""
    from ..cleanup.weld import merge_duplicate_vertices
    from ..pbr.alpha_mode import choose_alpha_mode
    from ..pbr.bake import bake_pbr_textures
    from ..pbr.material import pbr_maps
    from ..pbr.prepare import prepare_ovoxel_mesh
    from ..pbr.textured import pbr_textured_mesh

    o = PbrOptions.given(options, **changes)
    if mesh.attrs is None:
        raise ValueError("this O-Voxel mesh has no attributes (run the texture decoder before exporting)")
    n = int(mesh.faces.shape[0])
    target = int(target_faces) if target_faces is not None else quad_target(n, o)
    info: dict = {"seconds": {}, "topology": "quads"}
    # the prepared mesh is the reference's clean surface (holes closed, oriented); its own atlas is not used
    prepared = prepare_ovoxel_mesh(mesh, min(n, REMESH_INPUT_FACTOR * target), 64, o.max_hole_perimeter,
                                   o.uv_method, o.uv_time_budget_s, progress, cancel, info.setdefault("prepare", {}))
    v_w, f_w = merge_duplicate_vertices(prepared.vertices, prepared.faces)
    quad_mesh = _remeshed(v_w, f_w, target, feature_angle, info, cancel)
    v, f, uv, pairs = unwrap_quads(quad_mesh, o.texture_size, o.uv_method, o.uv_time_budget_s, cancel, info)
    textures = bake_pbr_textures(mesh, prepared.dense_vertices, prepared.dense_faces, v, f, uv, o.texture_size,
                                 o.project, o.normal_map, o.crease_angle, None, progress, cancel, info)
    check(cancel)
    mode, cutoff, facts = choose_alpha_mode(textures.alpha, textures.covered)
    info["pbr"] = {"alpha_mode": mode, "alpha_cutoff": cutoff, **facts}
    if o.normal_map:
        info["normal_map"] = {"crease_angle": o.crease_angle, "source": "dense mesh, closest point"}
    maps = pbr_maps(textures.metallic_roughness, textures.alpha, mode, cutoff, double_sided=True,
                    tangents=textures.tangents)
    info["faces"] = len(f)
    out = pbr_textured_mesh(v, f, uv, textures.base_color, info, textures.normal, maps, None)
    out.quad_pairs = pairs
    return out
