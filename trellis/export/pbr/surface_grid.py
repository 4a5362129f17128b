"""The closest point of a dense triangle mesh to many points, in PyTorch on the mesh's device: a hash of the
triangles by grid cell, searched in widening rings.

Level k has cubic cells of side ``h_k = cell * 2**k``; every triangle is listed in each cell its bounding box
meets (a sorted array of (cell key, face): no Python loop over faces). A point at level k looks at the 2x2x2
block of cells around it, which holds every triangle that comes within h_k / 2 of it (a triangle listed in several
of those cells is taken once): a closest point found within that distance is the true closest point; the points
left over try the next level, with cells twice as large. Points that no level settles keep the nearest candidate
any level found (``exact`` False), or none. Candidates are evaluated in chunks (``CANDIDATE_CHUNK``) with
``triangle_distance.closest_on_triangles``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ...core.callbacks import check
from .triangle_distance import closest_on_triangles

__all__ = ["CANDIDATE_CHUNK", "LIST_CHUNK", "SurfaceHit", "SurfaceGrid"]

# (point, triangle) pairs evaluated at once (~200 bytes of temporaries each).
CANDIDATE_CHUNK = 1 << 22
# Faces whose cells are listed at once when a level is built (~100 bytes of temporaries per listed cell).
LIST_CHUNK = 1 << 20
_BLOCK = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.long)


class SurfaceHit(NamedTuple):
    """Per query point: the closest point [Q,3], its face [Q] (-1: none found), barycentrics [Q,3] in that face's
    corners, and whether it is proven closest [Q] (found within the searched radius)."""
    point: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    exact: torch.Tensor


class _Level:
    """Triangles listed by the cells of side ``h`` their bounding boxes meet."""

    def __init__(self, lo_box: torch.Tensor, hi_box: torch.Tensor, origin: torch.Tensor, h: float,
                 chunk: int = LIST_CHUNK):
        self.h, self.origin = h, origin
        self.lo = torch.floor((lo_box - origin) / h).int()      # int32 (and the faces below): half the memory
        hi = torch.floor((hi_box - origin) / h).int()
        self.dims = hi.amax(0).long() + 2
        keys, faces = [], []
        for a in range(0, len(self.lo), chunk):               # listed by chunks of faces: bounded temporaries
            key, face = self._listed(self.lo[a:a + chunk], hi[a:a + chunk])
            keys.append(key)
            faces.append((face + a).int())
        del hi
        key = torch.cat(keys)
        del keys
        self.keys, order = torch.sort(key, stable=True)
        del key
        self.faces = torch.cat(faces)[order]

    def _listed(self, lo: torch.Tensor, hi: torch.Tensor):
        """(cell key, face row) of every cell each face's box [lo, hi] meets, face by face."""
        span = (hi - lo + 1).long()
        count = span.prod(-1)
        face = torch.repeat_interleave(torch.arange(len(lo), device=lo.device), count)
        first = torch.cumsum(count, 0) - count
        r = torch.arange(face.shape[0], device=lo.device) - first[face]       # rank inside the face's box
        sy, sz = span[face, 1], span[face, 2]
        corner = lo[face].long()
        key = ((corner[:, 0] + r // (sy * sz)) * self.dims[1] + corner[:, 1] + (r // sz) % sy) * self.dims[2]
        return key + corner[:, 2] + r % sz, face

    def _key(self, cell: torch.Tensor) -> torch.Tensor:
        return (cell[..., 0] * self.dims[1] + cell[..., 1]) * self.dims[2] + cell[..., 2]

    def candidates(self, points: torch.Tensor):
        """(query row, face) of every triangle listed in the 2x2x2 cells around each point, each pair once (from
        the first cell of the block its box meets)."""
        corner = torch.floor((points - self.origin) / self.h - 0.5).long()
        base = corner[:, None, :] + _BLOCK.to(points.device)
        inside = ((base >= 0) & (base < self.dims)).all(-1)
        key = self._key(base.clamp(min=0))
        start = torch.searchsorted(self.keys, key)
        end = torch.searchsorted(self.keys, key, right=True)
        n = torch.where(inside, end - start, torch.zeros_like(start)).reshape(-1)
        cell = torch.repeat_interleave(torch.arange(n.shape[0], device=points.device), n)
        first = torch.cumsum(n, 0) - n
        slot = torch.repeat_interleave(start.reshape(-1) - first, n) + torch.arange(cell.numel(), device=points.device)
        row, face = cell // 8, self.faces[slot].long()
        # the block cell where the face's box enters the block: per axis, the block's first unless the box starts
        # past it; as a block index (x bit 2, y bit 1, z bit 0, _BLOCK's order)
        later = (self.lo[face] > corner.int()[row]).int()
        once = (later[:, 0] * 4 + later[:, 1] * 2 + later[:, 2]) == cell % 8
        return row[once], face[once]


class SurfaceGrid:
    """The triangles of ``vertices`` [V,3], ``faces`` [F,3] (on one device) hashed for ``closest``; ``cell``: the
    first level's cell side (default the mean edge length: most points settle there, each against a few dozen
    triangles), ``levels``: how many doublings are searched after it."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, cell: float | None = None, levels: int = 4,
                 list_chunk: int = LIST_CHUNK):
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
            raise ValueError(f"SurfaceGrid needs a non-empty [F, 3] faces array, got {tuple(faces.shape)}")
        self.v = vertices.float()
        self.f = faces.long()
        corners = self.v[self.f]
        if cell is None:
            cell = float((corners - corners.roll(1, dims=1)).norm(dim=-1).mean())
        self.cell = max(float(cell), 1e-9)
        self.lo_box, self.hi_box = corners.amin(1), corners.amax(1)
        self.origin = self.lo_box.amin(0) - 4 * self.cell * 2 ** levels
        self.levels, self.list_chunk = int(levels), int(list_chunk)
        self._built: dict[int, _Level] = {}

    def level(self, k: int) -> _Level:
        if k not in self._built:
            self._built[k] = _Level(self.lo_box, self.hi_box, self.origin, self.cell * 2 ** k, self.list_chunk)
        return self._built[k]

    def closest(self, points: torch.Tensor, cancel=None) -> SurfaceHit:
        """The closest surface point to each of ``points`` [Q,3] (see the module docstring)."""
        q = points.to(self.v.device, torch.float32)
        n = q.shape[0]
        best_d = torch.full((n,), float("inf"), device=q.device)
        best_f = torch.full((n,), -1, dtype=torch.long, device=q.device)
        best_pt, best_bary = q.clone(), torch.zeros(n, 3, device=q.device)
        exact = torch.zeros(n, dtype=torch.bool, device=q.device)
        todo = torch.arange(n, device=q.device)
        for k in range(self.levels + 1):
            if todo.numel() == 0:
                break
            lvl = self.level(k)
            for a in range(0, todo.numel(), max(1, CANDIDATE_CHUNK // 64)):
                check(cancel)
                idx = todo[a:a + CANDIDATE_CHUNK // 64]
                self._search(lvl, q, idx, best_d, best_f, best_pt, best_bary)
            settled = best_d[todo] <= (lvl.h / 2) ** 2
            exact[todo[settled]] = True
            todo = todo[~settled]
        return SurfaceHit(best_pt, best_f, best_bary, exact)

    def _search(self, lvl: _Level, q, idx, best_d, best_f, best_pt, best_bary) -> None:
        """Fold the candidates of points ``idx`` at one level into the running best (in place)."""
        row, face = lvl.candidates(q[idx])
        for a in range(0, row.numel(), CANDIDATE_CHUNK):
            r, f = row[a:a + CANDIDATE_CHUNK], face[a:a + CANDIDATE_CHUNK]
            tri = self.v[self.f[f]]
            pt, bary, d = closest_on_triangles(q[idx[r]], tri[:, 0], tri[:, 1], tri[:, 2])
            # per point, the candidate with the smallest distance (ties: the first in order)
            target = idx[r]
            m = torch.full_like(best_d, float("inf")).scatter_reduce(0, target, d, "amin")
            win = (d == m[target]) & (d < best_d[target])
            pos = torch.full_like(best_f, r.numel()).scatter_reduce(
                0, target[win], torch.nonzero(win)[:, 0], "amin")
            got = torch.nonzero(pos < r.numel())[:, 0]
            j = pos[got]
            best_d[got], best_f[got], best_pt[got], best_bary[got] = d[j], f[j], pt[j], bary[j]
