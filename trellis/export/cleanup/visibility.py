"""Spec §15.2: in how many orbit views each face owns a pixel (``face_visibility``).

The default is the reference's own camera set, 1000 views at 1024x1024: fewer or smaller views see fewer
faces through narrow openings, so more count as never seen and more gets cut. The speed comes from
rendering dozens of views per rasteriser call, as tiles of one atlas image. ``FAST_VISIBILITY_*`` is an
opt-in cheaper preset with that bias. On a CPU, where every 1024^2 view costs a large fraction of a second,
``visibility_settings`` picks the lowest resolution at which the mesh's small faces still span a few pixels
and as many views as a fixed pixel budget allows. The measurements behind both choices:
docs/benchmarks/export.md#visibility.

Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
``progress(stage, i, n)`` is called as work advances and ``cancel`` (a callable returning True to
stop) is checked between steps.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ...core.callbacks import StageProgress, check as _check_cancel
from ..arrays import report, to_numpy

__all__ = ["REFERENCE_VISIBILITY_VIEWS", "REFERENCE_VISIBILITY_RESOLUTION", "DEFAULT_VISIBILITY_VIEWS",
           "DEFAULT_VISIBILITY_RESOLUTION", "FAST_VISIBILITY_VIEWS", "FAST_VISIBILITY_RESOLUTION",
           "CPU_VISIBILITY_PIXELS", "CPU_VISIBILITY_MIN_VIEWS", "CPU_PIXELS_PER_SMALL_FACE", "default_pixel_budget",
           "visibility_settings", "face_visibility"]


# The reference's 1000 views at 1024x1024 (spec §15.2): fewer views measurably change which hidden parts are cut
# (docs/benchmarks/export.md#visibility). FAST_* is an opt-in 4x cheaper preset.
REFERENCE_VISIBILITY_VIEWS = 1000
REFERENCE_VISIBILITY_RESOLUTION = 1024
DEFAULT_VISIBILITY_VIEWS = REFERENCE_VISIBILITY_VIEWS
DEFAULT_VISIBILITY_RESOLUTION = REFERENCE_VISIBILITY_RESOLUTION
FAST_VISIBILITY_VIEWS = 250
FAST_VISIBILITY_RESOLUTION = 1024
# On a CPU (``visibility_settings``): all views together rasterise about this many pixels, never fewer than
# CPU_VISIBILITY_MIN_VIEWS views, at the lowest resolution where the mesh's small faces still span
# CPU_PIXELS_PER_SMALL_FACE pixels: within the reference set's own noise (docs/benchmarks/export.md#visibility).
CPU_VISIBILITY_PIXELS = 1 << 24
CPU_VISIBILITY_MIN_VIEWS = 100
CPU_PIXELS_PER_SMALL_FACE = 4.0
# Peak memory of one atlas call per atlas pixel, rounded up from the measured (docs/benchmarks/export.md#visibility).
_BYTES_PER_ATLAS_PIXEL = 64


def default_pixel_budget(device) -> int:
    """Atlas pixels per rasterise call: 2**21 on CPU; on an accelerator a quarter of its free
    memory at ~64 bytes per pixel, between 2**22 and 2**26 (~4 GB peak): fewer, larger calls are faster,
    each costing kernel launches and syncs (docs/benchmarks/export.md#visibility)."""
    import torch

    if device.type == "cpu":
        # Small calls: each takes about a second on a CPU, so progress moves at least that often.
        return 1 << 21
    try:
        if device.type == "cuda":
            from ...core.device import free_device_memory  # honours a per-process memory limit

            free = free_device_memory(device)
        else:
            free, _ = torch.get_device_module(device).mem_get_info(device)
    except Exception:  # backends without a memory query
        return 1 << 25
    return pixel_budget_for(free)


def pixel_budget_for(free_bytes: int) -> int:
    """Atlas pixels per rasterise call on an accelerator with `free_bytes` free to this process (under any VRAM
    budget: core.device.usable_memory): a quarter of it at ~64 bytes a pixel, between 2**22 and 2**26. Pure."""
    return int(min(1 << 26, max(1 << 22, free_bytes // 4 // _BYTES_PER_ATLAS_PIXEL)))


def visibility_settings(vertices, faces, device=None, radius: float = 2.0,
                        fov: float = 40.0) -> tuple:
    """(num_views, resolution) that ``face_visibility`` uses when the caller sets neither.

    On an accelerator: the reference's 1000 views at 1024^2. On a CPU, where every 1024^2 view
    costs a large fraction of a second: views at the lowest resolution (a multiple of 64 in 256..1024) at which the
    mesh's small faces (10th percentile of sqrt(2 x area)) span ``CPU_PIXELS_PER_SMALL_FACE``
    pixels at the centre of the views, and as many views as ``CPU_VISIBILITY_PIXELS`` pixels allow
    (at least ``CPU_VISIBILITY_MIN_VIEWS``, at most 1000; with the minimum count the resolution is
    lowered to stay within the pixels). Cost on a CPU grows with the pixels and with views x faces (every view
    sets up and scans every triangle): at the clean-up's floor of faces (``chain.VISIBILITY_MIN_FACES``) the
    per-triangle work takes more of the time than the pixels do.
    """
    import torch

    if device is None:
        device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    if torch.device(device).type != "cpu":
        return DEFAULT_VISIBILITY_VIEWS, DEFAULT_VISIBILITY_RESOLUTION
    v, f = to_numpy(vertices, faces)
    res = 256
    if len(f):
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        size = np.sqrt(np.linalg.norm(np.cross(b - a, c - a), axis=1))  # sqrt(2 x area)
        small = float(np.quantile(size, 0.1))
        frame = 2 * radius * math.tan(math.radians(fov) / 2)             # frame width at the centre
        if small > 0:
            res = CPU_PIXELS_PER_SMALL_FACE * frame / small
    cap = 64 * math.floor(math.sqrt(CPU_VISIBILITY_PIXELS / CPU_VISIBILITY_MIN_VIEWS) / 64)
    res = int(min(1024, max(256, min(cap, 64 * math.ceil(res / 64 - 1e-9)))))
    views = int(min(REFERENCE_VISIBILITY_VIEWS,
                    max(CPU_VISIBILITY_MIN_VIEWS, CPU_VISIBILITY_PIXELS // (res * res))))
    return views, res


def face_visibility(vertices, faces, num_views: Optional[int] = None,
                    resolution: Optional[int] = None, device=None,
                    progress: StageProgress = None, cancel=None, radius: float = 2.0,
                    fov: float = 40.0, near: float = 1.0, far: float = 3.0,
                    pixel_budget: Optional[int] = None) -> np.ndarray:
    """Fraction of views in which each face owns at least one pixel, float32 [F].

    Cameras follow spec §15.2: ``num_views`` views on the spherical Hammersley sequence (§14.3),
    at ``radius`` looking at the origin (up +z), field of view ``fov`` degrees, depth range
    near..far, square images of ``resolution`` pixels; both windings are drawn and the nearest
    surface owns a pixel. ``num_views`` / ``resolution`` left at None are chosen by
    ``visibility_settings`` for the device: the reference's 1000 views at 1024x1024 on an
    accelerator, fewer and smaller views on a CPU (the module docstring; ``FAST_VISIBILITY_*`` is the
    opt-in preset). StageProgress: ("visibility", views done, views)
    after every rasterise call (about a second each on a CPU).

    Views are rendered as tiles of one atlas image per rasteriser call (``raster_keys``). Each tile has a
    gutter wide enough to hold everything the view projects outside its frame, and only the
    tile's own frame is read back, so the result equals rendering every view on its own.
    ``pixel_budget`` bounds the atlas size in pixels (default: ``default_pixel_budget``).
    ``device`` is where rasterisation runs (default: the device of a torch ``vertices``, else CPU).
    """
    import torch

    from ...renderers.cameras import hammersley_sphere_views, orbit_cameras, projection_opencv
    from ...renderers.mesh_render import raster_keys

    if device is None:
        device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    v_np, f_np = to_numpy(vertices, faces)
    if num_views is None or resolution is None:
        auto_views, auto_res = visibility_settings(v_np, f_np, device, radius=radius, fov=fov)
        num_views = auto_views if num_views is None else num_views
        resolution = auto_res if resolution is None else resolution
    n_faces = len(f_np)
    if n_faces == 0 or num_views <= 0:
        return np.zeros(n_faces, dtype=np.float32)
    verts = torch.as_tensor(v_np, dtype=torch.float64, device=device)
    tris = torch.as_tensor(f_np, dtype=torch.int64, device=device)
    vh = torch.cat([verts, torch.ones_like(verts[:, :1])], -1)  # [V,4]

    yaws, pitches = hammersley_sphere_views(num_views)
    extr, intr = orbit_cameras(yaws, pitches, radius=radius, fov=fov, device=device)
    proj = projection_opencv(intr[0].double(), near, far)
    full = proj @ extr.double()  # [N,4,4] world -> clip

    # Gutter: a point inside the ball |x| <= rho seen from distance `radius` lies within
    # rho / sqrt(radius^2 - rho^2) of the optical axis (tangent), i.e. within +-m in NDC.
    rho = float(verts.norm(dim=-1).max())
    tiled = rho < radius * 0.999
    gutter = 0
    if tiled:
        m = rho / math.sqrt(radius * radius - rho * rho) / math.tan(math.radians(fov) / 2)
        gutter = int(math.ceil(max(0.0, m - 1.0) * resolution / 2)) + 1
        tiled = gutter <= resolution  # far outside the frame: one view per call is cheaper
    tile = resolution + 2 * gutter if tiled else resolution
    if pixel_budget is None:
        pixel_budget = default_pixel_budget(device)
    per_call, grid_cols = 1, 1
    if tiled:
        # Bounded by atlas pixels and by triangles (the rasteriser keeps a few hundred bytes of
        # setup per triangle: one triangle per 8 pixels of budget), rounded to a full grid.
        per_call = max(1, min(num_views, pixel_budget // (tile * tile),
                              pixel_budget // 8 // n_faces))
        grid_cols = int(math.ceil(math.sqrt(per_call)))
        per_call = (per_call // grid_cols) * grid_cols

    counts = torch.zeros(n_faces, dtype=torch.int64, device=device)
    done = 0
    report(progress, "visibility", 0, num_views)
    while done < num_views:
        _check_cancel(cancel)
        k = min(per_call, num_views - done)
        cols = min(grid_cols, k)
        rows = int(math.ceil(k / cols))
        aw, ah = cols * tile, rows * tile
        clip = torch.einsum("vj,nij->nvi", vh, full[done:done + k])  # [k,V,4]
        if k > 1 or tiled:
            # Move view t into its tile: pixel = tile origin + gutter + single-view pixel.
            t = torch.arange(k, device=device, dtype=torch.float64)
            ox = (t % cols) * tile + gutter
            oy = torch.div(t, cols, rounding_mode="floor") * tile + gutter
            w = clip[..., 3]
            x = clip[..., 0] * (resolution / aw) + w * (2 * ox[:, None] / aw - 1 + resolution / aw)
            y = clip[..., 1] * (resolution / ah) + w * (2 * oy[:, None] / ah - 1 + resolution / ah)
            clip = torch.stack([x, y, clip[..., 2], w], -1)
        offsets = (torch.arange(k, device=device) * len(v_np))[:, None, None]
        batch_faces = (tris[None] + offsets).reshape(-1, 3)
        keys = raster_keys(clip.reshape(-1, 4), batch_faces, ah, aw, cancel=cancel)
        # Keep each tile's frame only, then count every (view, face) pair once: a covered pixel's key holds its
        # pair's index in its low 32 bits, an empty pixel's (all ones there) is clamped to one spare slot past
        # them, so a single scatter marks what the views saw.
        frame = keys.reshape(rows, tile, cols, tile)[:, gutter:gutter + resolution, :, gutter:gutter + resolution]
        slot = torch.clamp_max(frame & 0xFFFFFFFF, k * n_faces)
        seen = torch.zeros(k * n_faces + 1, dtype=torch.bool, device=device)
        seen[slot.reshape(-1)] = True
        counts += seen[:-1].reshape(k, n_faces).sum(0)
        done += k
        report(progress, "visibility", done, num_views)
    return (counts.to(torch.float64) / num_views).cpu().numpy().astype(np.float32)
