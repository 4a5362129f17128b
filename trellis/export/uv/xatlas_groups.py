"""xatlas on a large mesh in groups, several child processes at once: ``group_layout``.

The mesh is cut into xatlas's compact pieces (``xatlas.split_pieces``), consecutive pieces (neighbours in space)
are gathered into groups of about ``GROUP_FACES`` faces, and each group is its own xatlas atlas, made at one common
scale (``texels_per_unit``) so that every chart gets the same texel density. The groups are shared among up to
``processes.usable_cores()`` children that run at once: that is the speed (one after the other they cost about as
much as one atlas). Then either the charts are packed again as one xatlas atlas at that scale (a child more, fast
with few charts: ``REPACK_MAX_CHARTS``), or, on a mesh of very many tiny charts, the groups' atlases are placed side
by side as they are; either way the result is shelf-packed into the square texture (``pack_shelf.shelf_pack``) and
scaled to fit. The common scale is about the one xatlas picks for the whole mesh given the texture size
(``GROUP_FILL``): the charts then end up as large, and their margins as narrow, as in one xatlas atlas (on a mesh
of many tiny charts the margins take most of the atlas, and scaling it into the texture brings them below
``padding`` texels there as well). Which groups exist, and so the layout, does not depend on the number of cores.
"""
from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np

from .. import processes
from .pack_shelf import shelf_pack
from .winding import unmirror_charts
from .xatlas import piece_order, run_children, split_pieces

__all__ = ["GROUP_FACES", "GROUP_MIN_FACES", "GROUP_FILL", "REPACK_MAX_CHARTS", "REPACK_MIN_FACES", "GROUPS_CHILD",
           "PACK_CHILD", "group_plan", "group_time_estimate", "group_layout"]

# Faces per group: a group's xatlas packing stays fast, and the groups' rectangles leave little of the square empty.
GROUP_FACES = 32_000
# "auto" lays out in groups meshes of at least this many faces whose one atlas would run past the budget
# (``unwrap.xatlas_route``); smaller ones stay one atlas (``xatlas.xatlas_layout``).
GROUP_MIN_FACES = 100_000
# The common scale: texels per unit = GROUP_FILL * size / sqrt(surface area), about what xatlas picks itself for one
# atlas of the whole mesh (on the 500 k-face blob: the same margins once scaled into the texture, within a texel
# hundredth, and the same texel use within 2 %).
GROUP_FILL = 0.85
# The square a group's atlas is packed in: this many times the side its share of the texture would have, rounded up
# to a power of two and at most GROUP_MAX_RESOLUTION (xatlas packs faster with room to spare; its charts end in a
# corner of the square, the part used is measured after).
GROUP_ROOM = 6.0
GROUP_MAX_RESOLUTION = 8192
# With at most REPACK_MAX_CHARTS charts in all, of REPACK_MIN_FACES faces or more on average, the groups' charts
# are packed again as one xatlas atlas (one more child): large charts placed side by side in their groups' boxes
# leave much of the texture empty. Otherwise (a noisy mesh's ~10^5 tiny charts, whose packing at once is what
# makes one atlas slow) the groups' atlases are placed side by side as they are: they then waste little, and
# xatlas's margins between tiny charts are wider in them.
REPACK_MAX_CHARTS = 5000
REPACK_MIN_FACES = 10

# Child process: the groups [first, last) of the input, each its own xatlas atlas at the common scale, in a square
# of ``resolution`` texels (ample: xatlas packs a larger square faster; what its charts use is measured after).
# Kept free of any trellis import so that it starts fast. Output, groups in order: vmapping (input vertex of each
# output vertex), faces (output vertices, numbered from 0 in each group), uvs in the group's texels, and per group
# its vertex and face counts, atlas size, atlas count and chart count. Both children leave by ``os._exit`` once their
# output is written (freeing an atlas at a normal exit takes a tenth of a second or more).
GROUPS_CHILD = r"""
import os, sys, numpy as np, xatlas
d = np.load(sys.argv[1])
v, f, starts, groups = d["vertices"], d["faces"], d["starts"], d["groups"]
first, last = int(sys.argv[3]), int(sys.argv[4])
vm, fs, uv, counts = [], [], [], []
for g in range(first, last):
    atlas, used = xatlas.Atlas(), []
    for p in range(groups[g], groups[g + 1]):
        u, local = np.unique(f[starts[p]:starts[p + 1]], return_inverse=True)
        used.append(u)
        atlas.add_mesh(v[u], local.reshape(-1, 3).astype(np.uint32))
    chart, pack = xatlas.ChartOptions(), xatlas.PackOptions()
    chart.fix_winding, pack.rotate_charts = True, False   # xatlas turns a chart by transposing it: a mirror
    pack.resolution, pack.texels_per_unit = int(d["resolution"]), float(d["texels_per_unit"])
    pack.padding = int(d["padding"])
    atlas.generate(chart, pack)
    size = np.array([atlas.width, atlas.height], dtype=np.float64)
    nv = nf = 0
    for i, u in enumerate(used):
        vmapping, faces, uvs = atlas[i]
        vm.append(u[vmapping]); fs.append(faces.astype(np.int64) + nv); uv.append(uvs * size)
        nv += len(vmapping); nf += len(faces)
    counts.append([nv, nf, atlas.width, atlas.height, atlas.atlas_count, atlas.chart_count])
np.savez(sys.argv[2], vmapping=np.concatenate(vm), faces=np.concatenate(fs), uvs=np.concatenate(uv),
         counts=np.array(counts, dtype=np.int64).reshape(-1, 6))
os._exit(0)
"""

# Child process: the groups' charts (a UV mesh: each chart a connected piece of it, in texels of the common scale)
# packed by xatlas as one atlas at that scale, in a square of ``resolution`` texels. Output as one group's.
PACK_CHILD = r"""
import os, sys, numpy as np, xatlas
d = np.load(sys.argv[1])
atlas = xatlas.Atlas()
atlas.add_uv_mesh(d["uvs"], d["faces"])
chart, pack = xatlas.ChartOptions(), xatlas.PackOptions()
pack.rotate_charts = False                              # a turn is a transpose: a mirror
pack.resolution, pack.texels_per_unit, pack.padding = int(d["resolution"]), 1.0, int(d["padding"])
atlas.generate(chart, pack)
vmapping, faces, uvs = atlas[0]
np.savez(sys.argv[2], vmapping=vmapping.astype(np.int64), faces=faces.astype(np.int64),
         uvs=uvs * np.array([atlas.width, atlas.height], dtype=np.float64), atlas_count=atlas.atlas_count)
os._exit(0)
"""


def group_plan(vertices: np.ndarray, faces: np.ndarray, group_faces: int = GROUP_FACES):
    """(face order (sorted by piece), piece starts into it, group starts into the pieces): pieces as
    ``split_pieces`` cuts them (by median partitions), consecutive ones gathered into groups of about
    ``group_faces`` faces."""
    order, starts = piece_order(split_pieces(vertices, faces, partition=True))
    n = max(1, math.ceil(len(faces) / max(int(group_faces), 1)))
    cuts = np.searchsorted(starts, np.arange(1, n) * len(faces) / n)     # the piece nearest each even split
    groups = np.unique(np.concatenate([[0], cuts, [len(starts) - 1]]))
    return order, starts, groups


def group_time_estimate(num_faces: int, workers: int = None) -> float:
    """Rough seconds of ``group_layout``: each group ~1 s per 45 000 faces on one core (measured on a 2-core
    CPU), the groups shared by the workers, plus the children's start and this process's share (~1 s per
    500 000 faces). Only skips hopeless cases."""
    workers = processes.usable_cores() if workers is None else max(int(workers), 1)
    groups = max(1, math.ceil(num_faces / GROUP_FACES))
    return math.ceil(groups / min(workers, groups)) * GROUP_FACES / 45000.0 + 0.3 + num_faces / 500000.0


def _tiles(group_uv, counts, size, pad, cancel):
    """(uvs, scale): each group's atlas (the box its charts use; ``counts``: each group's vertex count first)
    shelf-packed into the texture, all scaled alike."""
    ngroups = len(counts)
    vert_group = np.repeat(np.arange(ngroups), counts[:, 0])
    lo = np.full((ngroups, 2), np.inf)
    hi = np.full((ngroups, 2), -np.inf)
    np.minimum.at(lo, vert_group, group_uv)
    np.maximum.at(hi, vert_group, group_uv)
    ext = np.maximum(hi - lo, 1e-9)
    scale, x0, y0 = shelf_pack(ext[:, 0], ext[:, 1], size, pad, cancel)
    # each group's box placed where the shelf put it (rows down from the top, v up inside the group)
    tex_u = x0[vert_group] + pad + (group_uv[:, 0] - lo[vert_group, 0]) * scale
    tex_row = y0[vert_group] + pad + (hi[vert_group, 1] - group_uv[:, 1]) * scale
    return np.stack([tex_u / size, 1.0 - tex_row / size], 1).astype(np.float32), float(scale)


def _surface_area(v, f) -> float:
    a = v[f[:, 0]]
    return float(0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - a, v[f[:, 2]] - a), axis=1).sum(dtype=np.float64))


def group_layout(v, f, budget, texture_size, padding, progress, cancel, workers: int = None,
                 group_faces: int = GROUP_FACES, info: dict = None):
    """(vertices, faces, uvs, vmapping) as ``unwrap_uv`` returns them (faces in the input order), from xatlas in
    groups (module docstring) in up to ``workers`` children at once (default: the usable cores); raises on a
    failure, TimeoutError past ``budget`` seconds (the children are killed then, and on cancel). ``info`` gets
    "groups", "workers", "texels_per_unit", "resolution" (of the groups' atlases), "charts", "repacked" (the
    charts packed again as one atlas) and "scale" (texture texels per atlas texel)."""
    deadline = time.monotonic() + float(budget)
    size, pad = int(texture_size), int(padding)
    order, starts, groups = group_plan(v, f, group_faces)
    ngroups = len(groups) - 1
    workers = min(processes.usable_cores() if workers is None else max(int(workers), 1), ngroups)
    estimate = max(group_time_estimate(len(f), workers), 0.1)
    area = _surface_area(v, f)
    if not (np.isfinite(area) and area > 0):
        raise ValueError("xatlas: the mesh has no surface area (or non-finite coordinates)")
    tpu = GROUP_FILL * size / math.sqrt(area)
    info = {} if info is None else info
    with tempfile.TemporaryDirectory(prefix="trellis_uv_") as tmp:
        side = GROUP_ROOM * size / math.sqrt(ngroups)
        resolution = min(GROUP_MAX_RESOLUTION, 1 << max(int(math.ceil(math.log2(side))), 6))
        np.savez(os.path.join(tmp, "in.npz"), vertices=v, faces=f[order].astype(np.uint32), starts=starts,
                 groups=groups, texels_per_unit=tpu, padding=pad, resolution=resolution)
        bounds = [ngroups * i // workers for i in range(workers + 1)]
        jobs = [(os.path.join(tmp, f"out{i}.npz"), bounds[i], bounds[i + 1]) for i in range(workers)
                if bounds[i + 1] > bounds[i]]
        outs = run_children(GROUPS_CHILD, jobs, tmp, deadline, float(budget), progress, estimate, cancel,
                            name="xatlas (in groups)")
        counts = np.concatenate([o["counts"] for o in outs])
        if (counts[:, 4] != 1).any():
            raise RuntimeError(f"xatlas produced {counts[:, 4].tolist()} atlases for its groups")
        vmapping = np.concatenate([o["vmapping"] for o in outs]).astype(np.int64)
        group_uv = np.concatenate([o["uvs"] for o in outs]).astype(np.float64)
        base = np.concatenate([[0], np.cumsum(counts[:, 0])[:-1]])
        local = np.concatenate([o["faces"] for o in outs]) + np.repeat(base, counts[:, 1])[:, None]
        charts = int(counts[:, 5].sum())
        info.update(groups=ngroups, workers=workers, texels_per_unit=float(tpu), resolution=int(resolution),
                    charts=charts, repacked=charts <= REPACK_MAX_CHARTS and len(f) >= REPACK_MIN_FACES * charts)
        if info["repacked"]:
            room = min(GROUP_MAX_RESOLUTION, 1 << max(int(math.ceil(math.log2(GROUP_ROOM * size))), 6))
            np.savez(os.path.join(tmp, "in.npz"), uvs=group_uv.astype(np.float32), faces=local.astype(np.uint32),
                     resolution=room, padding=pad)
            out = run_children(PACK_CHILD, [(os.path.join(tmp, "packed.npz"),)], tmp, deadline, float(budget),
                               progress, estimate, cancel, name="xatlas (in groups)")[0]
            if int(out["atlas_count"]) != 1 or out["faces"].shape != local.shape:
                raise RuntimeError(f"xatlas packed the groups' charts into {int(out['atlas_count'])} atlases / "
                                   f"{out['faces'].shape} faces")
            vmapping, local, group_uv = vmapping[out["vmapping"]], out["faces"], out["uvs"]
            counts = np.array([[len(vmapping), len(local)]])           # one group: the repacked atlas
    uvs, info["scale"] = _tiles(group_uv, counts, size, pad, cancel)
    new_faces = np.empty_like(f, dtype=np.int64)
    new_faces[order] = local
    if new_faces.shape != f.shape or len(vmapping) != len(uvs):
        raise RuntimeError(f"xatlas (in groups) produced {new_faces.shape} faces for {f.shape}")
    uvs = unmirror_charts(new_faces, uvs, size, pad)
    if progress is not None:
        progress(100, 100)
    return v[vmapping], new_faces, uvs, vmapping
