"""Spec §15.2: in how many orbit views each face owns a pixel (``face_visibility``).

Choice of views (measured on an H200, 2026-11-22)
-------------------------------------------------
The default is the reference's own camera set, 1000 views at 1024x1024, because fewer views
do not give the same result. Test shapes: four "creature" meshes (tests/test_mesh_cleanup.py:
body, head, handle, a narrow slot, a hollow cavity with a ball inside; 0.58-0.91 M faces,
29-46 k after simplify 0.95) and a 1.4 M-face bumpy sphere with an inner sphere (70 k after).
Yardstick: the reference set's own noise, i.e. the same 1000 views with the mesh turned by
0.7/1.9/3.1 degrees about z. Faces whose removal decision differs from the unturned 1000-view
run (all shapes cut away 3.4 k-20 k faces):

    views @ res    visibility time   mean |dvis|   faces decided differently
    1000 @ 1024    1.8-2.4 s         -             18-163 (turned 1000-view sets: noise floor)
     500 @ 1024    0.9-1.0 s         0.0023        56-210
     250 @ 1024    0.44-0.51 s       0.0034        93-333
     250 @ 768     0.29-0.35 s       0.0050        73-403
     250 @ 512     0.13-0.20 s       0.011-0.04    153-754
     125 @ 1024    0.22-0.29 s       0.0055        110-510

On one creature the hidden cavity is joined to the outside through the slot and its removal
hinges on the 0.04 hole-area limit (opened loop area 0.035-0.042). There the decision flips
between runs; over 16 turns of the mesh it was "remove" in 3/16 runs with 1000 views, 6/16 with
500 and 10/16 with 250: fewer views see fewer faces through narrow openings, so more faces
count as never seen and more gets cut. Lower resolution drops small faces' pixels with the same
bias. So 1000 @ 1024 stays the default, and the speed comes from rendering ~36 views per
rasteriser call (an atlas): 1.8-2.4 s on an H200 for 30-70 k faces; with 9 views per call it
took 6.9 s, as each call costs tens of milliseconds of kernel launches and syncs.
``FAST_VISIBILITY_VIEWS`` / ``FAST_VISIBILITY_RESOLUTION`` (250 @ 1024) is 4x faster and stays
within ~2-3x the noise floor on ordinary shapes, at the cost of the bias above; it is opt-in.
On a CPU every 1024^2 view costs ~0.1-0.2 s whatever the mesh, so 1000 views take minutes.

The CPU's views (``visibility_settings``, used when the caller sets no views / resolution)
------------------------------------------------------------------------------------------
On a busy 2-core CPU the 1000 views at 1024^2 took 15-30 min (0.4-6 s per view; 23 of 25 minutes
of a tiny-pipeline job). There the cost is about proportional to the pixels rasterised (plus a
per-face setup), and what a view must resolve is the mesh's faces, not a fixed pixel count: so the
CPU renders at the lowest resolution (multiple of 64, 256..1024, at most 384 with the pixel bound
below) where the small faces (10th percentile of sqrt(2 x area)) still span 4 pixels, and as many
views as 2**24 pixels in all allow (at least 100, at most 1000): 256 views at 256^2 for coarse
meshes, ~110 at 384^2 for a dense one, a few seconds either way. Ray casting per face was the other
candidate; it needs an acceleration structure we do not have and an occlusion test with a depth
tolerance that the decoder's inner sheet (a voxel or two behind the outer one) defeats, whereas
the face-id raster decides ownership exactly. Measured on this repository's CPU runner (2 cores,
busy, torch 2.13 CPU, 2026-11-22) against the 1000-view @ 1024^2 answer computed on the same CPU,
after simplify 0.95; "differ" = faces whose removal decision differs (all were extra removals):

    mesh (faces after simplify)               views @ res     time    removed (1000@1024)  differ
    realistic bunny (benchmarks/realistic_        113 @ 384   2.6 s   17607 (17594)         13
      objects.py: decoder-like two-sheet          100 @ 256   1.8 s   17619                 25
      shell, 36 550 faces)                        256 @ 256   4.2 s   17605                 11
                                                 1000 @ 256  20.0 s   17598                  6
                                                  250 @ 512   9.3 s   17599                  5
    creature (tests, n=128: 7 198 faces)          163 @ 320  23.0 s*  2750 (2750)            0
                                                  100 @ 384   3.7 s   2751                   1
                                                 1000 @ 256  32.0 s   2750                   0

The chosen settings are the first row of each mesh (* the test suite shared the 2 cores during that
run; the other rows ran after it). Both stay inside the GPU study's noise floor above (18-163 faces differ
between turned 1000-view sets); the 1000 @ 1024 reference itself took 15 min (bunny) and 33 min
(creature) on that CPU. The bias of fewer views (more faces never seen, so slightly more cut)
shows as the extra removals; 4x more views at the same resolution halves it.

Arrays are numpy float32 vertices [V,3] and int64 faces [F,3]; torch tensors are accepted too.
``progress(stage, i, n)`` is called as work advances and ``cancel`` (a callable returning True to
stop) is checked between steps through ``trellis.utils.cancel.check``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ...core.callbacks import check as _check_cancel
from .common import Progress, _report, _to_numpy


# The reference rasterises 1000 views at 1024x1024 (spec §15.2) and so do we by default: fewer
# views measurably change which hidden parts are cut (see "Choice of views" above); the speed
# comes from rendering many views per call instead. FAST_* is an opt-in 4x cheaper preset.
REFERENCE_VISIBILITY_VIEWS = 1000
REFERENCE_VISIBILITY_RESOLUTION = 1024
DEFAULT_VISIBILITY_VIEWS = REFERENCE_VISIBILITY_VIEWS
DEFAULT_VISIBILITY_RESOLUTION = REFERENCE_VISIBILITY_RESOLUTION
FAST_VISIBILITY_VIEWS = 250
FAST_VISIBILITY_RESOLUTION = 1024
# On a CPU (``visibility_settings``): all views together rasterise about this many pixels, never
# fewer than CPU_VISIBILITY_MIN_VIEWS views, at the lowest resolution (a multiple of 64, 256..1024)
# where the mesh's small faces (10th percentile of sqrt(2 x area)) still span
# CPU_PIXELS_PER_SMALL_FACE pixels. See "The CPU's views" in the module docstring.
CPU_VISIBILITY_PIXELS = 1 << 24
CPU_VISIBILITY_MIN_VIEWS = 100
CPU_PIXELS_PER_SMALL_FACE = 4.0
# Peak memory of one atlas call, measured on an H200: ~58 bytes per atlas pixel.
_BYTES_PER_ATLAS_PIXEL = 64


def _default_pixel_budget(device) -> int:
    """Atlas pixels per rasterise call: 2**21 on CPU; on an accelerator a quarter of its free
    memory at ~64 bytes per pixel, between 2**22 and 2**26 (~4 GB peak). Fewer, larger calls
    are faster (each call costs ~0.1 s of kernel launches and syncs); on an H200, 1000 views at
    1024^2 took 6.9 s with 2**24, 1.8-2.5 s with 2**26 and 1.4-1.8 s with 2**27-2**28 (8-15 GB)."""
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
    return int(min(1 << 26, max(1 << 22, free // 4 // _BYTES_PER_ATLAS_PIXEL)))


def visibility_settings(vertices, faces, device=None, radius: float = 2.0,
                        fov: float = 40.0) -> tuple:
    """(num_views, resolution) that ``face_visibility`` uses when the caller sets neither.

    On an accelerator: the reference's 1000 views at 1024^2. On a CPU, where every 1024^2 view
    costs 0.1-1 s: views at the lowest resolution (a multiple of 64 in 256..1024) at which the
    mesh's small faces (10th percentile of sqrt(2 x area)) span ``CPU_PIXELS_PER_SMALL_FACE``
    pixels at the centre of the views, and as many views as ``CPU_VISIBILITY_PIXELS`` pixels allow
    (at least ``CPU_VISIBILITY_MIN_VIEWS``, at most 1000; with the minimum count the resolution is
    lowered to stay within the pixels). Cost on a CPU is about proportional to the pixels, so the
    time is about the same whatever the mesh; the module docstring measures how close it comes to
    the reference set.
    """
    import torch

    if device is None:
        device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    if torch.device(device).type != "cpu":
        return DEFAULT_VISIBILITY_VIEWS, DEFAULT_VISIBILITY_RESOLUTION
    v, f = _to_numpy(vertices, faces)
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
                    progress: Progress = None, cancel=None, radius: float = 2.0,
                    fov: float = 40.0, near: float = 1.0, far: float = 3.0,
                    pixel_budget: Optional[int] = None) -> np.ndarray:
    """Fraction of views in which each face owns at least one pixel, float32 [F].

    Cameras follow spec §15.2: ``num_views`` views on the spherical Hammersley sequence (§14.3),
    at ``radius`` looking at the origin (up +z), field of view ``fov`` degrees, depth range
    near..far, square images of ``resolution`` pixels; both windings are drawn and the nearest
    surface owns a pixel. ``num_views`` / ``resolution`` left at None are chosen by
    ``visibility_settings`` for the device: the reference's 1000 views at 1024x1024 on an
    accelerator, fewer and smaller views on a CPU; the module docstring has the measurements behind
    both and the opt-in ``FAST_VISIBILITY_*`` preset. Progress: ("visibility", views done, views)
    after every rasterise call (about a second each on a CPU).

    Views are rendered as tiles of one atlas image per ``rasterize`` call. Each tile has a
    gutter wide enough to hold everything the view projects outside its frame, and only the
    tile's own frame is read back, so the result equals rendering every view on its own.
    ``pixel_budget`` bounds the atlas size in pixels (default: ``_default_pixel_budget``).
    ``device`` is where rasterisation runs (default: the device of a torch ``vertices``, else CPU).
    """
    import torch

    from ...renderers.cameras import hammersley_sphere_views, orbit_cameras, projection_opencv
    from ...renderers.mesh_render import rasterize

    if device is None:
        device = vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    v_np, f_np = _to_numpy(vertices, faces)
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
        pixel_budget = _default_pixel_budget(device)
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
    _report(progress, "visibility", 0, num_views)
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
        face_id, _, _ = rasterize(clip.reshape(-1, 4), batch_faces, ah, aw, cancel=cancel,
                                  with_bary=False)
        # Keep each tile's frame only, then count every (view, face) pair once.
        frame = face_id.reshape(rows, tile, cols, tile)[:, gutter:gutter + resolution, :,
                                                          gutter:gutter + resolution]
        ids = frame.reshape(-1)
        ids = ids[ids > 0] - 1
        seen = torch.zeros(k * n_faces, dtype=torch.bool, device=device)
        seen[ids] = True
        counts += seen.reshape(k, n_faces).sum(0)
        done += k
        _report(progress, "visibility", done, num_views)
    return (counts.to(torch.float64) / num_views).cpu().numpy().astype(np.float32)
