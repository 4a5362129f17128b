"""Vertex clustering of a dense O-Voxel mesh on a uniform grid (quadric-placed representatives), in PyTorch on the
mesh's device: a multi-million-face dual-grid mesh reduced to a face count in linear time (``reduce``).

Every vertex falls in the grid cell of side ``cell`` that holds it; the vertices of a cell become one, placed where
the summed area-weighted plane quadrics of the faces around them are smallest (the cell's mean where the quadric is
flat along a direction), and kept within half a cell of the cell. A face whose corners land in fewer than three cells
disappears; faces landing on the same three cells are kept once. The geometric error is therefore bounded by the cell
(one and a half cells' diagonal at most), whatever the input: noise, open sheets, non-manifold fans and specks of a
random-weight decoder included, where an edge-collapse decimator stalls on the open borders.

``cluster_to_faces`` finds the cell that lands on a face count (a secant search in log cell / log faces: the count
of a surface goes as 1 / cell^2); each try costs one sort of the vertices' cell keys and one of the faces' keys.
Everything is plain PyTorch (sorts, scatter-adds and a closed-form 3x3 solve; the sorts numpy's on the CPU,
``sorting``), the same code on a GPU and on the CPU.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ...core.callbacks import check
from ...core.segment_sum import index_add_in_order_
from .sorting import count_distinct, first_of_each, unique_inverse

__all__ = ["MAX_SEARCH_STEPS", "LOOSE_AFTER", "QUADRIC_CHUNK", "ClusterResult", "Clustering", "cell_keys",
           "clustered_faces", "cluster_vertices", "cluster_to_faces", "search_cell",
           "representatives"]

# Cell sizes tried by ``cluster_to_faces`` at most (it usually lands in two to four).
MAX_SEARCH_STEPS = 12
# Tries after which ``cluster_to_faces`` accepts a count within its ``loose`` tolerance.
LOOSE_AFTER = 4
# Faces whose quadrics are made at once (~250 bytes of temporaries each).
QUADRIC_CHUNK = 1 << 21
# The quadric's regularisation towards the cluster's mean, a share of its mean eigenvalue (a flat or straight patch
# fixes the point across it, not along it).
_FLAT = 1e-3


class ClusterResult(NamedTuple):
    """``vertices`` [C,3] float32, ``faces`` [F,3] int64 (on the input's device); ``cell`` the cell side used;
    ``tries`` how many cell sizes were counted to choose it."""
    vertices: torch.Tensor
    faces: torch.Tensor
    cell: float
    tries: int


def cell_keys(vertices: torch.Tensor, cell: float, origin: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(cluster id per vertex [V] int64, number of clusters): the occupied cells of side ``cell`` from ``origin``,
    numbered in the order of their x-major linear key."""
    ijk = torch.floor((vertices - origin) / cell).long().clamp_(min=0)
    dims = ijk.amax(0) + 1
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    uniq, inverse = unique_inverse(key)
    return inverse, int(uniq.shape[0])


def _triangle_keys(cluster: torch.Tensor, faces: torch.Tensor, n_clusters: int):
    """(the faces over the clusters with three distinct clusters [K,3], one int64 key per set of three clusters)."""
    if cluster.device.type == "cpu":                 # numpy's gathers: several times torch's on the CPU
        c = cluster.numpy()[faces.numpy()]
        cf = torch.from_numpy(c[(c[:, 0] != c[:, 1]) & (c[:, 1] != c[:, 2]) & (c[:, 2] != c[:, 0])])
    else:
        cf = cluster[faces]
        cf = cf[(cf[:, 0] != cf[:, 1]) & (cf[:, 1] != cf[:, 2]) & (cf[:, 2] != cf[:, 0])]
    s, _ = torch.sort(cf, dim=1)
    if n_clusters < (1 << 21):                       # three ids in one int64
        return cf, (s[:, 0] * n_clusters + s[:, 1]) * n_clusters + s[:, 2]
    _, pair = unique_inverse(s[:, 0] * n_clusters + s[:, 1])      # the first two numbered first
    return cf, pair * n_clusters + s[:, 2]


def clustered_faces(cluster: torch.Tensor, faces: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """The faces over the clusters: those with three distinct clusters, each set of three cells once (the first
    face's winding kept), in the order of their first face."""
    cf, key = _triangle_keys(cluster, faces, n_clusters)
    return cf[first_of_each(key)] if cf.shape[0] else cf


def representatives(vertices, faces, cluster, n_clusters, cell, origin):
    """[C,3] float32: per cluster the point minimising its faces' plane quadrics (area-weighted), regularised
    towards the cluster's mean (a flat or straight patch fixes the point across it, not along it), kept within half
    a cell of its cell. ``cell``: one side for all, or a float64 [C,1] tensor of each cluster's own."""
    v = vertices.double()
    dev = v.device
    ones = torch.ones(v.shape[0], 1, dtype=torch.float64, device=dev)
    mass = index_add_in_order_(torch.zeros(n_clusters, 4, dtype=torch.float64, device=dev), cluster,
                               torch.cat([v, ones], 1))
    mean = mass[:, :3] / mass[:, 3:]
    acc = torch.zeros(n_clusters, 9, dtype=torch.float64, device=dev)
    for a in range(0, faces.shape[0], QUADRIC_CHUNK):
        fc = faces[a:a + QUADRIC_CHUNK]
        p0 = v[fc[:, 0]]
        cross = torch.cross(v[fc[:, 1]] - p0, v[fc[:, 2]] - p0, dim=1)
        # per face, area-weighted (w = |cross| / 2, n = cross / |cross|): the 6 entries of A = w n n^T and
        # b = w (n . p0) n, i.e. cross cross^T / (2 |cross|) and (cross . p0) cross / (2 |cross|)
        scale = 0.5 / cross.norm(dim=1).clamp(min=1e-300)
        cx, cy, cz = (cross * scale.sqrt()[:, None]).unbind(1)
        d = (cross * p0).sum(1) * scale
        q = torch.stack([cx * cx, cx * cy, cx * cz, cy * cy, cy * cz, cz * cz,
                         d * cross[:, 0], d * cross[:, 1], d * cross[:, 2]], 1)
        for k in range(3):                              # each face's quadric to each corner's cluster
            index_add_in_order_(acc, cluster[fc[:, k]], q)
    axx, axy, axz, ayy, ayz, azz = acc[:, :6].unbind(1)
    # solve (A + lam I) s = b - A mean by the adjugate (closed form: no batched LAPACK call)
    lam = _FLAT * (axx + ayy + azz) / 3 + 1e-300
    axx, ayy, azz = axx + lam, ayy + lam, azz + lam
    mx, my, mz = mean.unbind(1)
    rx = acc[:, 6] - (acc[:, 0] * mx + acc[:, 1] * my + acc[:, 2] * mz)
    ry = acc[:, 7] - (acc[:, 1] * mx + acc[:, 3] * my + acc[:, 4] * mz)
    rz = acc[:, 8] - (acc[:, 2] * mx + acc[:, 4] * my + acc[:, 5] * mz)
    c00, c01, c02 = ayy * azz - ayz * ayz, axz * ayz - axy * azz, axy * ayz - axz * ayy
    c11, c12, c22 = axx * azz - axz * axz, axy * axz - axx * ayz, axx * ayy - axy * axy
    det = (axx * c00 + axy * c01 + axz * c02).clamp(min=1e-300)
    step = torch.stack([c00 * rx + c01 * ry + c02 * rz, c01 * rx + c11 * ry + c12 * rz,
                        c02 * rx + c12 * ry + c22 * rz], 1) / det[:, None]
    x = mean + step
    # within half a cell of the cluster's cell (the mean's cell: a cell's vertices are inside it)
    lo = torch.floor((mean - origin.double()) / cell) * cell + origin.double()
    x = torch.minimum(torch.maximum(x, lo - 0.5 * cell), lo + 1.5 * cell)
    return x.float()


def cluster_vertices(vertices: torch.Tensor, faces: torch.Tensor, cell: float,
                     origin: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices [C,3] float32, faces [F,3] int64) of the mesh clustered on the grid of side ``cell`` from
    ``origin`` (default: the vertices' minimum); see the module docstring. Vertices no kept face uses are dropped."""
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError("cluster_vertices needs vertices [V,3] and faces [F,3]")
    if not cell > 0:
        raise ValueError(f"the cell size must be positive (got {cell})")
    v, f = vertices.float(), faces.long()
    if f.shape[0] == 0:
        return v[:0], f
    origin = v.amin(0) if origin is None else origin.to(v)
    return _assemble(v, f, _Try(v, f, cell, origin), origin)


class _Try:
    """One cell size counted: the vertices' clusters and the kept faces' keys."""

    def __init__(self, v, f, cell, origin):
        self.cell = cell
        self.cluster, self.n = cell_keys(v, cell, origin)
        self.faces, self.keys = _triangle_keys(self.cluster, f, self.n)
        self.count = count_distinct(self.keys)


class Clustering:
    """A counted cell size, its faces over the clusters made at once and its vertices placed when asked
    (``vertices``): a caller that refines the clustering (``refine``) never needs them."""

    def __init__(self, v, f, t: "_Try | None", origin, tries: int):
        self._v, self._f, self._t, self._origin = v, f, t, origin
        self.tries = tries
        self.cell = t.cell if t is not None else 0.0
        self._used = None
        if t is None:                               # the mesh as it is
            self.faces = f
        elif t.count == 0:
            self.faces = f[:0]
        else:
            used, remap = unique_inverse(t.faces[first_of_each(t.keys)].reshape(-1))
            self._used, self.faces = used, remap.reshape(-1, 3)

    def vertices(self) -> torch.Tensor:
        """[C,3] float32: the clusters' points (``representatives``) the faces index."""
        t = self._t
        if t is None:
            return self._v
        if self._used is None:
            return self._v[:0]
        return representatives(self._v, self._f, t.cluster, t.n, t.cell, self._origin)[self._used]

    def result(self) -> ClusterResult:
        return ClusterResult(self.vertices(), self.faces, self.cell, self.tries)


def _assemble(v, f, t: _Try, origin):
    """The clustered mesh of a counted try (its faces each once, its vertices placed, unused ones dropped)."""
    c = Clustering(v, f, t, origin, 0)
    return c.vertices(), c.faces


def cluster_to_faces(vertices: torch.Tensor, faces: torch.Tensor, target: int, tolerance: float = 0.04,
                     min_cell: float = 0.0, cancel=None, loose: float | None = None) -> ClusterResult:
    """``cluster_vertices`` at the cell whose face count is within ``tolerance`` of ``target`` (within ``loose``
    after LOOSE_AFTER tries; else the closest found in MAX_SEARCH_STEPS tries; never a cell below ``min_cell``, e.g.
    the voxel, where clustering changes nothing). A mesh with at most ``target`` faces comes back as it is
    (``cell`` 0). The count is not smooth in the cell where the mesh has structure on the grid (a random-weight
    decoder's sheets one voxel thick, every 16 voxels, that a cell boundary cuts or not): ``loose`` ends such a
    search early."""
    return search_cell(vertices, faces, target, tolerance, min_cell, cancel, loose).result()


def search_cell(vertices: torch.Tensor, faces: torch.Tensor, target: int, tolerance: float = 0.04,
                min_cell: float = 0.0, cancel=None, loose: float | None = None) -> Clustering:
    """``cluster_to_faces``'s search, its vertices not placed yet (``Clustering.vertices``)."""
    v, f = vertices.float(), faces.long()
    n_faces = int(f.shape[0])
    if target < 1:
        raise ValueError(f"the face target must be at least 1 (got {target})")
    if n_faces <= target:
        return Clustering(v, f, None, None, 0)
    origin = v.amin(0)
    # a surface of F faces at its own edge length e: F(cell) ~ F (e / cell)^2; start from the mean edge
    edge = float((v[f[:, 1]] - v[f[:, 0]]).norm(dim=1).mean())
    cell = max(min_cell, edge * math.sqrt(n_faces / target), 1e-9)
    below, above = 0.0, math.inf        # the largest cell with too many faces, the smallest with too few
    best = last = None
    tries = 0
    for tries in range(1, MAX_SEARCH_STEPS + 1):
        check(cancel)
        now = _Try(v, f, cell, origin)
        got = now.count
        if best is None or abs(got - target) < abs(best.count - target):
            best = now
        if abs(got - target) <= (tolerance if loose is None or tries < LOOSE_AFTER else loose) * target:
            break
        if got > target:
            below = max(below, cell)
        else:
            above = min(above, cell)
            if cell <= min_cell:          # too few faces even at the smallest cell allowed
                break
        # the count's exponent in the cell from the last two tries (a surface's: -2), within reason
        slope = -2.0
        if last is not None and got > 0 and last[1] > 0 and last[0] != cell and last[1] != got:
            slope = min(-0.5, max(-4.0, math.log(got / last[1]) / math.log(cell / last[0])))
        guess = cell * (got / target) ** (-1.0 / slope) if got > 0 else cell / 2
        if not below < guess < above:     # the secant left the bracket: bisect it in log cell
            guess = math.sqrt(below * above) if below > 0 and math.isfinite(above) else (
                below * 2 if below > 0 else above / 2)
        last, now = (cell, got), None
        cell = max(min_cell, guess, 1e-12)
    return Clustering(v, f, best, origin, tries)
