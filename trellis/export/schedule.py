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
run in child processes (the decimation, xatlas) or a thread (our chart layout), and held until the bake needs
them; the views and their order are the same either way, so the texture is too. The quality and the time of
each bake mode: docs/benchmarks/export.md#texture-bake.

``progress(stage, done, total)`` is called throughout (stages: the clean-up's own ones, then "uv_unwrap",
"observe", "bake", "reobserve" (a bake done again), "inpaint" (fast mode), "normal_map" (with ``normal_map=True``),
"assemble"); ``cancel()`` returning
True raises ``trellis.core.callbacks.Cancelled`` between and inside stages.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..core.callbacks import check
from .assemble import NO_SPLIT_ANGLE
from .bake.coverage import rebake_if_unobserved
from .bake.inpaint import inpaint_texture
from .bake.least_squares import TextureAccumulator
from .bake.observations import observation_cameras, render_observations, sharpening_scale
from .bake.texture import bake_texture
from .normals import SharedSplit
from .options import export_options, mesh_arrays, observation_settings
from .textured import TexturedMesh
from .uv import unwrap as uv_unwrap

__all__ = ["HELD_VIEW_BYTES", "DEVICE_VIEW_MARGIN", "views_fit_on_device", "uv_in_child", "PREPARE_AHEAD",
           "UV_IN_CHILD", "bake_textured_mesh", "bake_uv_mesh", "to_glb", "to_obj"]

Progress = Optional[Callable[[str, int, int], None]]

# Host memory the observation views rendered ahead of their use may take (~17 bytes per pixel each).
HELD_VIEW_BYTES = 2 << 30
# The views wait on the GPU instead (no copy out and back on the export's critical path) when all of them fit and
# at least this much stays obtainable for the rest of the export, above its own peak
# (docs/benchmarks/export.md#memory).
DEVICE_VIEW_MARGIN = 4 << 30
# The "fast" bake prepares views (the mesh's raster, the pixel tests) while the UV unwrap runs when the views are
# held on the device (None); True / False: always / never (the texture is the same either way; tests).
PREPARE_AHEAD = None
# Our chart layout runs in a child process on an accelerator (None); True / False: always / never where the layout
# overlaps the views (benchmarks' A/B; the result is the same either way).
UV_IN_CHILD = None
# The files' normals split at creases in a thread while the texture is baked, then shared by every file (on); off:
# each file's writer makes its own after the bake.
SPLIT_DURING_BAKE = True


class _Clock:
    """Seconds per stage into ``info["seconds"]`` (printed with ``verbose``)."""

    def __init__(self, info: dict, verbose: bool):
        self.info, self.verbose, self.last = info, verbose, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.info["seconds"][name] = round(now - self.last, 3)
        self.last = now
        if self.verbose:
            print(f"[to_glb] {name}: {self.info['seconds'][name]:.2f} s", flush=True)


def views_fit_on_device(room_bytes: int | None, views: int, per_view_bytes: int) -> bool:
    """Whether `views` renders of `per_view_bytes` wait on the device: `room_bytes` (what this process can still
    allocate there, under any VRAM budget) holds them with DEVICE_VIEW_MARGIN to spare. Pure."""
    return room_bytes is not None and room_bytes - views * per_view_bytes >= DEVICE_VIEW_MARGIN


class _Views:
    """The observation cameras and the lazy stream of their renders. Views rendered ahead of their use wait in
    ``held``: on the device when all of them fit there with ``DEVICE_VIEW_MARGIN`` to spare, else in host memory
    (at most ``HELD_VIEW_BYTES``)."""

    def __init__(self, app_rep, bake_mode: str, device, opt: dict, info: dict, cancel):
        auto_views, auto_res = observation_settings(device, bake_mode)
        nviews = opt["nviews"] or auto_views
        self.resolution = opt["render_resolution"] or auto_res
        info["observations"] = {"views": int(nviews), "resolution": int(self.resolution)}
        self.ext, self.intr = observation_cameras(nviews, device=device)
        self.n = self.ext.shape[0]
        scale = opt["observation_scale"]
        if scale is None:
            from ..representations import Gaussian
            scale = 1.0
            if bake_mode == "fast" and isinstance(app_rep, Gaussian):
                scale = sharpening_scale(app_rep, self.resolution)
        info["observations"]["gaussian_scale"] = float(scale)
        self.stream = render_observations(app_rep, self.ext, self.intr, self.resolution, cancel=cancel,
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


def _clean(vertices, faces, simplify, fill_holes, fill_holes_max_size, device, opt, views: _Views, progress,
           cancel, info):
    """Stage 1 (numpy vertices, faces). While the decimation runs in child processes, views are rendered: during
    the caller's ``simplified`` on any device, during the pieces of a large mesh on an accelerator only (a CPU's
    cores are then busy decimating)."""
    simplified = opt["simplified"]
    overlap = opt["overlap_uv"] and (simplified is not None or device.type != "cpu")

    def while_waiting():
        if overlap and len(views.held) < views.max_held:
            views.hold_next()
        else:
            time.sleep(0.005)

    if simplify > 0 or fill_holes or opt["target_faces"] is not None:
        from .cleanup.chain import clean_mesh_for_export
        v_np, f_np = clean_mesh_for_export(vertices, faces, simplify=simplify, fill_holes=fill_holes,
                                           fill_holes_max_size=fill_holes_max_size, device=device,
                                           progress=progress, cancel=cancel, simplified=simplified,
                                           info=info.setdefault("cleanup", {}), while_waiting=while_waiting,
                                           target_faces=opt["target_faces"])
    else:
        v_np, f_np = vertices.cpu().numpy(), faces.cpu().numpy()
    info["views_rendered_during_simplify"] = len(views.held)
    if len(f_np) == 0:
        raise ValueError("to_glb: no faces left after clean-up")
    info["faces"] = int(len(f_np))
    return v_np, f_np


def uv_in_child(opt: dict, device) -> bool:
    """Whether our chart layout runs in a child process (``uv.in_child``): beside the GPU work of ``_unwrap``'s own
    thread (the views rendered and prepared; a CPU's cores are busy enough with the layout itself)."""
    wanted = torch.device(device).type != "cpu" if UV_IN_CHILD is None else UV_IN_CHILD
    return bool(opt["overlap_uv"] and opt["uv_method"] in ("auto", "geometric") and wanted)


def _unwrap(v_np, f_np, views: _Views, acc, texture_size, opt, verbose, report, cancel, info):
    """Stage 2, with more views rendered meanwhile: xatlas runs in a child process (watched by a thread that
    mostly sleeps), our chart layout in a warm child process on an accelerator (``uv_in_child``), else in a thread
    that is mostly numpy. For the "fast" bake (``acc``), views held
    on the GPU are then also prepared (everything but the UVs, which only change the faces' vertex indices) and
    freed; the accumulator rasterises the clean mesh either way, so the texture is the same whether or not a
    view was prepared ahead. Returns the unwrapped (vertices, faces, uvs) and the prepared views."""
    prepared = []
    ahead = acc is not None and (views.on_device if PREPARE_AHEAD is None else PREPARE_AHEAD)

    def prepare_next():
        color, mask, depth = views.held.pop(0)
        i = len(prepared)
        prepared.append(acc.prepare_view(color, mask, views.ext[i], views.intr[i], depth=depth, cancel=cancel))

    uv_info, uv_box, abort = {}, {}, threading.Event()
    in_child = uv_in_child(opt, views.device)

    def unwrap():
        try:
            uv_box["out"] = uv_unwrap.unwrap_uv(v_np, f_np, time_budget_s=opt["uv_time_budget_s"],
                                                progress=lambda d, t: report("uv_unwrap", d, t),
                                                cancel=lambda: abort.is_set() or (cancel is not None and cancel()),
                                                texture_size=texture_size, method=opt["uv_method"],
                                                verbose=verbose, info=uv_info, in_child=in_child)
        except BaseException as e:  # re-raised in the caller's thread
            uv_box["error"] = e

    early = rendered = len(views.held)
    if opt["overlap_uv"]:
        worker = threading.Thread(target=unwrap, name="trellis-uv-unwrap", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
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
    else:
        unwrap()
    if "error" in uv_box:
        raise uv_box["error"]
    v_np, f_np, uv_np, _ = uv_box["out"]
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


def _bake_fast(acc, prepared, views: _Views, app_rep, v_np, f_np, uv_np, texture_size, opt, device, debug,
               report, cancel, info, clock: _Clock):
    """Stages 3-4, "fast": the prepared views folded, the rest observed and folded, solved, inpainted."""
    n = views.n
    acc.set_uvs(uv_np, v_np, f_np)
    acc.fold_views(prepared, progress=lambda done, _: report("observe", done, n), cancel=cancel)   # freed as it goes
    for i, (color, mask, depth) in enumerate(views.remaining(), start=len(prepared)):
        acc.add_view(color, mask, views.ext[i], views.intr[i], depth=depth, cancel=cancel)
        report("observe", i + 1, n)
    clock.lap("observe+accumulate")
    texture, filled = acc.solve(iterations=opt["cg_iterations"], cancel=cancel,
                                progress=lambda d, t: report("bake", d, t))
    again = rebake_if_unobserved(filled, app_rep, v_np, f_np, uv_np, texture_size, views.ext, views.intr,
                                 views.resolution, info, device=device, cancel=cancel, progress=report,
                                 cg_iterations=opt["cg_iterations"])
    texture, filled = again or (texture, filled)
    check(cancel)
    report("inpaint", 0, 1)     # on the texture's device: milliseconds on a GPU, a fraction of a second on a CPU
    texture_u8 = inpaint_texture(texture, filled)
    report("inpaint", 1, 1)
    if debug:
        info["texture_before_inpaint"] = (texture.cpu().numpy() * 255).round().astype(np.uint8)
        info["observed_texels"] = filled.cpu().numpy()
    return texture_u8


def _bake_opt(views: _Views, app_rep, v_np, f_np, uv_np, texture_size, opt, device, report, cancel, info,
              clock: _Clock):
    """Stages 3-4, "opt": the views observed as 8-bit frames (as the reference keeps them), then optimised."""
    n = views.n
    colors, masks, seen = [], [], {}
    for i, (color, mask, _) in enumerate(views.remaining()):
        colors.append((color * 255).round().to(torch.uint8))
        masks.append(mask)
        report("observe", i + 1, n)
    clock.lap("observe")
    texture_u8 = bake_texture(v_np, f_np, uv_np, colors, masks, views.ext, views.intr,
                              texture_size=texture_size, mode="opt",
                              lambda_tv=opt["lambda_tv"], steps=opt["steps"],
                              progress=lambda d, t: report("bake", d, t), cancel=cancel,
                              device=device, info=seen)
    del colors, masks
    again = rebake_if_unobserved(seen["observed_texels"], app_rep, v_np, f_np, uv_np, texture_size, views.ext,
                                 views.intr, views.resolution, info, device=device, cancel=cancel, progress=report)
    if again is not None:
        texture_u8 = inpaint_texture(*again)
    return texture_u8


def _start(app_rep, bake_mode: str, kwargs: dict, progress: Progress):
    """(options, device, report) of a bake, its arguments checked."""
    opt = export_options(kwargs)
    if bake_mode not in ("fast", "opt"):
        raise ValueError(f"unknown bake_mode {bake_mode!r} (use 'fast' or 'opt')")
    device = torch.device(opt["device"]) if opt["device"] is not None else app_rep.device

    def report(stage, done, total):
        if progress is not None:
            progress(stage, done, total)
    return opt, device, report


def bake_textured_mesh(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
                       texture_size=1024, debug=False, verbose=True, bake_mode="fast",
                       progress: Progress = None, cancel=None, **kwargs) -> TexturedMesh:
    """Stages 1-4: a ``TexturedMesh`` (vertices [V,3] float32 z up, faces [F,3] int64, uvs [V,2] float32,
    texture uint8 [S,S,3], info dict with per-stage seconds, face counts, the UV method used and the share of
    the atlas observed ("observed_share", "bake_fallback": ``bake.coverage``); with ``debug`` also the texture
    before inpainting and its observed-texel mask). ``job.ExportJob`` starts the decimation earlier."""
    opt, device, report = _start(app_rep, bake_mode, kwargs, progress)
    if opt["normal_map"] and opt["crease_angle"] is None:
        raise ValueError("normal_map=True needs vertex normals (crease_angle=None writes none)")
    info = {"seconds": {}}
    clock = _Clock(info, verbose)
    check(cancel)
    vertices, faces = mesh_arrays(mesh, device)
    if faces.shape[0] == 0:
        raise ValueError("to_glb: the mesh is empty (no faces)")
    info["input_faces"] = int(faces.shape[0])
    views = _Views(app_rep, bake_mode, device, opt, info, cancel)
    if uv_in_child(opt, device):
        from .uv import in_child
        in_child.warm()                # it imports while the mesh is cleaned up

    v_np, f_np = _clean(vertices, faces, simplify, fill_holes, fill_holes_max_size, device, opt, views, progress,
                        cancel, info)
    clock.lap("cleanup")

    acc = TextureAccumulator(v_np, f_np, None, texture_size, device=device) if bake_mode == "fast" else None
    v_np, f_np, uv_np, prepared = _unwrap(v_np, f_np, views, acc, texture_size, opt, verbose, report, cancel, info)
    clock.lap("uv_unwrap")
    # the files' normals split at creases, made on the CPU while the texture is baked
    crease = opt["crease_angle"]
    split = None
    if SPLIT_DURING_BAKE and crease is not None and crease < NO_SPLIT_ANGLE:
        split = SharedSplit(v_np, f_np, crease).start()

    if bake_mode == "fast":
        texture_u8 = _bake_fast(acc, prepared, views, app_rep, v_np, f_np, uv_np, texture_size, opt, device, debug,
                                report, cancel, info, clock)
    else:
        texture_u8 = _bake_opt(views, app_rep, v_np, f_np, uv_np, texture_size, opt, device, report, cancel, info,
                               clock)
    clock.lap("bake+inpaint")
    normal_u8 = None
    if opt["normal_map"]:
        normal_u8 = _bake_normals(vertices, faces, v_np, f_np, uv_np, texture_size, views, opt, device, report,
                                  cancel, info, split)
        clock.lap("normal_map")
    out = TexturedMesh(v_np, f_np, uv_np, texture_u8, info, normal_u8)
    out.split = split
    return out


def bake_uv_mesh(app_rep, vertices, faces, uvs, texture_size=1024, bake_mode="fast", progress: Progress = None,
                 cancel=None, debug=False, verbose=False, info: dict | None = None, **kwargs) -> np.ndarray:
    """Stages 3-4 alone, for a mesh that keeps its geometry and its UVs (no clean-up, no unwrap): the uint8
    [S,S,3] texture of ``app_rep`` baked onto ``vertices`` [V,3] (in the Gaussians' frame), ``faces`` [F,3] and
    ``uvs`` [V,2] (v up) through the same views, bake, fallback and inpainting as ``bake_textured_mesh``.
    ``kwargs``: the options of ``options.EXTRA_DEFAULTS`` that concern the views and the bake (nviews,
    render_resolution, steps, lambda_tv, cg_iterations, observation_scale, device). ``info`` (a dict) gets
    "observations", "observed_share" (and "bake_fallback"), per-stage seconds in "seconds", and with ``debug``
    the texture before inpainting and its observed-texel mask. Progress stages: "observe", "bake",
    "reobserve", "inpaint"."""
    opt, device, report = _start(app_rep, bake_mode, kwargs, progress)
    if opt["normal_map"]:
        raise ValueError("bake_uv_mesh bakes no normal map: there is no denser mesh to take normals from")
    info = {} if info is None else info
    info.setdefault("seconds", {})
    clock = _Clock(info, verbose)
    check(cancel)
    v_np = np.ascontiguousarray(np.asarray(vertices, dtype=np.float32).reshape(-1, 3))
    f_np = np.ascontiguousarray(np.asarray(faces, dtype=np.int64).reshape(-1, 3))
    uv_np = np.ascontiguousarray(np.asarray(uvs, dtype=np.float32).reshape(-1, 2))
    if len(f_np) == 0 or len(uv_np) != len(v_np):
        raise ValueError(f"bake_uv_mesh: {len(f_np)} faces, {len(uv_np)} UVs for {len(v_np)} vertices")
    views = _Views(app_rep, bake_mode, device, opt, info, cancel)
    if bake_mode == "fast":
        acc = TextureAccumulator(v_np, f_np, None, texture_size, device=device)
        texture_u8 = _bake_fast(acc, [], views, app_rep, v_np, f_np, uv_np, texture_size, opt, device, debug,
                                report, cancel, info, clock)
    else:
        texture_u8 = _bake_opt(views, app_rep, v_np, f_np, uv_np, texture_size, opt, device, report, cancel, info,
                               clock)
    clock.lap("bake+inpaint")
    return texture_u8


def _bake_normals(vertices, faces, v_np, f_np, uv_np, texture_size, views: _Views, opt, device, report, cancel,
                  info, split=None):
    """Stage 4b: the dense mesh's normals baked onto the low-poly through the same views (``bake.normal_map``),
    for normals split at the export's crease angle (``split``: the files' ``SharedSplit`` of that split)."""
    from .bake.normal_map import bake_normal_map

    seen = {}
    out = bake_normal_map(vertices, faces, v_np, f_np, uv_np, texture_size, views.ext, views.intr, views.resolution,
                          crease_angle=opt["crease_angle"], device=device, cancel=cancel, progress=report,
                          cg_iterations=opt["cg_iterations"], info=seen,
                          split=None if split is None else split.for_faces(f_np, opt["crease_angle"]))
    info["normal_map"] = {"crease_angle": opt["crease_angle"], "observed_share": seen["normal_map_observed_share"]}
    return out


def to_glb(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04, texture_size=1024,
           debug=False, verbose=True, bake_mode="fast", progress: Progress = None, cancel=None, **kwargs):
    """Textured ``trimesh.Trimesh`` of a TRELLIS result (the reference's signature; call
    ``.export("x.glb")``). Extras: ``bake_mode`` "fast" | "opt", ``progress``, ``cancel`` and the
    keyword arguments of ``options.EXTRA_DEFAULTS`` (nviews, render_resolution, uv_time_budget_s,
    uv_method, steps, lambda_tv, cg_iterations, device, overlap_uv, simplified, target_faces,
    crease_angle, normal_map). Per-stage seconds, face counts and the
    UV method used are in ``mesh.export_info`` (not saved in the file)."""
    crease = export_options(kwargs)["crease_angle"]
    textured = bake_textured_mesh(app_rep, mesh, simplify, fill_holes, fill_holes_max_size, texture_size, debug,
                                  verbose, bake_mode, progress, cancel, **kwargs)
    check(cancel)
    out = textured.to_glb(crease)
    if progress is not None:
        progress("assemble", 1, 1)
    return out


def to_obj(app_rep, mesh, path, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
           texture_size=1024, debug=False, verbose=True, bake_mode="fast", progress: Progress = None,
           cancel=None, **kwargs) -> str:
    """Like ``to_glb`` but writes ``path`` (.obj) with ``<stem>.mtl`` and ``<stem>.png``; returns path."""
    crease = export_options(kwargs)["crease_angle"]
    textured = bake_textured_mesh(app_rep, mesh, simplify, fill_holes, fill_holes_max_size, texture_size, debug,
                                  verbose, bake_mode, progress, cancel, **kwargs)
    check(cancel)
    out = textured.save_obj(path, crease)
    if progress is not None:
        progress("assemble", 1, 1)
    return out
