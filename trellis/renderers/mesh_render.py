"""Exact triangle rasteriser in pure PyTorch (CPU and GPU), written from first principles.

Used for the normal-map video (spec §14.2), face visibility for hole filling (§15.2) and texture
baking (§15.5). Everything is vectorised: the candidate rows of all triangles are flattened into one
list, each row's covered pixels are found as one span by exact integer arithmetic on the edge
functions, the spans are flattened into fragments (covered pixels) and visibility is resolved with a
scatter-min of a packed (depth, face index) int64 key (``raster_keys_torch``; a Triton or NVRTC kernel with
bit-identical keys runs instead where ``trellis.fastpaths`` allows).
A second pass computes float64 barycentrics and depth for the winning face of each pixel only.
``render_mesh`` (one view as mask / depth / normal / attribute images) is in mesh_view.py and is
importable from here too.

Conventions (fixed here, relied on by the callers and the tests)
------------------------------------------------------------------
* Input: homogeneous clip coordinates [V,4] (x, y, z, w). Only w is used for depth; z is ignored,
  so the near/far planes of the projection do not clip anything (see "Limits" below).
* Screen mapping: NDC = clip.xy / w. Pixel units: x_pix = (x_ndc + 1) * W / 2, so NDC x = -1 is the
  left edge of column 0 and +1 the right edge of column W-1. Image row 0 is the top row.
  - ``ndc_y_up=False`` (default): y_pix = (y_ndc + 1) * H / 2, i.e. NDC y = -1 is the TOP edge.
    Pair this with ``cameras.projection_opencv`` (OpenCV camera, y down): it yields images with
    row 0 = top and no flip. (This is also the memory order of a y=-1-first raster buffer.)
  - ``ndc_y_up=True``: y_pix = (1 - y_ndc) * H / 2, i.e. NDC y = -1 is the BOTTOM edge. Pair this
    with an OpenGL view/projection (view = OpenCV extrinsics with rows y, z negated, OpenGL
    perspective from intrinsics, spec §14.1): again row 0 = top and no flip.
* Pixel (i, j) (row i, column j) is sampled at its centre (j + 0.5, i + 0.5) in pixel units.
* Coverage is decided exactly: vertex screen positions are snapped to a fixed-point grid of
  1/256 pixel (round half to even, computed in float64 from the clip coordinates) and the three edge
  functions are evaluated in int64, so the result does not depend on the device or chunking.
* Fill rule: a pixel centre lying exactly on an edge (or vertex) belongs to the triangle that
  contains the point displaced by an infinitesimal (-eps, +eps^2) in pixel units (i.e. "just to the
  left, then just below" in image order). This is simulation-of-simplicity for the sample point:
  two triangles sharing an edge never both own, or both miss, a pixel on it, and a fan around a
  shared vertex owns a centre at the vertex exactly once, whatever the winding of each triangle.
* Both windings are rasterised (no back-face culling).
* Depth test: nearest view depth wins (view depth = the clip w, i.e. the camera-space z of an
  OpenCV camera, or -z of an OpenGL one). The test key is the view depth from the unsnapped
  vertices (1 / the affine inverse-depth plane, whose float32 coefficients are evaluated in float64,
  then rounded to float32), packed with the face index, so exact ties go to the lower face id.
* Outputs: ``face_id`` [H,W] int64, 0 = empty, f + 1 for face f; ``bary`` [H,W,3] float32
  perspective-correct barycentrics of the face's vertices 0, 1, 2 (sum 1, evaluated in float64 from
  the unsnapped vertices at the pixel centre; a pixel owned through the fill rule or snapping may
  have a weight slightly below 0); ``depth`` [H,W] float32 view depth (perspective correct), 0 where
  empty.

Limits (documented, not clipped): triangles with a vertex at w <= 0 (on/behind the camera plane), a
non-finite coordinate or a vertex farther than 2**21 pixels off screen are skipped, and z is not
clipped against near/far. Every TRELLIS use keeps the mesh in front of the camera and inside the
depth range (camera radius 2, object inside [-0.5, 0.5]^3, near <= 1, far >= 3).
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import fastpaths
from ..core.callbacks import check as _check_cancel

__all__ = ["rasterize", "raster_keys", "EMPTY_KEY", "triangle_setup_torch", "triangle_setup_buffers",
           "raster_keys_torch", "candidate_tiles", "interpolate", "bary_derivatives",
           "render_mesh",  # noqa: F822 (render_mesh: __getattr__ below)
           "SUBPIXEL_BITS", "GUARD"]

SUBPIXEL_BITS = 8
_SUB = 1 << SUBPIXEL_BITS
_HALF = _SUB // 2
GUARD = 1 << 29  # max |fixed-point coordinate|; keeps every edge-function product below 2**62
_INT64_MAX = torch.iinfo(torch.int64).max
EMPTY_KEY = _INT64_MAX          # ``raster_keys`` of a pixel no triangle covers
# Faces set up at once by the PyTorch set-up: a fraction of a second of a CPU's work between two cancel checks, and
# big enough that a GPU runs each chunk's kernels at full width.
SETUP_CHUNK_FACES = 1 << 16


def _default_budget(device: torch.device) -> int:
    return (1 << 22) if device.type == "cpu" else (1 << 24)


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a [N,2] table of 8-byte elements, one column at a time: on CUDA, torch's
    gather of 16-byte rows is many times slower than two gathers of 8-byte ones
    (docs/benchmarks/kernels.md#triangle-raster)."""
    return torch.stack([table[:, c].contiguous()[index] for c in range(table.shape[1])], -1)


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for 1-D tensors; ``index_select`` is ~3x faster than advanced indexing on CPU, and for int64
    values on a CPU ``gather`` is about twice as fast again (for floats it is the slower one)."""
    if values.dtype == torch.int64 and values.device.type == "cpu":
        return torch.gather(values, 0, index)
    return torch.index_select(values, 0, index)


def _screen_coords(vertices_clip: torch.Tensor, height: int, width: int, ndc_y_up: bool):
    """float64 pixel coordinates [V,2], w [V] and per-vertex validity."""
    v = vertices_clip.to(torch.float64)
    w = v[:, 3]
    x = (v[:, 0] / w + 1) * (width * 0.5)
    if ndc_y_up:
        y = (1 - v[:, 1] / w) * (height * 0.5)
    else:
        y = (v[:, 1] / w + 1) * (height * 0.5)
    xy = torch.stack([x, y], -1)
    valid = (w > 0) & torch.isfinite(xy).all(-1) & (xy.abs() * _SUB < GUARD).all(-1)
    return xy, w, valid


def triangle_setup_torch(vertices_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                         ndc_y_up: bool, cancel=None):
    """Per-triangle integer edge equations, bounding boxes and the float depth plane, in PyTorch (the twin of the
    ``mesh_setup`` fast kernel, bit-identical): (coefs [F,3,3] int64: E'_k(dj, di) = A*dj + B*di + E0 at the
    candidate (j0 + dj, i0 + di), E0 zero for a skipped triangle; box [F,4] int64 (j0, i0, bw, bh); count [F] int64
    candidates, 0 for a skipped triangle; plane [F,3] float32 inverse depth g0 + gx*dj + gy*di). coefs, box and plane
    are views of storage by column (each [:, k] contiguous), not contiguous themselves. The faces are set up
    ``SETUP_CHUNK_FACES`` at a time (each triangle's numbers are its own), ``cancel`` checked before each chunk."""
    xy, w, vvalid = _screen_coords(vertices_clip, height, width, ndc_y_up)
    fixed = torch.where(vvalid[:, None], torch.round(xy * _SUB), torch.zeros_like(xy)).long()
    # One contiguous column per coordinate, and outputs stored by column: strided [F,3,2] slices, and the raster's
    # copies of strided coefficient columns, each cost a pass over scattered memory on a CPU.
    columns = (fixed[:, 0].contiguous(), fixed[:, 1].contiguous(), xy[:, 0].contiguous(), xy[:, 1].contiguous(), w,
               vvalid)
    n = faces.shape[0]
    coefs = torch.empty(3, 3, n, dtype=torch.int64, device=fixed.device)      # [3,3,F], seen as [F,3,3]
    box = torch.empty(4, n, dtype=torch.int64, device=fixed.device)
    count = torch.empty(n, dtype=torch.int64, device=fixed.device)
    plane = torch.empty(3, n, dtype=torch.float32, device=fixed.device)
    for s in range(0, n, SETUP_CHUNK_FACES):
        _check_cancel(cancel)
        e = min(n, s + SETUP_CHUNK_FACES)
        _setup_faces(columns, faces[s:e], height, width, coefs[:, :, s:e], box[:, s:e], count[s:e], plane[:, s:e])
    return coefs.permute(2, 0, 1), box.T, count, plane.T


def _setup_faces(columns, faces, height: int, width: int, coefs, box, count, plane) -> None:
    """``triangle_setup_torch`` of some faces, written into its by-column outputs' slices for them."""
    fx_all, fy_all, x_all, y_all, w, vvalid = columns
    corner = [faces[:, k].contiguous() for k in range(3)]
    fx = [_take(fx_all, c) for c in corner]  # int64 fixed point
    fy = [_take(fy_all, c) for c in corner]
    valid = _take(vvalid, corner[0]) & _take(vvalid, corner[1]) & _take(vvalid, corner[2])
    area = (fx[1] - fx[0]) * (fy[2] - fy[0]) - (fy[1] - fy[0]) * (fx[2] - fx[0])
    valid &= area != 0
    ccw = area > 0
    s = torch.where(ccw, 1, -1)

    j0 = (-((_HALF - torch.minimum(torch.minimum(fx[0], fx[1]), fx[2])) // _SUB)).clamp_(min=0)
    j1 = ((torch.maximum(torch.maximum(fx[0], fx[1]), fx[2]) - _HALF) // _SUB).clamp_(max=width - 1)
    i0 = (-((_HALF - torch.minimum(torch.minimum(fy[0], fy[1]), fy[2])) // _SUB)).clamp_(min=0)
    i1 = ((torch.maximum(torch.maximum(fy[0], fy[1]), fy[2]) - _HALF) // _SUB).clamp_(max=height - 1)
    bw = (j1 - j0 + 1).clamp_(min=0)
    bh = (i1 - i0 + 1).clamp_(min=0)
    count.copy_(torch.where(valid, bw * bh, 0))

    # Edge k is opposite vertex k: from a = v[k+1] to b = v[k+2]. With s folding the winding in,
    # E'_k(p) = s * cross(b - a, p - a) + tie_k, inside iff E'_k > 0 for k = 0, 1, 2 (integers).
    # At pixel centres, in pixel indices (p = SUB * idx + HALF): E'_k(j, i) = A*j + B*i + C, re-anchored at the first
    # candidate centre: E'_k(j0 + dj, i0 + di) = A*dj + B*di + E0.
    for k in range(3):
        ax, ay, bx, by = fx[(k + 1) % 3], fy[(k + 1) % 3], fx[(k + 2) % 3], fy[(k + 2) % 3]
        dx, dy = bx - ax, by - ay
        tie = (((dy > 0) | ((dy == 0) & (dx > 0))) == ccw).long()   # the edge owns its centres: (dy, dx) > 0
        a_, b_ = -s * dy, s * dx
        c = (s * (dy * ax - dx * ay)).add_(tie).add_((a_ + b_) * _HALF)
        a_.mul_(_SUB)
        b_.mul_(_SUB)
        coefs[k, 0], coefs[k, 1] = a_, b_
        coefs[k, 2] = torch.where(valid, (a_ * j0).add_(b_ * i0).add_(c), 0)

    # Inverse view depth is affine in screen space: 1/w(p) = sum_k l_k(p) / w_k. Plane from the
    # unsnapped float64 vertices, anchored at the first candidate pixel centre (j0, i0).
    px = [_take(x_all, c) for c in corner]
    py = [_take(y_all, c) for c in corner]
    farea = (px[1] - px[0]) * (py[2] - py[0]) - (py[1] - py[0]) * (px[2] - px[0])
    farea = torch.where(farea == 0, torch.ones_like(farea), farea)
    ox = j0.to(torch.float64) + 0.5
    oy = i0.to(torch.float64) + 0.5
    g0 = torch.zeros_like(ox)
    gx = torch.zeros_like(ox)
    gy = torch.zeros_like(ox)
    for k in range(3):
        ax, ay, bx, by = px[(k + 1) % 3], py[(k + 1) % 3], px[(k + 2) % 3], py[(k + 2) % 3]
        dx, dy = bx - ax, by - ay
        scale = 1.0 / (farea * _take(w, corner[k]))
        g0 += (dx * (oy - ay) - dy * (ox - ax)) * scale
        gx += -dy * scale
        gy += dx * scale
    box.copy_(torch.stack([j0, i0, bw, bh]))
    plane.copy_(torch.stack([g0, gx, gy]).to(torch.float32))


def triangle_setup_buffers(vertices_clip: torch.Tensor, faces: torch.Tensor) -> tuple:
    """What a ``mesh_setup`` kernel reads and fills: (vertices_clip as contiguous float64, as the twin's first step
    makes them; faces as contiguous int64 on their device; empty (coefs [F,3,3] int64, box [F,4] int64, count [F]
    int64, plane [F,3] float32), the arrays ``triangle_setup_torch`` returns)."""
    clip = vertices_clip.to(torch.float64).contiguous()
    f = faces.to(device=clip.device, dtype=torch.int64).contiguous()
    n, i64 = f.shape[0], dict(dtype=torch.int64, device=clip.device)
    out = (torch.empty(n, 3, 3, **i64), torch.empty(n, 4, **i64), torch.empty(n, **i64),
           torch.empty(n, 3, dtype=torch.float32, device=clip.device))
    return clip, f, out


def rasterize(vertices_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int,
              cancel=None, ndc_y_up: bool = False, chunk_budget: Optional[int] = None,
              with_bary: bool = True):
    """Rasterise triangles given in homogeneous clip coordinates.

    vertices_clip [V,4] float, faces [F,3] int. Returns (face_id [H,W] int64 with 0 = empty and
    f + 1 for face f, bary [H,W,3] float32 perspective-correct, depth [H,W] float32 view depth w,
    0 where empty). See the module docstring for every convention. ``cancel`` (a callable returning
    True to stop) is checked between chunks and raises ``trellis.core.callbacks.Cancelled``.
    ``chunk_budget`` bounds the number of covered pixels processed at once by the PyTorch path
    (default 2**22 on CPU, 2**24 on other devices; see ``raster_keys_torch`` for the memory). ``with_bary=False``
    skips the barycentric/depth pass and returns (face_id, None, None) (visibility only needs
    face ids).
    """
    device = vertices_clip.device
    faces = faces.to(device=device, dtype=torch.int64).reshape(-1, 3)
    hw = height * width
    keys = raster_keys(vertices_clip, faces, height, width, cancel=cancel, ndc_y_up=ndc_y_up,
                       chunk_budget=chunk_budget)
    covered = keys != _INT64_MAX
    face_idx = (keys & 0xFFFFFFFF)
    face_id = torch.where(covered, face_idx + 1, torch.zeros_like(face_idx)).reshape(height, width)
    if not with_bary:
        return face_id, None, None
    bary = torch.zeros(hw, 3, dtype=torch.float32, device=device)
    depth = torch.zeros(hw, dtype=torch.float32, device=device)
    pix = torch.nonzero(covered)[:, 0]
    if pix.numel() > 0:
        b, d, _ = _pixel_bary(vertices_clip, faces, face_idx[pix], pix, height, width, ndc_y_up,
                              with_derivatives=False)
        bary[pix] = b.to(torch.float32)
        depth[pix] = d.to(torch.float32)
    return face_id, bary.reshape(height, width, 3), depth.reshape(height, width)


def raster_keys(vertices_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int, cancel=None,
                ndc_y_up: bool = False, chunk_budget: Optional[int] = None) -> torch.Tensor:
    """``rasterize``'s coverage and depth test alone: flat int64 [H*W] keys, per pixel (depth bits << 32 | face) of
    the nearest triangle covering it (``face`` 0-based), ``EMPTY_KEY`` where none does. For callers that need only
    which face owns a pixel (the visibility counts), without the passes that make ``face_id``."""
    device = vertices_clip.device
    faces = faces.to(device=device, dtype=torch.int64).reshape(-1, 3)
    if faces.shape[0] >= (1 << 31):
        raise ValueError("too many faces for the packed depth key")
    hw = height * width
    keys = torch.full((hw,), _INT64_MAX, dtype=torch.int64, device=device)
    _check_cancel(cancel)
    if faces.shape[0] > 0 and hw > 0:
        # The set-up: one fused kernel where `fastpaths` allows (bit-identical), else its twin.
        if device.type == "cpu":     # no fast kernel there: the twin, which checks cancel between chunks of faces
            coefs, box, count, plane = triangle_setup_torch(vertices_clip, faces, height, width, ndc_y_up, cancel)
        else:
            coefs, box, count, plane = fastpaths.dispatch("mesh_setup", device, triangle_setup_torch, vertices_clip,
                                                          faces, height, width, ndc_y_up)
        # The coverage + depth-test pass: a fast kernel where `fastpaths` allows (bit-identical keys),
        # else its twin `raster_keys_torch`. A kernel that fails mid-way leaves partial keys: reset them.
        fastpaths.dispatch("mesh_raster", device, raster_keys_torch, coefs, box, count, plane, keys, width,
                           cancel=cancel, budget=chunk_budget,
                           on_failure=lambda: keys.fill_(_INT64_MAX))
        _check_cancel(cancel)
    return keys


def candidate_tiles(count: torch.Tensor, block: int):
    """Work items of the rasteriser's fast kernels: (triangle, tile of ``block`` consecutive candidates
    of its box in row-major order) for every triangle with candidates. Returns (item_tri int32,
    item_tile int32) or None when there is nothing to draw."""
    ntiles = torch.div(count + (block - 1), block, rounding_mode="floor")
    total = int(ntiles.sum())
    if total == 0:
        return None
    if total >= (1 << 31):
        raise ValueError("too many candidate tiles for one launch")
    tri = torch.arange(count.shape[0], device=count.device, dtype=torch.int32)
    item_tri = torch.repeat_interleave(tri, ntiles, output_size=total)
    first = torch.cumsum(ntiles, 0) - ntiles
    item_tile = (torch.arange(total, device=count.device, dtype=torch.int64) - first[item_tri.long()]).to(torch.int32)
    return item_tri, item_tile


def raster_keys_torch(coefs: torch.Tensor, box: torch.Tensor, count: torch.Tensor, plane: torch.Tensor,
                      keys: torch.Tensor, width: int, cancel=None, budget: Optional[int] = None) -> None:
    """The coverage + depth-test pass in PyTorch (the twin of the ``mesh_raster`` fast kernel).

    Merges the packed (depth bits << 32 | face) key of every covered candidate pixel into ``keys`` (flat
    int64 [H*W], in place) with a scatter-min. coefs [F,3,3] int64, box [F,4] int64 (j0, i0, bw, bh),
    count [F] int64 candidates (0 for skipped triangles), plane [F,3] float32, as returned by
    ``_triangle_setup``.

    Scanline spans instead of testing every candidate: the candidate rows of all live triangles are
    flattened into one list; per row, each edge function ``A*dj + E_row`` (int64, exact) is > 0 on a
    half-line of dj whose end is an exact integer floor division, so the covered pixels of the row are one
    span [lo, hi] (the same set the per-candidate test gives). The spans are flattened again into
    fragments (covered pixels), each gets its depth key exactly as the per-candidate formula, and one
    ``scatter_reduce_(amin)`` merges a chunk. A fixed handful of kernels per chunk, no per-size buckets;
    host syncs: the row and fragment totals (plus one for the chunk plan when a stage needs several chunks).

    ``budget`` bounds the fragments processed at once (and the rows, at a quarter of it): default 2**22 on
    CPU, 2**24 elsewhere. Peak temporary memory: about 48 bytes per fragment of a chunk plus about 90 per
    row of a row chunk, i.e. at most ~70 bytes per unit of ``budget`` (~1.1 GiB at the GPU default; only
    when a view has that many covered pixels). ``cancel`` is checked between chunks.
    """
    device = keys.device
    budget = max(1, int(budget or _default_budget(device)))
    rows_of = torch.where(count > 0, box[:, 3], torch.zeros_like(count))
    # Per-triangle columns, gathered one at a time (1-D gathers are the fast kind on every device).
    a_k = [coefs[:, k, 0].contiguous() for k in range(3)]
    b_k = [coefs[:, k, 1].contiguous() for k in range(3)]
    e_k = [coefs[:, k, 2].contiguous() for k in range(3)]
    j0, i0, bw = box[:, 0].contiguous(), box[:, 1].contiguous(), box[:, 2].contiguous()
    g0, gx, gy = (plane[:, c].to(torch.float64) for c in range(3))
    for tri, row_pos, row_start in _flat_segments(rows_of, max(1, budget // 4), cancel):
        di = row_pos - _take(row_start, tri)
        del row_pos
        # Covered span [lo, hi] of the row: A*dj + E > 0 for the three edges (E = B*di + E0), 0 <= dj < bw.
        lo = torch.zeros_like(di)
        hi = _take(bw, tri) - 1
        for k in range(3):
            a = _take(a_k[k], tri)
            e = _take(b_k[k], tri).mul_(di).add_(_take(e_k[k], tri))
            q = torch.div(e.neg_(), a.abs().clamp_(min=1), rounding_mode="floor")  # floor(-E / |A|)
            lo = torch.where(a > 0, torch.maximum(lo, q + 1), lo)    # A > 0: dj >= floor(-E/A) + 1
            hi = torch.where(a < 0, torch.minimum(hi, -1 - q), hi)   # A < 0: dj <= ceil(E/|A|) - 1
            hi.masked_fill_((a == 0) & (e >= 0), -1)                 # A = 0: all (E > 0) or nothing
            del a, e, q
        span = (hi - lo + 1).clamp_(min=0)
        del hi
        # Per-row values for the fragments (a fragment at flat position p of its row: dj = lo + p - start).
        gyd = _take(gy, tri).mul_(di.to(torch.float64))  # exact: a float32 times a small integer
        pixb = _take(i0, tri).add_(di).mul_(width).add_(_take(j0, tri)).add_(lo)
        g0r, gxr = _take(g0, tri), _take(gx, tri)
        del di
        shifted = False
        for row, pos, frag_start in _flat_segments(span, budget, cancel):
            if not shifted:  # the same starts for every chunk of this row set
                lo.sub_(frag_start)
                pixb.sub_(frag_start)
                shifted = True
            # float64 from the float32 plane: the products are exact, so the result does not depend on
            # whether a device fuses them into multiply-adds (the Triton path gets the same bits).
            invw = _take(gxr, row).mul_(_take(lo, row).add_(pos).to(torch.float64))
            invw.add_(_take(g0r, row)).add_(_take(gyd, row)).clamp_(min=1e-30)
            depth = torch.reciprocal_(invw).to(torch.float32)
            del invw
            key = depth.view(torch.int32).to(torch.int64).bitwise_left_shift_(32).bitwise_or_(_take(tri, row))
            del depth
            keys.scatter_reduce_(0, _take(pixb, row).add_(pos), key, reduce="amin", include_self=True)
            del key, row, pos


def _flat_segments(counts: torch.Tensor, budget: int, cancel):
    """Flatten items with ``counts`` [N] elements each into chunks of at most ``budget`` elements.

    Yields (item [n] int64, pos [n] int64 the element's flat position, start [N] first flat position of
    each item) per chunk, checking ``cancel`` before each. One host sync for the total, one more for the
    chunk plan when there are several chunks.
    """
    device = counts.device
    cum = torch.cumsum(counts, 0)
    total = int(cum[-1]) if cum.numel() else 0
    if total == 0:
        _check_cancel(cancel)
        return
    start = cum - counts
    items = torch.arange(counts.shape[0], device=device)
    if total <= budget:
        _check_cancel(cancel)
        yield (torch.repeat_interleave(items, counts, output_size=total),
               torch.arange(total, device=device), start)
        return
    lo = torch.arange(0, total, budget, device=device)
    hi = (lo + budget).clamp(max=total)
    first = torch.searchsorted(cum, lo, right=True)
    last = torch.searchsorted(cum, hi - 1, right=True)
    plan = torch.stack([lo, hi, first, last, start[first], cum[last]], -1).tolist()
    for g0, g1, ta, tb, s_first, c_last in plan:
        _check_cancel(cancel)
        n = counts[ta:tb + 1].clone()
        n[0] -= g0 - s_first
        n[-1] -= c_last - g1
        yield (torch.repeat_interleave(items[ta:tb + 1], n, output_size=g1 - g0),
               torch.arange(g0, g1, device=device), start)


def _pixel_bary(vertices_clip, faces, fidx, pix, height, width, ndc_y_up, with_derivatives):
    """float64 perspective-correct barycentrics, view depth and (optionally) d bary / d (x, y)."""
    xy, w, _ = _screen_coords(vertices_clip, height, width, ndc_y_up)
    tri = faces[fidx]
    vxy = _rows(xy, tri)  # [P,3,2]
    vw = w[tri]
    px = (pix % width).to(torch.float64) + 0.5
    py = torch.div(pix, width, rounding_mode="floor").to(torch.float64) + 0.5
    q, dqx, dqy = [], [], []
    for k in range(3):
        a = vxy[:, (k + 1) % 3]
        b = vxy[:, (k + 2) % 3]
        dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
        ek = dx * (py - a[:, 1]) - dy * (px - a[:, 0])
        q.append(ek / vw[:, k])
        dqx.append(-dy / vw[:, k])
        dqy.append(dx / vw[:, k])
    q = torch.stack(q, -1)
    qs = q.sum(-1, keepdim=True)
    qs = torch.where(qs == 0, torch.full_like(qs, 1e-300), qs)
    bary = q / qs
    # sum_k E_k equals twice the (signed) screen area for every p; depth = area / sum_k E_k / w_k.
    area = (q * vw).sum(-1)
    depth = area / qs[:, 0]
    deriv = None
    if with_derivatives:
        dqx = torch.stack(dqx, -1)
        dqy = torch.stack(dqy, -1)
        dbx = (dqx * qs - q * dqx.sum(-1, keepdim=True)) / qs ** 2
        dby = (dqy * qs - q * dqy.sum(-1, keepdim=True)) / qs ** 2
        deriv = torch.stack([dbx, dby], -1)  # [P,3,2]
    return bary, depth, deriv


def bary_derivatives(vertices_clip: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor,
                     ndc_y_up: bool = False) -> torch.Tensor:
    """Screen-space derivatives of the perspective-correct barycentrics, [H,W,3,2] float32.

    [..., k, 0] = d bary_k / d x and [..., k, 1] = d bary_k / d y, per pixel, x to the right and
    y DOWN the image rows (pixel units), at each pixel centre; zeros where empty. Used with
    ``interpolate(..., bary_db=...)`` for attribute (UV) derivatives.
    """
    height, width = face_id.shape
    faces = faces.to(device=face_id.device, dtype=torch.int64).reshape(-1, 3)
    out = torch.zeros(height * width, 3, 2, dtype=torch.float32, device=face_id.device)
    flat = face_id.reshape(-1)
    pix = torch.nonzero(flat > 0)[:, 0]
    if pix.numel() > 0:
        _, _, d = _pixel_bary(vertices_clip, faces, flat[pix] - 1, pix, height, width, ndc_y_up,
                              with_derivatives=True)
        out[pix] = d.to(torch.float32)
    return out.reshape(height, width, 3, 2)


def interpolate(attrs: torch.Tensor, face_id: torch.Tensor, bary: torch.Tensor,
                faces: Optional[torch.Tensor] = None, bary_db: Optional[torch.Tensor] = None):
    """Interpolate attributes over the raster: [H,W,C], zeros where face_id == 0.

    attrs is per vertex [V,C] (then ``faces`` [F,3] is required) or per face corner [F,3,C].
    With ``bary_db`` ([H,W,3,2] from ``bary_derivatives``) also returns the attribute derivatives
    [H,W,C,2] (d/dx, d/dy in pixels, y down).
    """
    height, width = face_id.shape
    channels = attrs.shape[-1]
    flat = face_id.reshape(-1)
    pix = torch.nonzero(flat > 0)[:, 0]
    fidx = flat[pix] - 1
    if attrs.dim() == 3:
        corner = attrs[fidx]  # [P,3,C]
    else:
        if faces is None:
            raise ValueError("per-vertex attributes need `faces`")
        corner = attrs[faces.to(attrs.device).long()[fidx]]
    b = bary.reshape(-1, 3)[pix].to(attrs.dtype)
    out = attrs.new_zeros(height * width, channels)
    out[pix] = (corner * b[:, :, None]).sum(1)
    out = out.reshape(height, width, channels)
    if bary_db is None:
        return out
    db = bary_db.reshape(-1, 3, 2)[pix].to(attrs.dtype)
    dout = attrs.new_zeros(height * width, channels, 2)
    dout[pix] = torch.einsum("pkc,pkd->pcd", corner, db)
    return out, dout.reshape(height, width, channels, 2)


def __getattr__(name):
    # render_mesh (one view as images) lives in mesh_view.py, which imports this module: named here lazily.
    if name == "render_mesh":
        from .mesh_view import render_mesh
        return render_mesh
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
