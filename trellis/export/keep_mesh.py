"""A generated look baked onto the user's own mesh ("keep my mesh"): the vertices, faces and, where they can carry
a texture, the UVs of the user's model stay as they are; only the texture is new.

    ok, reason, stats = uv_usable(vertices, faces, uvs)
    textured = bake_onto_mesh(gaussian, vertices, faces, uvs, texture_size=2048)
    textured.save("chair.glb", crease_angle=180)        # one normal per vertex: the file keeps the vertices

The Gaussians of a "new look" job live in the frame the voxeliser put the user's model in
(``representations.voxels.used_in_unit_cube``: the bounding box of the vertices the faces use centred at the
origin, its largest side 1). ``bake_onto_mesh`` bakes onto a copy normalised by that same function and hands back
the model as it was given. Gaussians are baked along the mesh's normals (``bake.near_surface``: a look generated on
the mesh's voxels lies up to a voxel off its surface, and each texel takes the look where the mesh is); a radiance
field, or ``bake="views"``, through the export's own views, bake and inpainting (``schedule.bake_uv_mesh``).

UVs follow the export's convention (``uv.unwrap``: v up, the texture stored top row first), which is trimesh's:
the UVs of a model read by trimesh (``mesh.visual.uv``, glTF's v already flipped by its loader) are used as they
are. UVs that cannot carry one texture (``uv_usable``) are replaced by a new atlas (``uv.unwrap.unwrap_uv``),
which splits vertices along its seams: only then do the vertices and faces differ from the model's.

Writing the result: formats' ``crease_angle`` of 180 (``assemble.NO_SPLIT_ANGLE``) writes one smooth normal per
vertex and splits none, so a GLB, OBJ or USDZ holds the model's vertices and faces in their order (a lower angle
splits vertices at creases, ``None`` writes no normals).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..core.callbacks import check
from ..representations.gaussian import Gaussian
from ..representations.voxels import used_in_unit_cube
from .options import ExportOptions
from .textured import TexturedMesh

__all__ = ["UV_RANGE_TOLERANCE", "DEGENERATE_DENSITY", "MAX_DEGENERATE_SHARE", "OVERLAP_RESOLUTION",
           "MAX_OVERLAP_SHARE", "CHECK_EVERY_FACES", "BAKE_OPTIONS", "KEEP_MESH_BAKES", "uv_usable", "bake_onto_mesh"]

# How far past [0, 1] a UV may lie: exporters round border UVs a little past the edge; half a texel of a 1024²
# texture, while a tiling or UDIM layout goes whole units past it.
UV_RANGE_TOLERANCE = 5e-4
# A face is degenerate in UV when its share of the UV area is under this fraction of its share of the surface:
# zero UV area (collapsed to a line or a point) and near-zero alike get a smear of one texel row.
DEGENERATE_DENSITY = 1e-3
# Degenerate faces may cover up to this share of the surface: a few collapsed slivers smear unseen; more is a
# layout made for something else (lightmaps, tiling), and the bake would show streaks.
MAX_DEGENERATE_SHARE = 0.02
# The overlap test's raster (texels per side): fine enough that islands of a typical layout span many texels,
# coarse enough to take milliseconds.
OVERLAP_RESOLUTION = 512
# Share of the UV-covered texels that two or more faces cover (mirrored or stacked islands, overlapping
# faces): each such texel can hold one of their colours only. A few stacked details pass; a mirrored half
# (50 %) or repeated parts do not.
MAX_OVERLAP_SHARE = 0.05
# Faces handled between two cancel checks in a pass over a large mesh: a fraction of a second of a CPU's work.
CHECK_EVERY_FACES = 1 << 18
# bake_onto_mesh's keyword arguments: the options (``options.ExportOptions``) that concern the unwrap (when the UVs
# are replaced), the views and the bake (clean-up, normal maps and normals do not apply).
BAKE_OPTIONS = ("texture_size", "bake_mode", "nviews", "render_resolution", "uv_time_budget_s", "uv_method", "steps",
                "lambda_tv", "cg_iterations", "observation_scale", "device", "debug", "verbose")
# bake_onto_mesh's bakes: "normals" composites the Gaussians along the mesh's normal at every texel
# (bake.near_surface), "views" projects renders of them onto the mesh (the export's bake; a radiance field's always).
KEEP_MESH_BAKES = ("normals", "views")


def uv_usable(vertices, faces, uvs, cancel=None) -> tuple[bool, str, dict]:
    """(usable, reason, stats): whether ``uvs`` [V,2] (one per vertex of ``vertices`` [V,3], ``faces`` [F,3])
    can carry one baked texture: present and finite, inside [0, 1] (``UV_RANGE_TOLERANCE``), few degenerate
    faces (``MAX_DEGENERATE_SHARE`` of the surface) and few overlaps (``MAX_OVERLAP_SHARE`` of the covered
    texels at ``OVERLAP_RESOLUTION``²). ``reason`` says what failed ("usable" otherwise); ``stats`` holds what
    was measured: nonfinite, outside, uv_min, uv_max, degenerate_share, overlap_share, texel_use. ``cancel()``
    returning True raises ``Cancelled`` (asked between passes and between chunks of a large mesh's faces)."""
    from .uv.stats import texel_counts

    stats: dict = {}
    if uvs is None:
        return False, "the mesh has no UVs", stats
    v = _array(vertices, np.float64).reshape(-1, 3)
    f = _array(faces, np.int64).reshape(-1, 3)
    uv = _array(uvs, np.float64)
    if uv.ndim != 2 or uv.shape != (len(v), 2):
        return False, f"UVs of shape {tuple(uv.shape)} for {len(v)} vertices (one (u, v) per vertex needed)", stats
    if len(f) == 0:
        return False, "the mesh has no faces", stats
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError("the mesh has faces that name vertices it does not have")
    check(cancel)
    stats["nonfinite"] = int((~np.isfinite(uv)).any(axis=1).sum())
    if stats["nonfinite"]:
        return False, f"{stats['nonfinite']} UVs are not numbers (NaN or infinite)", stats
    used = uv[_used_mask(f, len(v))]
    outside = ((used < -UV_RANGE_TOLERANCE) | (used > 1 + UV_RANGE_TOLERANCE)).any(axis=1)
    stats.update(outside=int(outside.sum()), uv_min=used.min(axis=0).round(6).tolist(),
                 uv_max=used.max(axis=0).round(6).tolist())
    if stats["outside"]:
        (u0, v0), (u1, v1) = stats["uv_min"], stats["uv_max"]
        return False, (f"{stats['outside']} UVs lie outside [0, 1] (a tiling or UDIM layout: u {u0:g}..{u1:g}, "
                       f"v {v0:g}..{v1:g})"), stats
    check(cancel)
    p, t = v[f], uv[f]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    uv_area = 0.5 * np.abs((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                           - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
    surface, uv_total = float(area.sum()), float(uv_area.sum())
    if surface <= 0:
        return False, "the mesh has no surface (every face has zero area)", stats
    degenerate = uv_area * surface < DEGENERATE_DENSITY * area * max(uv_total, 1e-300)
    stats["degenerate_share"] = round(float(area[degenerate].sum()) / surface, 6)
    if stats["degenerate_share"] > MAX_DEGENERATE_SHARE:
        return False, (f"{stats['degenerate_share']:.1%} of the surface lies on faces with (almost) no UV area, "
                       f"more than {MAX_DEGENERATE_SHARE:.0%}"), stats
    check(cancel)
    counts = np.zeros((OVERLAP_RESOLUTION, OVERLAP_RESOLUTION), np.int32)
    for start in range(0, len(f), CHECK_EVERY_FACES):          # counts add up over faces: the same in chunks
        check(cancel)
        counts += texel_counts(f[start:start + CHECK_EVERY_FACES], uv, OVERLAP_RESOLUTION)
    covered = int((counts > 0).sum())
    stats["texel_use"] = round(covered / OVERLAP_RESOLUTION ** 2, 6)
    stats["overlap_share"] = round(int((counts > 1).sum()) / max(covered, 1), 6)
    if covered == 0:
        return False, f"the UVs cover no texel of a {OVERLAP_RESOLUTION}² texture", stats
    if stats["overlap_share"] > MAX_OVERLAP_SHARE:
        return False, (f"{stats['overlap_share']:.1%} of the UV area is covered twice or more (mirrored or stacked "
                       f"islands), more than {MAX_OVERLAP_SHARE:.0%}"), stats
    return True, "usable", stats


def bake_onto_mesh(app_rep, vertices, faces, uvs=None, options: ExportOptions | None = None, *, bake: str = "normals",
                   progress=None, cancel=None, **kwargs) -> TexturedMesh:
    """The look of ``app_rep`` (Gaussians decoded in the voxeliser's frame of this mesh) baked onto the user's
    mesh: ``vertices`` [V,3] in the pipeline's z-up frame as loaded (not normalised), ``faces`` [F,3], ``uvs``
    [V,2] (v up) or None.

    Returns a ``TexturedMesh`` whose vertices are ``vertices`` (same values, same dtype), faces ``faces`` (int64,
    same order) and uvs ``uvs`` when ``uv_usable`` accepts them; otherwise a new atlas (``uv.unwrap.unwrap_uv``)
    with the model's vertices copied along its seams. Nothing is cleaned up or decimated. ``info``: "uv" ("kept"
    or "new atlas: <reason>"), "uv_stats", "uv_method" (new atlas), "vertices", "faces", "seconds" per stage,
    "observed_share" and the views ("observations"); with ``debug`` also the texture before inpainting and its
    observed texels. ``options``: an ``ExportOptions``, of which ``BAKE_OPTIONS`` apply (``nviews`` /
    ``render_resolution`` None choose by device: ``options.observation_settings``); ``kwargs``: changes to those.
    ``bake``: one of ``KEEP_MESH_BAKES`` (the views' options apply to "views", which also bakes where the normals
    saw under ``bake.coverage.MIN_OBSERVED_SHARE`` of the atlas: it bakes faint Gaussians again and says so).
    ``progress(stage, done, total)`` hears "uv_unwrap" (new atlas), "observe", "bake", "reobserve", "resolve",
    "inpaint"; ``cancel()`` returning True raises ``trellis.core.callbacks.Cancelled``."""
    from .schedule import bake_uv_mesh

    unknown = sorted(set(kwargs) - set(BAKE_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; bake_onto_mesh takes {list(BAKE_OPTIONS)}")
    if bake not in KEEP_MESH_BAKES:
        raise ValueError(f"unknown bake {bake!r} (use one of {list(KEEP_MESH_BAKES)})")
    o = ExportOptions.given(options, **kwargs)
    info: dict = {"seconds": {}}
    last = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        info["seconds"][name] = round(now - last[0], 3)
        last[0] = now

    check(cancel)
    v_in, f_in = _checked_mesh(vertices, faces)
    check(cancel)
    used, v_cube, f_cube = used_in_unit_cube(v_in, f_in)
    info.update(vertices=int(len(v_in)), faces=int(len(f_in)))
    lap("normalise")
    check(cancel)

    ok, reason, info["uv_stats"] = uv_usable(v_in, f_in, uvs, cancel)
    lap("uv_check")
    check(cancel)
    if ok:
        uv_in = _array(uvs, None)
        info["uv"] = "kept"
        out = (v_in.copy(), f_in.copy(), uv_in.copy())
        bake_mesh = (v_cube, f_cube, uv_in[used])
    else:
        from .uv.unwrap import unwrap_uv

        uv_info: dict = {}
        _, f_new, uv_new, vmap = unwrap_uv(
            v_cube, f_cube, time_budget_s=o.uv_time_budget_s, cancel=cancel, texture_size=o.texture_size,
            method=o.uv_method, verbose=o.verbose, info=uv_info,
            progress=None if progress is None else (lambda d, t: progress("uv_unwrap", d, t)))
        info["uv"] = f"new atlas: {reason}"
        info["uv_method"] = uv_info["method"]
        check(cancel)
        out = (v_in[used[vmap]], f_new, uv_new)
        bake_mesh = (v_cube[vmap], f_new, uv_new)
        lap("uv_unwrap")
        check(cancel)

    # the bake adds its observed share and stage seconds (and the views) to the same info
    texture = None
    if bake == "normals" and isinstance(app_rep, Gaussian):
        from .bake.coverage import MIN_OBSERVED_SHARE
        from .bake.near_surface import bake_near_surface

        texture = bake_near_surface(app_rep, *bake_mesh, o.texture_size, device=o.device_for(app_rep), cancel=cancel,
                                    progress=progress, info=info, debug=o.debug)
        if info["observed_share"] < MIN_OBSERVED_SHARE:
            texture = None
    if texture is None:
        views = dataclasses.replace(ExportOptions(), **{name: getattr(o, name) for name in BAKE_OPTIONS})
        texture = bake_uv_mesh(app_rep, *bake_mesh, views, progress=progress, cancel=cancel, info=info)
    return TexturedMesh(*out, texture, info)


def _used_mask(faces: np.ndarray, n: int) -> np.ndarray:
    """Which of `n` vertices the faces use, in their order (np.unique's rows, without sorting 3 F indices)."""
    used = np.zeros(n, bool)
    used[faces.reshape(-1)] = True
    return used


def _array(x, dtype):
    """A numpy array of ``x`` (numpy, torch or nested lists); ``dtype`` None keeps its own."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def _checked_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """(vertices as given, faces int64), a ValueError for what no bake can use."""
    v = _array(vertices, None)
    if v.ndim != 2 or v.shape[1] != 3 or not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"vertices must be a float [V, 3] array, got {v.dtype} of shape {tuple(v.shape)}")
    f = _array(faces, None)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer [F, 3] array of triangles, got {f.dtype} {tuple(f.shape)}")
    f = f.astype(np.int64)
    if len(f) == 0:
        raise ValueError("the mesh has no faces")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError("the mesh has faces that name vertices it does not have")
    if not np.isfinite(v).all():
        raise ValueError("the mesh has vertices at infinity or NaN coordinates")
    used = v[_used_mask(f, len(v))]
    if np.ptp(used, axis=0).max() <= 0:
        raise ValueError("the mesh has no size: all its triangles sit in one point")
    return v, f
