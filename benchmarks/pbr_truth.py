"""Closed shapes with known PBR fields, and the O-Voxel a perfect TRELLIS.2 decoder would hand over for them (the
input of ``pbr_fidelity.py``).

A shape answers one question, ``closest(points) -> (closest surface points, inside)``:

- ``sphere`` and ``torus``: exact, in closed form.
- ``goblet``: a thin-walled goblet (bowl, hollow stem, foot) as a solid of revolution: the (r, z) profile is a set of
  segments thickened by ``GOBLET_WALL`` / 2, so the distance is exact (distance to the segments minus the half wall).
- ``nut`` and ``bunny``: the closed meshes of ``realistic_objects.prepare_source`` (the pyvista CAD hex nut, the
  Stanford bunny with its base holes fanned shut), cut into triangles of at most 8 thousandths: the closest point
  is the closest of the 8 triangles whose centroids are nearest (a KD-tree; exact point-triangle distance),
  inside by the angle-weighted pseudo-normal of the closest feature (face, edge or vertex), which is
  exact for a closed, consistently wound mesh.

``truth(points)`` is [N, 6] in the O-Voxel's layout (base colour 0:3, metallic 3, roughness 4, alpha 5): base colour
``realistic_objects.truth_color`` (a 3-D checker with sharp edges, stripes and 1.5-voxel lines at 256^3, on axes
rotated away from the grid), metallic 1 on the cells of a coarser rotated checker, roughness a linear ramp from 0.1
to 0.9 along a tilted axis, alpha 1.

``perfect_ovoxel(shape, res)``: the fine voxels whose centres lie within one voxel of the surface (found coarse to
fine), each voxel's dual vertex the closest surface point to its centre, the dual-grid edge flags from inside /
outside at the voxel corners, the attributes the truth at the closest surface point of each voxel centre.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from realistic_objects import PATTERN_ROTATION, prepare_source, truth_color  # noqa: E402
from trellis.export.pbr.triangle_distance import closest_on_triangles  # noqa: E402
from trellis.representations.ovoxel import MeshWithVoxel, flexible_dual_grid_to_mesh  # noqa: E402

SHAPES = ("sphere", "torus", "goblet", "nut", "bunny")
GOBLET_WALL = 0.012            # world units: 6 voxels at 512^3
GOBLET_PROFILE = (             # (r, z) segment chains of the goblet's profile: foot, hollow stem, bowl
    ((0.0, -0.42), (0.19, -0.41)),
    ((0.035, -0.41), (0.035, -0.08)),
    ((0.0, -0.08), (0.09, -0.07), (0.17, -0.02), (0.23, 0.08), (0.26, 0.22), (0.27, 0.42)),
)
METAL_CELL = 0.14              # world units: side of the metallic checker's cells
ROUGH_AXIS = (0.48, -0.36, 0.8)


def truth(points: torch.Tensor) -> torch.Tensor:
    """[N, 6] PBR attributes (the O-Voxel layout) at world points [N, 3] (see the module docstring)."""
    p = points.double()
    colour = truth_color(p).double()
    rot = torch.as_tensor(PATTERN_ROTATION, dtype=torch.float64, device=p.device)
    w = (p + 0.5) @ rot                                  # other axes than the colour's (rows, not columns)
    metal = torch.floor(w / METAL_CELL).sum(-1).remainder(2)
    axis = torch.tensor(ROUGH_AXIS, dtype=torch.float64, device=p.device)
    ramp = ((p @ (axis / axis.norm())) / 0.9 + 0.5).clamp(0, 1)
    rough = 0.1 + 0.8 * ramp
    return torch.cat([colour, metal[:, None], rough[:, None], torch.ones_like(rough)[:, None]], 1).float()


# ------------------------------------------------------------------------------------------ analytic shapes


class Sphere:
    def __init__(self, radius: float = 0.38):
        self.r = radius

    def closest(self, p: torch.Tensor):
        n = p.norm(dim=-1, keepdim=True)
        d = torch.where(n > 1e-12, p / n.clamp_min(1e-12), torch.tensor([0.0, 0.0, 1.0], device=p.device))
        return d * self.r, n[:, 0] < self.r


class Torus:
    """Around the z axis: tube centre circle of radius ``big``, tube radius ``small``."""

    def __init__(self, big: float = 0.29, small: float = 0.12):
        self.big, self.small = big, small

    def closest(self, p: torch.Tensor):
        rxy = p[:, :2].norm(dim=-1, keepdim=True)
        radial = torch.where(rxy > 1e-12, p[:, :2] / rxy.clamp_min(1e-12), torch.tensor([1.0, 0.0], device=p.device))
        centre = torch.cat([radial * self.big, torch.zeros_like(rxy)], 1)
        off = p - centre
        n = off.norm(dim=-1, keepdim=True)
        d = torch.where(n > 1e-12, off / n.clamp_min(1e-12), torch.cat([radial, torch.zeros_like(rxy)], 1))
        return centre + d * self.small, n[:, 0] < self.small


class Revolved:
    """A solid of revolution about z: the (r, z) segments thickened by ``wall`` / 2."""

    def __init__(self, chains=GOBLET_PROFILE, wall: float = GOBLET_WALL):
        segs = [(a, b) for chain in chains for a, b in zip(chain[:-1], chain[1:])]
        self.a = torch.tensor([s[0] for s in segs], dtype=torch.float64)
        self.b = torch.tensor([s[1] for s in segs], dtype=torch.float64)
        self.t = wall / 2

    def closest(self, p: torch.Tensor):
        p = p.double()
        rxy = p[:, :2].norm(dim=-1)
        q = torch.stack([rxy, p[:, 2]], 1)                                         # [N, 2]
        a, b = self.a.to(p.device), self.b.to(p.device)
        ab = b - a
        u = (((q[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1)).clamp(0, 1)      # [N, S]
        foot = a + u[..., None] * ab
        dist = (q[:, None] - foot).norm(dim=-1)
        best = dist.argmin(1)
        rows = torch.arange(len(q), device=p.device)
        s, d = foot[rows, best], dist[rows, best]
        away = torch.where((d > 1e-12)[:, None], (q - s) / d.clamp_min(1e-12)[:, None],
                           torch.tensor([0.0, 1.0], dtype=torch.float64, device=p.device))
        c2 = s + away * self.t                                                     # the closest point in (r, z)
        radial = torch.where((rxy > 1e-12)[:, None], p[:, :2] / rxy.clamp_min(1e-12)[:, None],
                             torch.tensor([1.0, 0.0], dtype=torch.float64, device=p.device))
        return torch.cat([radial * c2[:, :1], c2[:, 1:]], 1).float(), d < self.t


# ------------------------------------------------------------------------------------------ meshes


class ClosedMesh:
    """A closed, consistently wound triangle mesh (vertices [V,3], faces [F,3]); see the module docstring."""

    def __init__(self, vertices, faces, device="cpu", max_edge: float = 0.008, cover_edge: float = 0.004):
        import trimesh.remesh
        from scipy.spatial import cKDTree

        # small triangles keep the grid's candidate lists short (the surface is the same)
        vertices, faces = trimesh.remesh.subdivide_to_size(np.asarray(vertices), np.asarray(faces), max_edge)
        # a cover of the surface within cover_edge: the KD-tree's distance minus it bounds the true one from below
        cover, _ = trimesh.remesh.subdivide_to_size(vertices, faces, cover_edge)
        self.tree, self.cover = cKDTree(cover), cover_edge
        v = torch.as_tensor(np.asarray(vertices), dtype=torch.float64, device=device)
        f = torch.as_tensor(np.asarray(faces), dtype=torch.int64, device=device)
        tri = v[f]
        self.v32 = v.float()
        self.tree_faces = cKDTree(tri.mean(1).cpu().numpy())
        fn = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        fn = fn / fn.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        self.face_n = fn
        # angle-weighted vertex pseudo-normals
        vn = torch.zeros_like(v)
        for k in range(3):
            e1 = tri[:, (k + 1) % 3] - tri[:, k]
            e2 = tri[:, (k + 2) % 3] - tri[:, k]
            cos = (e1 * e2).sum(-1) / (e1.norm(dim=-1) * e2.norm(dim=-1)).clamp_min(1e-30)
            vn.index_add_(0, f[:, k], fn * torch.acos(cos.clamp(-1, 1))[:, None])
        self.vert_n = vn
        # edge pseudo-normals: the sum of the two faces' normals, per face edge k (corner k to k + 1)
        n_v = v.shape[0]
        lo = torch.minimum(f, f.roll(-1, 1))
        hi = torch.maximum(f, f.roll(-1, 1))
        key = (lo * n_v + hi).reshape(-1)
        uniq, inv = torch.unique(key, return_inverse=True)
        edge_sum = torch.zeros(len(uniq), 3, dtype=torch.float64, device=device).index_add_(
            0, inv, fn.repeat_interleave(3, 0))
        self.edge_n = edge_sum[inv].reshape(-1, 3, 3)                               # [F, edge k, 3]
        self.faces = f

    def distance_below(self, p: torch.Tensor) -> torch.Tensor:
        """A lower bound of each point's distance to the surface (cheap: pruning only)."""
        d, _ = self.tree.query(p.cpu().double().numpy(), workers=-1)
        return torch.as_tensor(d - self.cover, dtype=torch.float32, device=p.device)

    def closest(self, p: torch.Tensor, k: int = 8):
        d, near = self.tree_faces.query(p.cpu().double().numpy(), k=k, workers=-1)
        near = torch.as_tensor(near, device=p.device)
        far = torch.as_tensor(d[:, 0] > 1.0, device=p.device)        # beyond the search: not near the surface
        near = near.clamp_max(len(self.faces) - 1)
        tri = self.v32[self.faces[near.reshape(-1)]]                   # [N K, 3, 3]
        pk = p.float().repeat_interleave(k, 0)
        pts, bary, dist = closest_on_triangles(pk, tri[:, 0], tri[:, 1], tri[:, 2])
        best = dist.reshape(-1, k).argmin(1)
        rows = torch.arange(len(p), device=p.device) * k + best
        q, b, face = pts[rows], bary[rows], near.reshape(-1)[rows]
        zero = b < 1e-6
        nz = zero.sum(-1)
        n = self.face_n[face].clone()
        on_edge = nz == 1                                  # the edge opposite the zero corner: corners j+1, j+2
        edge_k = (zero.int().argmax(-1) + 1) % 3
        n = torch.where(on_edge[:, None], self.edge_n[face, edge_k], n)
        corner = (~zero).int().argmax(-1)
        n = torch.where((nz >= 2)[:, None], self.vert_n[self.faces[face, corner]], n)
        inside = ((p.double() - q.double()) * n).sum(-1) < 0
        return torch.where(far[:, None], torch.full_like(q, 1e3), q).float(), inside & ~far


def make_shape(name: str, device="cpu"):
    if name == "sphere":
        return Sphere()
    if name == "torus":
        return Torus()
    if name == "goblet":
        return Revolved()
    if name in ("nut", "bunny"):
        v, f = prepare_source(name)
        return ClosedMesh(v, f, device)
    raise KeyError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")


# ------------------------------------------------------------------------------------------ the O-Voxel

CHUNK = 1 << 19


def closest_chunks(shape, p: torch.Tensor):
    """``shape.closest`` in chunks (bounded temporaries)."""
    qs, ins = [], []
    for a in range(0, len(p), CHUNK):
        q, inside = shape.closest(p[a:a + CHUNK])
        qs.append(q.float())
        ins.append(inside)
    if not qs:
        return p.new_zeros(0, 3), torch.zeros(0, dtype=torch.bool, device=p.device)
    return torch.cat(qs), torch.cat(ins)


def band_voxels(shape, res: int, device="cpu", start: int = 16):
    """int64 [M, 3] coordinates of the res^3 voxels whose centres lie within one voxel of the surface, with the
    closest surface points [M, 3] of their centres: cells refined coarse to fine, a cell kept while its centre lies
    within its half diagonal (plus the band) of the surface."""
    level = start
    idx = torch.arange(level, device=device)
    cells = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)
    kids = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], device=device)
    below = getattr(shape, "distance_below", None)
    while True:
        centre = (cells.float() + 0.5) / level - 0.5
        reach = 1.0 / res if level == res else math.sqrt(3) / 2 / level + 1.0 / res + 1e-6
        if below is not None:                              # a cheap bound first; the exact distance at the end
            near = below(centre) < reach
            cells, centre = cells[near], centre[near]
        if level == res or below is None:
            q, _ = closest_chunks(shape, centre)
            keep = (q - centre).norm(dim=-1) < reach
            if level == res:
                return cells[keep], q[keep]
            cells = cells[keep]
        cells = (cells[:, None] * 2 + kids).reshape(-1, 3)
        level *= 2


def perfect_ovoxel(shape, res: int, device="cpu") -> tuple[MeshWithVoxel, dict]:
    """(the ``MeshWithVoxel`` of the module docstring, {"voxels", "faces", "seconds"})."""
    import time

    if res & (res - 1):
        raise ValueError(f"res must be a power of two, got {res}")
    t0 = time.perf_counter()
    coords, q = band_voxels(shape, res, device)
    dual = (q + 0.5) * res - coords.float()
    # corners of each voxel's three dual-grid edges: edge a runs from c + 1 with c_a on axis a to c + 1
    plus = coords + 1
    starts = []
    for a in range(3):
        s = plus.clone()
        s[:, a] = coords[:, a]
        starts.append(s)
    corners = torch.cat([plus, *starts])
    key = (corners[:, 0] * (res + 1) + corners[:, 1]) * (res + 1) + corners[:, 2]
    uniq, inv = torch.unique(key, return_inverse=True)
    pts = torch.stack([uniq // ((res + 1) ** 2), (uniq // (res + 1)) % (res + 1), uniq % (res + 1)], 1)
    _, inside = closest_chunks(shape, pts.float() / res - 0.5)
    at = inside[inv].reshape(4, -1)
    flags = torch.stack([at[1 + a] != at[0] for a in range(3)], 1)
    v, f = flexible_dual_grid_to_mesh(coords.int(), dual, flags, None, res)
    mesh = MeshWithVoxel(v, f, coords.int(), res, truth(q).to(device))
    return mesh, {"voxels": int(len(coords)), "faces": int(f.shape[0]), "seconds": round(time.perf_counter() - t0, 2)}
