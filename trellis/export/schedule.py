"""The export's stages in order, and how they overlap: ``bake_textured_mesh``, and ``to_glb`` / ``to_obj`` that
assemble its result (spec §12, §15); ``bake_uv_mesh`` runs stages 3-4 alone, on a mesh that keeps its geometry
and UVs (``keep_mesh``).

1. clean-up (``cleanup.chain.clean_mesh_for_export``): decimation, hidden-face removal, hole filling;
2. UV unwrap (``uv.unwrap.unwrap_uv``);
3. observations (``bake.observations``): renders of the Gaussians from ``nviews`` spherical-Hammersley cameras
   (radius 2, fov 40°) at ``render_resolution``² (``options.observation_settings`` by device);
4. texture bake: "fast" (default; ``bake.least_squares``, one view in memory at a time) or "opt" (the
   reference's optimisation, ``bake.optimise``); then inpainting; a bake that observed almost nothing is done
   again from fainter pixels (``bake.coverage``); with ``normal_map=True``, the dense mesh's normals baked onto the
   clean mesh through the same views (``bake.normal_map``);
5. assembly (``assemble``): y up, PBR material with metallic 0 and roughness 1.

The observation views need neither the clean mesh nor the UVs, so they are rendered while the CPU-bound stages
run in child processes (the decimation, xatlas, our chart layout on an accelerator) or a thread (the chart layout on
a CPU), and held until the bake needs them; the views and their order are the same either way, so the texture is
too; the files' normals are split at creases in a thread while the texture is baked (trellis/export/DESIGN.md). The
quality and the time of each bake mode: docs/benchmarks/export.md#texture-bake. Every function takes its options as
one ``options.ExportOptions`` (or the same keywords).

``progress(stage, done, total)`` is called throughout (stages: the clean-up's own ones, then "uv_unwrap",
"observe", "bake", "reobserve" and "resolve" (a bake done again), "inpaint" (fast mode), "normal_map" (with
``normal_map=True``), "assemble"); ``cancel()`` returning True raises ``trellis.core.callbacks.Cancelled`` between and
inside stages.
"""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import torch

from ..core.callbacks import StageProgress, check
from ..tuning import TUNING
from .assemble import NO_SPLIT_ANGLE
from .bake.coverage import rebake_if_unobserved
from .bake.inpaint import inpaint_texture
from .bake.least_squares import TextureAccumulator
from .bake.observations import observation_cameras, render_observations, sharpening_scale
from .bake.texture import bake_texture
from ..core.concurrency import Background
from .empty_mesh import EmptyMeshError
from .normals import SharedSplit
from .options import DEFAULT_TEXTURE_SIZE, ExportOptions, mesh_arrays, observation_settings
from .textured import TexturedMesh
from .uv import unwrap as uv_unwrap

__all__ = ["HELD_VIEW_BYTES", "DEVICE_VIEW_MARGIN", "views_fit_on_device", "uv_in_child", "bake_textured_mesh",
           "bake_uv_mesh", "to_glb", "to_obj"]


# Host memory the observation views rendered ahead of their use may take (~17 bytes per pixel each).
HELD_VIEW_BYTES = 2 << 30
# The views wait on the GPU instead (no copy out and back on the export's critical path) when all of them fit and
# at least this much stays obtainable for the rest of the export, above its own peak
# (docs/benchmarks/export.md#memory).
DEVICE_VIEW_MARGIN = 4 << 30


class _Run:
    """One bake's fixed inputs: the Gaussians, the options, the device, progress and cancel, and its record (``info``,
    with each stage's seconds in ``info["seconds"]``, printed with ``verbose``)."""

    def __init__(self, app_rep, options: ExportOptions, progress: StageProgress, cancel, info: dict):
        self.app_rep, self.options, self.progress, self.cancel, self.info = app_rep, options, progress, cancel, info
        self.device = options.device_for(app_rep)
        info.setdefault("seconds", {})
        self.last = time.perf_counter()

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.info["seconds"][name] = round(now - self.last, 3)
        self.last = now
        if self.options.verbose:
            print(f"[to_glb] {name}: {self.info['seconds'][name]:.2f} s", flush=True)


def views_fit_on_device(room_bytes: int | None, views: int, per_view_bytes: int) -> bool:
    """Whether `views` renders of `per_view_bytes` wait on the device: `room_bytes` (what this process can still
    allocate there, under any VRAM budget) holds them with DEVICE_VIEW_MARGIN to spare. Pure."""
    return room_bytes is not None and room_bytes - views * per_view_bytes >= DEVICE_VIEW_MARGIN


class _Views:
    """The observation cameras and the lazy stream of their renders. Views rendered ahead of their use wait in
    ``held``: on the device when all of them fit there with ``DEVICE_VIEW_MARGIN`` to spare, else in host memory
    (at most ``HELD_VIEW_BYTES``)."""

    def __init__(self, run: _Run):
        o, device, info = run.options, run.device, run.info
        auto_views, auto_res = observation_settings(device, o.bake_mode)
        nviews = o.nviews or auto_views
        self.resolution = o.render_resolution or auto_res
        info["observations"] = {"views": int(nviews), "resolution": int(self.resolution)}
        self.ext, self.intr = observation_cameras(nviews, device=device)
        self.n = self.ext.shape[0]
        scale = o.observation_scale
        if scale is None:
            from ..representations import Gaussian
            scale = 1.0
            if o.bake_mode == "fast" and isinstance(run.app_rep, Gaussian):
                scale = sharpening_scale(run.app_rep, self.resolution)
        info["observations"]["gaussian_scale"] = float(scale)
        self.stream = render_observations(run.app_rep, self.ext, self.intr, self.resolution, cancel=run.cancel,
                                          gaussian_scale=scale)
        per_view = 17 * int(self.resolution) ** 2
        self.max_held = min(self.n, max(1, HELD_VIEW_BYTES // per_view))
        self.on_device = False
        if device.type == "cuda":
            from ..core.device import obtainable_device_memory
            if views_fit_on_device(obtainable_device_memory(device), self.n, per_view):
                self.on_device, self.max_held = True, self.n
        info["observations"]["held_on"] = "device" if self.on_device else "host"
        self.device = device
        self.held = []

    def hold_next(self) -> None:
        """Render the next view and hold it."""
        color, mask, depth = next(self.stream)
        self.held.append((color, mask, depth) if self.on_device else (color.cpu(), mask.cpu(), depth.cpu()))

    def remaining(self):
        """The views not taken yet, in order: those held (on the device), then the rest of the stream."""
        d = self.device
        return itertools.chain(((c.to(d), m.to(d), z.to(d)) for c, m, z in self.held), self.stream)


def _clean(run: _Run, vertices, faces, views: _Views, simplified):
    """Stage 1 (numpy vertices, faces). While the decimation runs in child processes, views are rendered: during
    the caller's ``simplified`` on any device, during the pieces of a large mesh on an accelerator only (a CPU's
    cores are then busy decimating)."""
    o, info = run.options, run.info
    overlap = o.overlap_uv and (simplified is not None or run.device.type != "cpu")

    def while_waiting():
        if overlap and len(views.held) < views.max_held:
            views.hold_next()
        else:
            time.sleep(0.005)

    target_faces = o.face_target(int(faces.shape[0]))
    if o.simplify > 0 or o.fill_holes or target_faces is not None:
        from .cleanup.chain import clean_mesh_for_export
        v_np, f_np = clean_mesh_for_export(vertices, faces, simplify=o.simplify, fill_holes=o.fill_holes,
                                           fill_holes_max_size=o.fill_holes_max_size, device=run.device,
                                           progress=run.progress, cancel=run.cancel, simplified=simplified,
                                           info=info.setdefault("cleanup", {}), while_waiting=while_waiting,
                                           target_faces=target_faces)
    else:
        v_np, f_np = vertices.cpu().numpy(), faces.cpu().numpy()
    info["views_rendered_during_simplify"] = len(views.held)
    if len(f_np) == 0:
        raise ValueError("to_glb: no faces left after clean-up")
    info["faces"] = int(len(f_np))
    return v_np, f_np


def uv_in_child(options: ExportOptions, device) -> bool:
    """Whether our chart layout runs in a child process (``uv.in_child``): beside the GPU work of ``_unwrap``'s own
    thread (the views rendered and prepared; a CPU's cores are busy enough with the layout itself), unless
    ``trellis.tuning.Tuning.uv_in_child`` says otherwise."""
    wanted = TUNING.uv_in_child
    wanted = torch.device(device).type != "cpu" if wanted is None else wanted
    return bool(options.overlap_uv and options.uv_method in ("auto", "geometric") and wanted)


def _unwrap(run: _Run, v_np, f_np, views: _Views, acc):
    """Stage 2, with more views rendered meanwhile: xatlas runs in a child process (watched by a thread that
    mostly sleeps), our chart layout in a warm child process on an accelerator (``uv_in_child``), else in a thread
    that is mostly numpy. For the "fast" bake (``acc``), views held on the GPU are then also prepared (everything
    but the UVs, which only change the faces' vertex indices) and freed (``trellis.tuning.Tuning.prepare_ahead``);
    the accumulator rasterises the clean mesh either way, so the texture is the same whether or not a view was
    prepared ahead. Returns the unwrapped (vertices, faces, uvs) and the prepared views."""
    o, info, cancel = run.options, run.info, run.cancel
    prepared = []
    ahead = acc is not None and (views.on_device if TUNING.prepare_ahead is None else TUNING.prepare_ahead)

    def prepare_next():
        color, mask, depth = views.held.pop(0)
        i = len(prepared)
        prepared.append(acc.prepare_view(color, mask, views.ext[i], views.intr[i], depth=depth, cancel=cancel))

    uv_info, abort = {}, threading.Event()
    in_child = uv_in_child(o, views.device)

    def unwrap():
        return uv_unwrap.unwrap_uv(v_np, f_np, time_budget_s=o.uv_time_budget_s,
                                   progress=lambda d, t: run.report("uv_unwrap", d, t),
                                   cancel=lambda: abort.is_set() or (cancel is not None and cancel()),
                                   texture_size=o.texture_size, method=o.uv_method, verbose=o.verbose,
                                   info=uv_info, in_child=in_child)

    early = rendered = len(views.held)
    if o.overlap_uv:
        worker = Background("trellis-uv-unwrap", unwrap)
        try:
            while worker.running():
                if rendered < views.n and len(views.held) + len(prepared) < views.max_held:
                    views.hold_next()
                    rendered += 1
                elif ahead and views.held:
                    prepare_next()
                else:
                    break
        except BaseException:
            abort.set()
            raise
        finally:
            worker.join()
        out = worker.result()               # its error, re-raised here
    else:
        out = unwrap()
    v_np, f_np, uv_np, _ = out
    info["uv_method"] = uv_info["method"]
    info["uv_in_child"] = in_child
    if uv_info["method"] == "geometric" and "phases" in uv_info:     # (not those of a layout given up)
        info["uv_phases"] = uv_info["phases"]
        if "cpu" in uv_info:
            info["uv_cpu"] = uv_info["cpu"]
        info["uv_packings"] = uv_info.get("packings")
    info["vertices"] = int(len(v_np))
    info["views_rendered_during_uv"] = rendered - early
    info["observations"]["prepared_during_uv"] = len(prepared)
    return v_np, f_np, uv_np, prepared


def _bake_fast(run: _Run, acc, prepared, views: _Views, v_np, f_np, uv_np):
    """Stages 3-4, "fast": the prepared views folded, the rest observed and folded, solved, inpainted."""
    o, info, cancel, report = run.options, run.info, run.cancel, run.report
    n = views.n
    acc.set_uvs(uv_np, v_np, f_np)
    acc.fold_views(prepared, progress=lambda done, _: report("observe", done, n), cancel=cancel)   # freed as it goes
    for i, (color, mask, depth) in enumerate(views.remaining(), start=len(prepared)):
        acc.add_view(color, mask, views.ext[i], views.intr[i], depth=depth, cancel=cancel)
        report("observe", i + 1, n)
    run.lap("observe+accumulate")
    texture, filled = acc.solve(iterations=o.cg_iterations, cancel=cancel,
                                progress=lambda d, t: report("bake", d, t))
    again = rebake_if_unobserved(filled, run.app_rep, v_np, f_np, uv_np, o.texture_size, views.ext, views.intr,
                                 views.resolution, info, device=run.device, cancel=cancel, progress=report,
                                 cg_iterations=o.cg_iterations)
    texture, filled = again or (texture, filled)
    check(cancel)
    report("inpaint", 0, 1)     # on the texture's device: milliseconds on a GPU, a fraction of a second on a CPU
    texture_u8 = inpaint_texture(texture, filled)
    report("inpaint", 1, 1)
    if o.debug:
        info["texture_before_inpaint"] = (texture.cpu().numpy() * 255).round().astype(np.uint8)
        info["observed_texels"] = filled.cpu().numpy()
    return texture_u8


def _bake_opt(run: _Run, views: _Views, v_np, f_np, uv_np):
    """Stages 3-4, "opt": the views observed as 8-bit frames (as the reference keeps them), then optimised."""
    o, cancel, report = run.options, run.cancel, run.report
    n = views.n
    colors, masks, seen = [], [], {}
    for i, (color, mask, _) in enumerate(views.remaining()):
        colors.append((color * 255).round().to(torch.uint8))
        masks.append(mask)
        report("observe", i + 1, n)
    run.lap("observe")
    texture_u8 = bake_texture(v_np, f_np, uv_np, colors, masks, views.ext, views.intr,
                              texture_size=o.texture_size, mode="opt", lambda_tv=o.lambda_tv, steps=o.steps,
                              progress=lambda d, t: report("bake", d, t), cancel=cancel, device=run.device,
                              info=seen)
    del colors, masks
    again = rebake_if_unobserved(seen["observed_texels"], run.app_rep, v_np, f_np, uv_np, o.texture_size,
                                 views.ext, views.intr, views.resolution, run.info, device=run.device, cancel=cancel,
                                 progress=report)
    if again is not None:
        texture_u8 = inpaint_texture(*again)
    return texture_u8


def _bake(run: _Run, acc, prepared, views: _Views, v_np, f_np, uv_np):
    """Stages 3-4 in the options' bake mode (``acc``: the "fast" bake's accumulator)."""
    if run.options.bake_mode == "fast":
        return _bake_fast(run, acc, prepared, views, v_np, f_np, uv_np)
    return _bake_opt(run, views, v_np, f_np, uv_np)


def bake_textured_mesh(app_rep, mesh, options: ExportOptions | None = None, *, progress: StageProgress = None,
                       cancel=None, simplified=None, **kwargs) -> TexturedMesh:
    """Stages 1-4 of ``app_rep`` (the Gaussians) and ``mesh`` with ``options`` (``kwargs``: changes to them, the
    fields' names): a ``TexturedMesh`` (vertices [V,3] float32 z up, faces [F,3] int64, uvs [V,2] float32, texture
    uint8 [S,S,3], info dict with per-stage seconds, face counts, the UV method used and the share of the atlas
    observed ("observed_share", "bake_fallback": ``bake.coverage``); with ``debug`` also the texture before
    inpainting and its observed-texel mask). ``simplified``: a ``cleanup.decimate.BackgroundSimplify`` of this mesh
    started earlier (``job.ExportJob`` starts it)."""
    o = ExportOptions.given(options, **kwargs)
    if o.topology == "quads":
        from .quads.bake import bake_quads
        return bake_quads(app_rep, mesh, o, progress=progress, cancel=cancel)
    if o.normal_map and o.crease_angle is None:
        raise ValueError("normal_map=True needs vertex normals (crease_angle=None writes none)")
    run = _Run(app_rep, o, progress, cancel, {"seconds": {}})
    info = run.info
    check(cancel)
    vertices, faces = mesh_arrays(mesh, run.device)
    if faces.shape[0] == 0:
        raise EmptyMeshError("to_glb: the mesh is empty (no faces)")
    info["input_faces"] = int(faces.shape[0])
    views = _Views(run)
    if uv_in_child(o, run.device):
        from .uv import in_child
        in_child.warm()                # it imports while the mesh is cleaned up

    v_np, f_np = _clean(run, vertices, faces, views, simplified)
    run.lap("cleanup")

    acc = TextureAccumulator(v_np, f_np, None, o.texture_size, device=run.device) if o.bake_mode == "fast" else None
    v_np, f_np, uv_np, prepared = _unwrap(run, v_np, f_np, views, acc)
    run.lap("uv_unwrap")
    # the files' normals split at creases, made on the CPU while the texture is baked
    split = None
    if o.crease_angle is not None and o.crease_angle < NO_SPLIT_ANGLE:
        split = SharedSplit(v_np, f_np, o.crease_angle).start()

    texture_u8 = _bake(run, acc, prepared, views, v_np, f_np, uv_np)
    run.lap("bake+inpaint")
    normal_u8 = None
    if o.normal_map:
        normal_u8 = _bake_normals(run, (vertices, faces), (v_np, f_np, uv_np), views, split)
        run.lap("normal_map")
    out = TexturedMesh(v_np, f_np, uv_np, texture_u8, info, normal_u8)
    out.split = split
    return out


def bake_uv_mesh(app_rep, vertices, faces, uvs, options: ExportOptions | None = None, *, progress: StageProgress = None,
                 cancel=None, info: dict | None = None, **kwargs) -> np.ndarray:
    """Stages 3-4 alone, for a mesh that keeps its geometry and its UVs (no clean-up, no unwrap): the uint8
    [S,S,3] texture of ``app_rep`` baked onto ``vertices`` [V,3] (in the Gaussians' frame), ``faces`` [F,3] and
    ``uvs`` [V,2] (v up) through the same views, bake, fallback and inpainting as ``bake_textured_mesh``, with the
    options that concern the views and the bake (texture_size, bake_mode, nviews, render_resolution, steps,
    lambda_tv, cg_iterations, observation_scale, device, debug, verbose; ``kwargs``: changes to them). ``info`` (a
    dict) gets "observations", "observed_share" (and "bake_fallback"), per-stage seconds in "seconds", and with
    ``debug`` the texture before inpainting and its observed-texel mask. StageProgress stages: "observe", "bake",
    "reobserve", "resolve", "inpaint"."""
    o = ExportOptions.given(options, **kwargs)
    if o.normal_map:
        raise ValueError("bake_uv_mesh bakes no normal map: there is no denser mesh to take normals from")
    run = _Run(app_rep, o, progress, cancel, {} if info is None else info)
    check(cancel)
    v_np = np.ascontiguousarray(np.asarray(vertices, dtype=np.float32).reshape(-1, 3))
    f_np = np.ascontiguousarray(np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    uv_np = np.ascontiguousarray(np.asarray(uvs, dtype=np.float32).reshape(-1, 2))
    if len(f_np) == 0 or len(uv_np) != len(v_np):
        raise ValueError(f"bake_uv_mesh: {len(f_np)} faces, {len(uv_np)} UVs for {len(v_np)} vertices")
    views = _Views(run)
    acc = TextureAccumulator(v_np, f_np, None, o.texture_size, device=run.device) if o.bake_mode == "fast" else None
    texture_u8 = _bake(run, acc, [], views, v_np, f_np, uv_np)
    run.lap("bake+inpaint")
    return texture_u8


def _bake_normals(run: _Run, dense, clean, views: _Views, split=None):
    """Stage 4b: the ``dense`` mesh's normals (vertices, faces) baked onto the ``clean`` one (vertices, faces, uvs)
    through the same views (``bake.normal_map``), for normals split at the export's crease angle (``split``: the
    files' ``SharedSplit`` of that split)."""
    from .bake.normal_map import bake_normal_map

    o, seen = run.options, {}
    f_np = clean[1]
    out = bake_normal_map(*dense, *clean, o.texture_size, views.ext, views.intr, views.resolution,
                          crease_angle=o.crease_angle, device=run.device, cancel=run.cancel, progress=run.report,
                          cg_iterations=o.cg_iterations, info=seen,
                          split=None if split is None else split.for_faces(f_np, o.crease_angle))
    run.info["normal_map"] = {"crease_angle": o.crease_angle, "observed_share": seen["normal_map_observed_share"]}
    return out


def to_glb(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
           texture_size=DEFAULT_TEXTURE_SIZE, debug=False, verbose=True, bake_mode="fast", progress: StageProgress = None,
           cancel=None, **kwargs):
    """Textured ``trimesh.Trimesh`` of a TRELLIS result (the reference's signature; call ``.export("x.glb")``).
    Extras: ``bake_mode`` "fast" | "opt", ``progress``, ``cancel`` and the other fields of ``options.ExportOptions``
    as keywords (nviews, render_resolution, uv_time_budget_s, uv_method, steps, lambda_tv, cg_iterations,
    observation_scale, device, overlap_uv, target_faces, destination, crease_angle, normal_map). Per-stage seconds,
    face counts and the UV method used are in ``mesh.export_info`` (not saved in the file)."""
    o = ExportOptions.given(None, simplify=simplify, fill_holes=fill_holes, fill_holes_max_size=fill_holes_max_size,
                            texture_size=texture_size, debug=debug, verbose=verbose, bake_mode=bake_mode, **kwargs)
    textured = bake_textured_mesh(app_rep, mesh, o, progress=progress, cancel=cancel)
    check(cancel)
    out = textured.to_glb(o.crease_angle)
    if progress is not None:
        progress("assemble", 1, 1)
    return out


def to_obj(app_rep, mesh, path, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
           texture_size=DEFAULT_TEXTURE_SIZE, debug=False, verbose=True, bake_mode="fast", progress: StageProgress = None,
           cancel=None, **kwargs) -> str:
    """Like ``to_glb`` but writes ``path`` (.obj) with ``<stem>.mtl`` and ``<stem>.png``; returns path."""
    o = ExportOptions.given(None, simplify=simplify, fill_holes=fill_holes, fill_holes_max_size=fill_holes_max_size,
                            texture_size=texture_size, debug=debug, verbose=verbose, bake_mode=bake_mode, **kwargs)
    textured = bake_textured_mesh(app_rep, mesh, o, progress=progress, cancel=cancel)
    check(cancel)
    out = textured.save_obj(path, o.crease_angle)
    if progress is not None:
        progress("assemble", 1, 1)
    return out
