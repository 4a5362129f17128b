"""The look of the Gaussians baked texel by texel onto a mesh they were not decoded on (``bake_near_surface``): the
bake of "keep my mesh".

Each texel inside a chart of the mesh's UV atlas has a point p and a normal n on the mesh. Its colour is what an
orthographic one-pixel render looking down the normal at p sees: the Gaussians met along the line through p along n,
composited from outside inward, within ``NEAR_BAND_VOXELS`` above and below p. The Gaussians of a look generated on the
mesh's voxels lie on a surface up to about a voxel off the mesh's own; along the normal the line finds that surface
right where the mesh is, the same way for every texel (a bake from views projects each view's render onto the mesh
by its depth, and the offset moves fine lines differently in each view: averaged, they blur).

Along a line, a 3-D Gaussian's density is a 1-D Gaussian whose peak is the 2-D Gaussian of the orthographic
projection along n at p, so each (texel, Gaussian) pair is one splat of the renderer's equations
(``renderers.gaussian_render``): ``alpha = min(0.99, o' exp(-1/2 d^T S''^-1 d))`` with d the centre's offset from p
across n, S'' the covariance projected across n plus ``MIP_FILTER_TEXELS`` texel areas (the renderer's Mip filter,
a texel in place of a pixel) and o' the opacity scaled as that filter scales it; pairs under 1/255 are skipped,
Gaussians are taken in order of their centre's height over p and a texel ends when its transmittance would fall
under 1e-4. The colour is un-premultiplied by the texel's opacity, as the view bake's observations are; texels whose
opacity stays under ``MIN_TEXEL_ALPHA`` are filled from their neighbours (``inpaint``). As the view bake renders
its Gaussians smaller (``observations.sharpening_scale``), the Gaussians are taken narrower than they are
(``spacing_sharpening``): overlapping footprints would blend neighbours' colours into every texel.

Candidates come from a grid of cells holding the Gaussians' centres (their keys sorted: a hash with binary search):
cells about as wide as the Gaussians' reach, those around each texel's point that the cylinder of that reach around
its line can touch. (texel, Gaussian) pairs are made, culled to the cylinder and composited in chunks of at most
``PAIR_BUDGET`` pairs, so memory stays bounded. Pure PyTorch: the same code on a GPU and a CPU.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ...core.callbacks import check
from ...core.segment_sum import index_add_in_order_
from ...renderers.gaussian_constants import ALPHA_MAX, ALPHA_MIN, T_MIN
from ...representations.gaussian import SH_C0, quaternion_to_matrix

__all__ = ["NEAR_BAND_VOXELS", "GRID_RESOLUTION", "MIP_FILTER_TEXELS", "MIN_TEXEL_ALPHA", "NORMAL_CREASE_ANGLE",
           "REACH_QUANTILE", "SHARPEN_SPACING", "MIN_SHARPENING", "PAIR_BUDGET", "CELL_BUDGET", "MAX_BLOCK",
           "texel_frames", "GaussianCells", "tangent_basis", "composite_along_normals", "spacing_sharpening",
           "search_reach", "bake_near_surface"]

# How far above and below the mesh (voxels of the generation grid) the Gaussians' surface is looked for: stage 2
# decodes Gaussians within about a voxel of the voxels the mesh made, so its surface can lie that far off the mesh's.
NEAR_BAND_VOXELS = 2.0
# The generation grid the band is counted in (TRELLIS's sparse structure: 64^3 over the unit cube).
GRID_RESOLUTION = 64
# The Mip filter added to each projected covariance, in texel areas: the renderer's 0.1 pixel^2 with a texel for
# the pixel, so Gaussians finer than a texel do not alias.
MIP_FILTER_TEXELS = 0.1
# Texels whose composited opacity stays below this saw no surface (the band missed it): they are inpainted.
MIN_TEXEL_ALPHA = 0.05
# Corners of faces meeting at more than this bend take their face's normal (normals.split_vertex_normals): a flat
# side keeps its own direction up to a sharp edge, a curved surface gets smooth normals across its faces.
NORMAL_CREASE_ANGLE = 45.0
# The search reaches this quantile of the Gaussians' largest axes (times the 1/255 cut-off's sigmas): a few
# outsized Gaussians do not widen every texel's search; their far tails are not composited.
REACH_QUANTILE = 0.99
# The Gaussians are taken at this fraction of their spacing on the surface (spacing_sharpening): on the realistic
# objects (docs/benchmarks/export.md#keep-my-mesh) half their spacing was sharpest, for colours fitted to renders
# as for colours sampled at their centres; much narrower, the lines fall between them.
SHARPEN_SPACING = 0.5
MIN_SHARPENING = 0.3
# (texel, Gaussian) candidate pairs evaluated at once: ~150 bytes of temporaries each.
PAIR_BUDGET = 1 << 21
# (texel, cell) lookups made at once: ~100 bytes of temporaries each.
CELL_BUDGET = 1 << 21
# Cells around a point searched at most in each direction (block): cells of a third of the search radius or more.
MAX_BLOCK = 3


def texel_frames(vertices, faces, uvs, texture_size: int, device=None, crease_angle: float = NORMAL_CREASE_ANGLE,
                 cancel=None) -> dict:
    """The surface under every texel whose centre lies in a UV triangle: dict of ``index`` [T] (flat texel index,
    row 0 = top), ``point`` [T,3], ``normal`` [T,3] (unit; corner normals split at ``crease_angle``, interpolated)
    and ``area`` [T] (the surface area one texel of that face covers), float32 on ``device``."""
    from ..normals import split_vertex_normals
    from ..uv.stats import uv_raster

    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    check(cancel)
    _, split_faces, corner_normals = split_vertex_normals(v, f, crease_angle, cancel=cancel)
    check(cancel)                # each pass over a large mesh's faces is a second's work on a CPU
    dev = torch.device(device) if device is not None else torch.device("cpu")
    size = int(texture_size)
    face_id, bary = uv_raster(f, np.asarray(uvs, np.float32), size, dev, with_bary=True, cancel=cancel)
    flat = face_id.reshape(-1)
    index = torch.nonzero(flat > 0)[:, 0]
    face = flat[index] - 1
    b = bary.reshape(-1, 3)[index].float()
    vt = torch.as_tensor(v, dtype=torch.float32, device=dev)
    ft = torch.as_tensor(f, device=dev)
    point = (vt[ft[face]] * b[:, :, None]).sum(1)
    cn = torch.as_tensor(corner_normals, dtype=torch.float32, device=dev)[torch.as_tensor(split_faces, device=dev)]
    normal = torch.nn.functional.normalize((cn[face] * b[:, :, None]).sum(1), dim=-1)
    check(cancel)
    tri = vt[ft]
    world = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1) * 0.5
    t = torch.as_tensor(np.asarray(uvs, np.float64), dtype=torch.float64, device=dev)[ft] * size
    uv_area = 0.5 * ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                     - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])).abs()
    area = (world.double() / uv_area.clamp(min=1e-12)).float()[face]
    return {"index": index, "point": point, "normal": normal, "area": area}


class GaussianCells:
    """A Gaussian representation's centres, covariances, opacities and colours, sorted by the grid cell (of side
    ``cell``) their centre lies in, with the cells' sorted keys, first index and count (a hash searched by binary
    search): ``cell_ranges`` finds the Gaussians in the cells a line segment's neighbourhood touches."""

    def __init__(self, gaussian, cell: float, device=None):
        dev = torch.device(device) if device is not None else gaussian.device
        with torch.no_grad():
            xyz = gaussian.get_xyz.float().to(dev)
            scale = gaussian.get_scaling.float().to(dev)
            rot = quaternion_to_matrix(gaussian.get_rotation.float().to(dev))
            opacity = gaussian.get_opacity.float().reshape(-1).to(dev)
            features = gaussian.get_features.float().reshape(len(xyz), -1, 3)[:, 0].to(dev)
            color = (SH_C0 * features + 0.5).clamp(min=0)              # degree 0: the view-independent colour
        self.device = dev
        extent = float((xyz.max(0).values - xyz.min(0).values).max()) if len(xyz) else 0.0
        self.cell = max(float(cell), extent * 2.0 ** -20)             # cell keys stay far inside int64
        m = rot * scale[:, None, :]                                     # R diag(s): covariance = m m^T
        cov = m @ m.transpose(1, 2)
        self.origin = xyz.min(0).values - 2 * self.cell if len(xyz) else torch.zeros(3, device=self.device)
        ijk = ((xyz - self.origin) / self.cell).floor().long()
        self.dims = (ijk.max(0).values + 3).tolist() if len(xyz) else [1, 1, 1]
        key, order = torch.sort(self._key(ijk))
        self.keys, self.counts = torch.unique_consecutive(key, return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.xyz, self.opacity, self.color = xyz[order], opacity[order], color[order]
        c = cov[order]
        self.cov = torch.stack([c[:, 0, 0], c[:, 0, 1], c[:, 0, 2], c[:, 1, 1], c[:, 1, 2], c[:, 2, 2]], 1)

    def _key(self, ijk):
        nx, ny, nz = self.dims
        return (ijk[..., 0] * ny + ijk[..., 1]) * nz + ijk[..., 2]

    def cell_ranges(self, points, normals, lo: float, hi: float, reach: float, block: int = 1):
        """(first sorted index, count) [P,K] of the Gaussians in the cells within ``block`` cells of each point [P,3]
        ((2 block + 1)^3 of them) that a centre within ``reach`` of the segment from ``lo`` to ``hi`` along the
        normal [P,3] can lie in; count 0 for the others."""
        ijk = ((points - self.origin) / self.cell).floor().long()
        r = torch.arange(-block, block + 1, device=self.device)
        off = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        nb = ijk[:, None, :] + off[None]
        # the cell's centre within reach plus its half diagonal of the segment
        centre = (nb.float() + 0.5) * self.cell + self.origin - points[:, None, :]
        t = (centre * normals[:, None, :]).sum(-1).clamp(lo, hi)
        away = (centre - t[..., None] * normals[:, None, :]).norm(dim=-1)
        near = away <= reach + self.cell * 0.8661
        near &= ((nb >= 0) & (nb < torch.as_tensor(self.dims, device=self.device))).all(-1)
        key = self._key(nb.clamp(min=0))
        zero = torch.zeros(key.shape, dtype=torch.long, device=self.device)
        if len(self.keys) == 0:
            return zero, zero
        pos = torch.searchsorted(self.keys, key).clamp(max=len(self.keys) - 1)
        hit = near & (self.keys[pos] == key)
        return self.starts[pos], torch.where(hit, self.counts[pos], zero)


def _pairs(starts, counts):
    """(row of each pair, sorted Gaussian index of each pair) from per-row cell ranges [R,K]."""
    c = counts.reshape(-1)
    entry = torch.nonzero(c)[:, 0]
    c = c[entry]
    total = int(c.sum())
    rep = torch.repeat_interleave(torch.arange(len(entry), device=c.device), c, output_size=total)
    first = torch.cumsum(c, 0) - c
    g = starts.reshape(-1)[entry][rep] + (torch.arange(total, device=c.device) - first[rep])
    return entry[rep] // counts.shape[1], g


def _splats(cells: GaussianCells, g, d, e1, e2, filt):
    """Per pair: alpha of Gaussian ``g`` seen along its texel's normal, ``d`` [P,3] its centre's offset from the
    texel's point, ``e1``, ``e2`` [P,3] the texel's tangent basis, ``filt`` [P] its Mip filter (world area); 0 under
    1/255."""
    s = cells.cov[g]

    def sig(a):                                   # S a for the symmetric S stored as xx, xy, xz, yy, yz, zz
        return torch.stack([s[:, 0] * a[:, 0] + s[:, 1] * a[:, 1] + s[:, 2] * a[:, 2],
                            s[:, 1] * a[:, 0] + s[:, 3] * a[:, 1] + s[:, 4] * a[:, 2],
                            s[:, 2] * a[:, 0] + s[:, 4] * a[:, 1] + s[:, 5] * a[:, 2]], -1)

    s1 = sig(e1)
    a00 = (e1 * s1).sum(-1)
    a01 = (e2 * s1).sum(-1)
    a11 = (e2 * sig(e2)).sum(-1)
    det0 = (a00 * a11 - a01 * a01).clamp(min=0)
    a00, a11 = a00 + filt, a11 + filt
    det = (a00 * a11 - a01 * a01).clamp(min=1e-30)
    x, y = (d * e1).sum(-1), (d * e2).sum(-1)
    power = 0.5 * (a11 * x * x - 2 * a01 * x * y + a00 * y * y) / det
    alpha = (cells.opacity[g] * torch.sqrt(det0 / det) * torch.exp(-power)).clamp(max=ALPHA_MAX)
    return torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))


def tangent_basis(normal):
    """(e1, e2) [T,3]: unit vectors across the unit normals [T,3], e1 from the axis least aligned with them."""
    x = torch.tensor([1.0, 0.0, 0.0], device=normal.device)
    y = torch.tensor([0.0, 1.0, 0.0], device=normal.device)
    ax = torch.where(normal[:, :1].abs() < 0.9, x, y)
    e1 = torch.nn.functional.normalize(torch.linalg.cross(normal, ax), dim=-1)
    return e1, torch.linalg.cross(normal, e1)


def _composite(row, alpha, h, color, rows: int, lo: float, hi: float):
    """Front-to-back (highest first) compositing per row of the pairs (``row``, ``alpha``, height ``h``, ``color``):
    (premultiplied colour [R,3], opacity [R], opacity-weighted height [R])."""
    keep = torch.nonzero(alpha > 0)[:, 0]
    row, alpha, h, color = row[keep], alpha[keep], h[keep], color[keep]
    key = row.double() + (hi - h.double()).clamp(0, hi - lo) / (2 * (hi - lo) + 1e-30)
    order = torch.argsort(key)
    row, alpha, h, color = row[order], alpha[order], h[order], color[order]
    lg = torch.log1p(-alpha.double())
    incl = torch.cumsum(lg, 0)
    excl = incl - lg
    start = torch.ones_like(row, dtype=torch.bool)
    start[1:] = row[1:] != row[:-1]
    pos = torch.arange(len(row), device=row.device)
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
    base = excl[first]
    take = (incl - base) >= math.log(T_MIN)
    w = (alpha.double() * torch.exp(excl - base) * take).float()
    out_c = torch.zeros(rows, 3, device=alpha.device)
    out_a = torch.zeros(rows, device=alpha.device)
    out_h = torch.zeros(rows, device=alpha.device)
    index_add_in_order_(out_c, row, color * w[:, None])
    index_add_in_order_(out_a, row, w)
    index_add_in_order_(out_h, row, h * w)
    return out_c, out_a, out_h


def composite_along_normals(cells: GaussianCells, point, normal, filt, lo: float, hi: float, reach: float,
                            block: int = 1, cancel=None, progress=None, pair_budget: int | None = None) -> tuple:
    """For every line (``point`` [T,3], ``normal`` [T,3] pointing out, Mip filter ``filt`` [T] in world area):
    (premultiplied colour [T,3], opacity [T], opacity-weighted height [T]) of the Gaussians of ``cells`` whose centres
    lie within ``reach`` of it between heights ``lo`` and ``hi``, composited from the highest down; the cells searched
    lie within ``block`` cells of the points (``GaussianCells.cell_ranges``: ``block`` cells must reach as far as
    the segment's ends and ``reach`` beyond). ``progress(done, total)`` per block of texels."""
    dev = cells.device
    n = len(point)
    budget = int(pair_budget or PAIR_BUDGET)
    e1, e2 = tangent_basis(normal)
    color = torch.zeros(n, 3, device=dev)
    alpha = torch.zeros(n, device=dev)
    height = torch.zeros(n, device=dev)
    step = max(1, CELL_BUDGET // (2 * block + 1) ** 3)
    for b0 in range(0, n, step):
        check(cancel)
        b1 = min(n, b0 + step)
        starts, counts = cells.cell_ranges(point[b0:b1], normal[b0:b1], lo, hi, reach, block)
        cum = torch.cumsum(counts.sum(1), 0)
        # blocks of texels whose candidates reach the budget (a texel's never split): at most budget + one texel's
        marks = torch.arange(budget, int(cum[-1]) + budget, budget, device=dev)
        bounds = sorted(set([0, b1 - b0] + torch.searchsorted(cum, marks, right=True).tolist()))
        for s0, s1 in zip(bounds[:-1], bounds[1:]):
            check(cancel)
            row, g = _pairs(starts[s0:s1], counts[s0:s1])
            t = b0 + s0 + row
            d = cells.xyz[g] - point[t]
            h = (d * normal[t]).sum(-1)
            # the cylinder around the line: the cells' cube holds ~10x more candidates than can reach it
            near = torch.nonzero((h >= lo) & (h <= hi) & ((d * d).sum(-1) - h * h <= reach * reach))[:, 0]
            row, g, t, d, h = row[near], g[near], t[near], d[near], h[near]
            a = _splats(cells, g, d, e1[t], e2[t], filt[t])
            c, al, hh = _composite(row, a, h, cells.color[g], s1 - s0, lo, hi)
            color[b0 + s0:b0 + s1], alpha[b0 + s0:b0 + s1], height[b0 + s0:b0 + s1] = c, al, hh
        if progress is not None:
            progress(b1, n)
    return color, alpha, height


def spacing_sharpening(gaussian, surface_area: float, spacing_share: float = SHARPEN_SPACING) -> float:
    """The factor the Gaussians' scales are taken at: their median tangent scale (geometric mean of the two larger
    axes) brought to ``spacing_share`` times their mean spacing on a surface of ``surface_area`` (the mesh's),
    never below ``MIN_SHARPENING`` and never enlarged. Overlapping footprints blend the colours of neighbours, which
    blurs a texel by about a Gaussian's size; narrower, each texel's line meets the few nearest it."""
    s = gaussian.get_scaling.detach()
    if len(s) == 0 or not surface_area > 0:
        return 1.0
    spacing = math.sqrt(surface_area / len(s))
    s = s[::max(1, len(s) // 65536)].float().sort(dim=-1).values
    tangent = float((s[:, 1] * s[:, 2]).sqrt().median())
    return float(min(1.0, max(MIN_SHARPENING, spacing_share * spacing / max(tangent, 1e-12))))


def search_reach(gaussian, texel: float) -> float:
    """How far across a line a Gaussian's centre may lie and still reach 1/255 on it: the cut-off's sigmas times
    the ``REACH_QUANTILE`` of the Gaussians' largest axes, the Mip filter of a ``texel`` (world size) added."""
    big = gaussian.get_scaling.detach().float().max(1).values
    if len(big) == 0:
        return 0.0
    big = big[::max(1, len(big) // 1_000_000)]
    sigma2 = float(torch.quantile(big, REACH_QUANTILE)) ** 2 + MIP_FILTER_TEXELS * texel ** 2
    return math.sqrt(2 * math.log(255.0) * sigma2)


def bake_near_surface(app_rep, vertices, faces, uvs, texture_size: int = 1024, device=None, cancel=None,
                      progress=None, info: dict | None = None, band_voxels: float = NEAR_BAND_VOXELS,
                      grid_resolution: int = GRID_RESOLUTION, gaussian_scale: float | None = None,
                      debug: bool = False):
    """uint8 [S,S,3] texture (row 0 = top) of the Gaussians ``app_rep`` on the mesh ``vertices`` [V,3] (in the
    Gaussians' frame), ``faces`` [F,3], ``uvs`` [V,2] (v up): each texel composited along the mesh's normal within
    ``band_voxels`` voxels of a ``grid_resolution``^3 grid over the unit cube (see the module docstring), the texels
    that saw nothing inpainted. ``gaussian_scale``: the Gaussians' scales are taken times this (None:
    ``spacing_sharpening`` on the mesh's area). ``info`` gets "observed_share" (of the atlas' texels),
    "near_surface" (band, scale, cell, block, reach, texels, mean height of the surface found in voxels), the stages'
    "seconds" and, with ``debug``, the texture before inpainting and its observed texels ("texture_before_inpaint",
    "observed_texels") as the view bake gives them. ``progress(stage, done, total)`` hears "bake" and "inpaint";
    ``cancel()`` returning True raises ``trellis.core.callbacks.Cancelled``."""
    from ...representations import Gaussian
    from .inpaint import inpaint_texture
    from .observations import scaled_gaussians

    if not isinstance(app_rep, Gaussian):
        raise TypeError(f"the near-surface bake needs Gaussians, not a {type(app_rep).__name__}")
    info = {} if info is None else info
    t0 = time.perf_counter()
    dev = torch.device(device) if device is not None else app_rep.device
    size = int(texture_size)
    check(cancel)
    fr = texel_frames(vertices, faces, uvs, size, dev, cancel=cancel)
    band = float(band_voxels) / int(grid_resolution)
    texel = float(fr["area"].median().sqrt()) if len(fr["area"]) else 0.0
    if gaussian_scale is None:
        tri = np.asarray(vertices, np.float64).reshape(-1, 3)[np.asarray(faces, np.int64).reshape(-1, 3)]
        area = 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())
        check(cancel)
        factor = spacing_sharpening(app_rep, area)
    else:
        factor = float(gaussian_scale)
    gaussians = scaled_gaussians(app_rep, factor)
    reach = search_reach(gaussians, texel)
    # cells of about the reach, as many around each point as reach the cylinder's bounding sphere (band high, reach
    # wide), those the cylinder misses skipped: a few times the Gaussians a line can meet
    radius = math.hypot(band, reach)
    block = min(MAX_BLOCK, max(1, math.ceil(radius / max(reach, 1e-12))))
    cells = GaussianCells(gaussians, cell=max(radius / block, 1e-6), device=dev)
    check(cancel)
    report = None if progress is None else (lambda d, t: progress("bake", d, t))
    color, alpha, height = composite_along_normals(
        cells, fr["point"], fr["normal"], MIP_FILTER_TEXELS * fr["area"], -band, band, reach, block, cancel=cancel,
        progress=report)
    seen = alpha > MIN_TEXEL_ALPHA
    tex = torch.zeros(size * size, 3, device=dev)
    tex[fr["index"][seen]] = (color[seen] / alpha[seen, None]).clamp(0, 1)
    observed = torch.zeros(size * size, dtype=torch.bool, device=dev)
    observed[fr["index"][seen]] = True
    tex, observed = tex.view(size, size, 3), observed.view(size, size)
    info["observed_share"] = round(int(seen.sum()) / max(len(fr["index"]), 1), 6)
    mean_h = float((height[seen] / alpha[seen]).mean()) * grid_resolution if bool(seen.any()) else None
    info["near_surface"] = {"band_voxels": float(band_voxels), "gaussian_scale": round(factor, 4),
                            "cell": round(cells.cell, 6), "block": block, "reach": round(reach, 6),
                            "texels": int(len(fr["index"])),
                            "mean_height_voxels": None if mean_h is None else round(mean_h, 3)}
    if debug:
        info["texture_before_inpaint"] = (tex.cpu().numpy() * 255).round().astype(np.uint8)
        info["observed_texels"] = observed.cpu().numpy()
    info.setdefault("seconds", {})["bake"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    check(cancel)
    if progress is not None:
        progress("inpaint", 0, 1)
    out = inpaint_texture(tex, observed)
    check(cancel)
    if progress is not None:
        progress("inpaint", 1, 1)
    info["seconds"]["inpaint"] = round(time.perf_counter() - t1, 3)
    return out
