"""Textured mesh export of a TRELLIS result: ``to_glb`` (spec §12, §15) and ``to_obj``.

Stages, in the reference's order, each in its own module:

1. clean-up (``mesh_cleanup.clean_mesh_for_export``): simplification, hidden-face removal, hole
   filling;
2. UV unwrap (``uv_unwrap.unwrap_uv``): xatlas bounded in time, our chart layout as fallback;
3. observations (``texture_bake.render_observations``): renders of the Gaussians from ``nviews``
   spherical-Hammersley cameras (radius 2, fov 40°) at ``render_resolution``² (reference: 100 at
   1024²; default here 50 at 1024² for "fast", which measured as good; on a CPU 24 at 512², see
   ``observation_settings``);
4. texture bake (``texture_bake``): "fast" (default; streaming weighted least squares, one view in
   memory at a time) or "opt" (the reference's 2500-step Adam optimisation); then inpainting. A bake that
   observed under 5 % of its atlas is done again from fainter pixels (``bake_coverage``);
5. assembly (``export.make_glb_mesh``): y up, PBR material with metallic 0 and roughness 1.

Measured on an H200 (82 k faces, 500 k Gaussians, texture 1024², PSNR of the GLB against the
Gaussians / against the known colours at 4 held-out views): fast, 100 views: 34.04 / 42.40 dB,
observe + bake 29 s; fast, 50 views (our default): 34.05 / 42.35 dB, 15 s; opt (100 views, 2500
steps): 33.91 / 40.83 dB, 39 s. The views are our pure-PyTorch Gaussian renders (0.25 s each at
1024²), so they dominate; xatlas adds up to its budget (3.7 s at 20 k faces on that host).

``progress(stage, done, total)`` is called throughout (stages: the clean-up's own ones, then
"uv_unwrap", "observe", "bake", "reobserve" (a bake done again, ``bake_coverage``), "inpaint" (fast mode),
"assemble"); ``cancel()`` returning True raises
``trellis.utils.cancel.Cancelled`` between and inside stages.
"""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..core.callbacks import check
from .export.normals import DEFAULT_CREASE_ANGLE

__all__ = ["to_glb", "to_obj", "bake_textured_mesh", "observation_settings"]

Progress = Optional[Callable[[str, int, int], None]]

# Host memory the observation views rendered ahead of their use may take (~17 bytes per pixel each).
_HELD_VIEW_BYTES = 2 << 30
# The views wait on the GPU instead (no copy out and back, both synchronous, on the export's critical path) when
# all of them fit and at least this much would stay obtainable for the rest of the export (its own peak on the
# realistic objects: ~3.5 GiB with the Gaussians and the decoder mesh; docs/BENCHMARKS.md, fifteenth session).
_DEVICE_VIEW_MARGIN = 4 << 30
# The "fast" bake prepares views (the mesh's raster, the pixel tests) while the UV unwrap runs when the views are
# held on the device (None); True / False: always / never (the texture is the same either way; tests).
PREPARE_AHEAD = None

# Our extra keyword arguments (the reference's to_glb has none) and their defaults.
_EXTRA_DEFAULTS = dict(
    nviews=None,             # observation views; None: by device (observation_settings)
    render_resolution=None,  # observation size; None: by device (reference: 1024)
    uv_time_budget_s=10.0,   # xatlas budget before the chart-layout fallback
    uv_method="auto",        # "auto" | "xatlas" | "geometric" | "charts" (uv_unwrap.unwrap_uv)
    steps=2500,              # "opt" bake steps (reference: 2500)
    lambda_tv=0.01,          # "opt" TV weight (reference: 0.01)
    cg_iterations=30,        # "fast" bake solver iterations
    observation_scale=None,  # Gaussians' scale factor in the bake's renders; None: for "fast"
                             # observations.sharpening_scale, for "opt" 1 (the reference's renders)
    device=None,             # default: the device of the Gaussians
    overlap_uv=True,         # render observations while the decimation / xatlas run (same result; False: in turn)
    simplified=None,         # a BackgroundSimplify of this mesh started earlier with export.cleanup.first_reduction
    target_faces=None,       # faces in the file (instead of the fraction kept, 1 - simplify)
    crease_angle=DEFAULT_CREASE_ANGLE,  # vertex normals split at edges sharper than this (degrees); None: none
)


def _mesh_arrays(mesh, device):
    if isinstance(mesh, (tuple, list)):
        v, f = mesh[0], mesh[1]
    elif isinstance(mesh, dict):
        v, f = mesh["vertices"], mesh["faces"]
    else:
        v, f = mesh.vertices, mesh.faces
    v = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).to(device, torch.float32)
    f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f).to(device, torch.int64)
    return v.reshape(-1, 3), f.reshape(-1, 3)


# Observation views when the caller does not choose: (views for "fast", for "opt", resolution).
# A CPU renders a 1024^2 view of the Gaussians in ~0.2-1 s and rasterises the mesh for it in as
# long again, so there fewer and smaller views are used (docs/BENCHMARKS.md, "CPU: the tiny
# pipeline's full job").
GPU_OBSERVATIONS = (50, 100, 1024)
CPU_OBSERVATIONS = (24, 48, 512)


def observation_settings(device, bake_mode: str = "fast") -> tuple:
    """(nviews, render_resolution) ``to_glb`` uses on ``device`` when the caller sets neither:
    50 ("fast") / 100 ("opt", the reference) views at 1024^2 on an accelerator, 24 / 48 at 512^2
    on a CPU."""
    fast, opt, res = CPU_OBSERVATIONS if torch.device(device).type == "cpu" else GPU_OBSERVATIONS
    return (fast if bake_mode == "fast" else opt), res


def _options(kwargs):
    unknown = set(kwargs) - set(_EXTRA_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; "
                        f"known extras: {sorted(_EXTRA_DEFAULTS)}")
    return {**_EXTRA_DEFAULTS, **kwargs}


def bake_textured_mesh(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
                       texture_size=1024, debug=False, verbose=True, bake_mode="fast",
                       progress: Progress = None, cancel=None, **kwargs):
    """Stages 1-4: returns (vertices [V,3] float32 z up, faces [F,3] int64, uvs [V,2] float32,
    texture uint8 [S,S,3], info dict with per-stage seconds, face counts, the UV method used and the share of
    the atlas observed ("observed_share", "bake_fallback": ``bake_coverage``); with ``debug`` also the texture
    before inpainting and its observed-texel mask)."""
    from .export import texture_bake as tb
    from .export.bake_coverage import rebake_if_unobserved
    from .export.uv_unwrap import unwrap_uv

    opt = _options(kwargs)
    if bake_mode not in ("fast", "opt"):
        raise ValueError(f"unknown bake_mode {bake_mode!r} (use 'fast' or 'opt')")
    device = torch.device(opt["device"]) if opt["device"] is not None else app_rep.device
    info = {"seconds": {}}
    clock = [time.perf_counter()]

    def report(stage, done, total):
        if progress is not None:
            progress(stage, done, total)

    def lap(name):
        now = time.perf_counter()
        info["seconds"][name] = round(now - clock[0], 3)
        clock[0] = now
        if verbose:
            print(f"[to_glb] {name}: {info['seconds'][name]:.2f} s", flush=True)

    check(cancel)
    vertices, faces = _mesh_arrays(mesh, device)
    if faces.shape[0] == 0:
        raise ValueError("to_glb: the mesh is empty (no faces)")
    info["input_faces"] = int(faces.shape[0])

    # Observation cameras and the (lazy) stream of their renders: they need neither the clean mesh nor
    # the UVs, so views are rendered while the CPU-bound stages run in child processes (the decimation,
    # xatlas) and wait on the GPU when they all fit there with room to spare (``_DEVICE_VIEW_MARGIN``), else in
    # host memory (at most ``_HELD_VIEW_BYTES``); the views and their order are the
    # same either way, so the bake is too (tests/test_export.py).
    auto_views, auto_res = observation_settings(device, bake_mode)
    nviews = opt["nviews"] or auto_views
    render_resolution = opt["render_resolution"] or auto_res
    info["observations"] = {"views": int(nviews), "resolution": int(render_resolution)}
    ext, intr = tb.observation_cameras(nviews, device=device)
    n = ext.shape[0]
    scale = opt["observation_scale"]
    if scale is None:
        from ..representations import Gaussian
        scale = 1.0
        if bake_mode == "fast" and isinstance(app_rep, Gaussian):
            scale = tb.sharpening_scale(app_rep, render_resolution)
    info["observations"]["gaussian_scale"] = float(scale)
    views = tb.render_observations(app_rep, ext, intr, render_resolution, cancel=cancel, gaussian_scale=scale)
    per_view = 17 * int(render_resolution) ** 2
    max_held = min(n, max(1, _HELD_VIEW_BYTES // per_view))
    hold_on_device = False
    if device.type == "cuda":
        from ..core.device import obtainable_device_memory
        room = obtainable_device_memory(device)
        if room is not None and room - n * per_view >= _DEVICE_VIEW_MARGIN:
            hold_on_device, max_held = True, n
    info["observations"]["held_on"] = "device" if hold_on_device else "host"
    held = []

    def hold_next():
        color, mask, depth = next(views)
        held.append((color, mask, depth) if hold_on_device else (color.cpu(), mask.cpu(), depth.cpu()))

    # 1. clean-up. While the decimation runs in child processes, views are rendered: during the caller's
    # ``simplified`` on any device, during the pieces of a large mesh on an accelerator only (a CPU's
    # cores are then busy decimating).
    simplified = opt["simplified"]
    overlap = opt["overlap_uv"] and (simplified is not None or device.type != "cpu")

    def while_waiting():
        if overlap and len(held) < max_held:
            hold_next()
        else:
            time.sleep(0.005)

    if simplify > 0 or fill_holes or opt["target_faces"] is not None:
        from .export.cleanup import clean_mesh_for_export
        v_np, f_np = clean_mesh_for_export(vertices, faces, simplify=simplify, fill_holes=fill_holes,
                                           fill_holes_max_size=fill_holes_max_size, device=device,
                                           progress=progress, cancel=cancel, simplified=simplified,
                                           info=info.setdefault("cleanup", {}), while_waiting=while_waiting,
                                           target_faces=opt["target_faces"])
    else:
        v_np, f_np = vertices.cpu().numpy(), faces.cpu().numpy()
    info["views_rendered_during_simplify"] = len(held)
    if len(f_np) == 0:
        raise ValueError("to_glb: no faces left after clean-up")
    info["faces"] = int(len(f_np))
    lap("cleanup")

    # 2-3. UV unwrap and observations. xatlas runs in a child process (watched by a thread that mostly
    # sleeps), our chart layout in a thread that is mostly numpy, so more views are rendered meanwhile;
    # for the "fast" bake, views held on the GPU are then also prepared (the mesh's raster of each view and
    # the pixel tests: everything but the UVs, which only change the faces' vertex indices) and freed. The
    # accumulator rasterises the clean mesh either way, so the texture is the same whether or not a view was
    # prepared ahead (tests/test_export.py).
    acc = tb.TextureAccumulator(v_np, f_np, None, texture_size, device=device) if bake_mode == "fast" else None
    prepared = []
    ahead = acc is not None and (hold_on_device if PREPARE_AHEAD is None else PREPARE_AHEAD)

    def prepare_next():
        color, mask, depth = held.pop(0)
        i = len(prepared)
        prepared.append(acc.prepare_view(color, mask, ext[i], intr[i], depth=depth, cancel=cancel))

    uv_info, uv_box, abort = {}, {}, threading.Event()

    def unwrap():
        try:
            uv_box["out"] = unwrap_uv(v_np, f_np, time_budget_s=opt["uv_time_budget_s"],
                                      progress=lambda d, t: report("uv_unwrap", d, t),
                                      cancel=lambda: abort.is_set() or (cancel is not None and cancel()),
                                      texture_size=texture_size, method=opt["uv_method"], verbose=verbose,
                                      info=uv_info)
        except BaseException as e:  # re-raised in the caller's thread
            uv_box["error"] = e

    early = rendered = len(held)
    if opt["overlap_uv"]:
        worker = threading.Thread(target=unwrap, name="trellis-uv-unwrap", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                if rendered < n and len(held) + len(prepared) < max_held:
                    hold_next()
                    rendered += 1
                elif ahead and held:
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
    info["vertices"] = int(len(v_np))
    info["views_rendered_during_uv"] = rendered - early
    info["observations"]["prepared_during_uv"] = len(prepared)
    lap("uv_unwrap")
    views = itertools.chain(((c.to(device), m.to(device), d.to(device)) for c, m, d in held), views)

    # 3-4. observations and bake
    if bake_mode == "fast":
        acc.set_uvs(uv_np, v_np, f_np)
        for i, p in enumerate(prepared):
            acc.fold_view(p)
            prepared[i] = None                 # freed as it goes
            report("observe", i + 1, n)
        for i, (color, mask, depth) in enumerate(views, start=len(prepared)):
            acc.add_view(color, mask, ext[i], intr[i], depth=depth, cancel=cancel)
            report("observe", i + 1, n)
        lap("observe+accumulate")
        texture, filled = acc.solve(iterations=opt["cg_iterations"], cancel=cancel,
                                    progress=lambda d, t: report("bake", d, t))
        again = rebake_if_unobserved(filled, app_rep, v_np, f_np, uv_np, texture_size, ext, intr, render_resolution,
                                     info, device=device, cancel=cancel, progress=report,
                                     cg_iterations=opt["cg_iterations"])
        texture, filled = again or (texture, filled)
        report("inpaint", 0, 1)     # on the texture's device: milliseconds on a GPU, ~0.3 s for 1024² on a CPU core
        texture_u8 = tb.inpaint_texture(texture, filled)
        report("inpaint", 1, 1)
        if debug:
            info["texture_before_inpaint"] = (texture.cpu().numpy() * 255).round().astype(np.uint8)
            info["observed_texels"] = filled.cpu().numpy()
    else:
        colors, masks, seen = [], [], {}
        for i, (color, mask, _) in enumerate(views):
            colors.append((color * 255).round().to(torch.uint8))  # the reference keeps 8-bit frames
            masks.append(mask)
            report("observe", i + 1, n)
        lap("observe")
        texture_u8 = tb.bake_texture(v_np, f_np, uv_np, colors, masks, ext, intr,
                                     texture_size=texture_size, mode="opt",
                                     lambda_tv=opt["lambda_tv"], steps=opt["steps"],
                                     progress=lambda d, t: report("bake", d, t), cancel=cancel,
                                     device=device, info=seen)
        del colors, masks
        again = rebake_if_unobserved(seen["observed_texels"], app_rep, v_np, f_np, uv_np, texture_size, ext, intr,
                                     render_resolution, info, device=device, cancel=cancel, progress=report)
        if again is not None:
            texture_u8 = tb.inpaint_texture(*again)
    lap("bake+inpaint")
    return v_np, f_np, uv_np, texture_u8, info


def to_glb(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04, texture_size=1024,
           debug=False, verbose=True, bake_mode="fast", progress: Progress = None, cancel=None, **kwargs):
    """Textured ``trimesh.Trimesh`` of a TRELLIS result (the reference's signature; call
    ``.export("x.glb")``). Extras: ``bake_mode`` "fast" | "opt", ``progress``, ``cancel`` and the
    keyword arguments of ``_EXTRA_DEFAULTS`` (nviews, render_resolution, uv_time_budget_s,
    uv_method, steps, lambda_tv, cg_iterations, device, overlap_uv, simplified, target_faces,
    crease_angle). Per-stage seconds, face counts and the
    UV method used are in ``mesh.export_info`` (not saved in the file)."""
    from .export import make_glb_mesh
    crease = _options(kwargs)["crease_angle"]
    v, f, uv, tex, info = bake_textured_mesh(app_rep, mesh, simplify, fill_holes, fill_holes_max_size,
                                             texture_size, debug, verbose, bake_mode, progress, cancel,
                                             **kwargs)
    check(cancel)
    out = make_glb_mesh(v, f, uv, tex, crease_angle=crease)
    if progress is not None:
        progress("assemble", 1, 1)
    # An attribute, not mesh.metadata: trimesh writes metadata into the file's "extras".
    out.export_info = info
    return out


def to_obj(app_rep, mesh, path, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04,
           texture_size=1024, debug=False, verbose=True, bake_mode="fast", progress: Progress = None,
           cancel=None, **kwargs) -> str:
    """Like ``to_glb`` but writes ``path`` (.obj) with ``<stem>.mtl`` and ``<stem>.png``; returns path."""
    from .export import save_obj
    crease = _options(kwargs)["crease_angle"]
    v, f, uv, tex, _ = bake_textured_mesh(app_rep, mesh, simplify, fill_holes, fill_holes_max_size,
                                          texture_size, debug, verbose, bake_mode, progress, cancel,
                                          **kwargs)
    check(cancel)
    out = save_obj(v, f, uv, tex, path, crease_angle=crease)
    if progress is not None:
        progress("assemble", 1, 1)
    return out
