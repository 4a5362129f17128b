"""Holes of the decoded O-Voxel mesh closed up to a perimeter in world units (TRELLIS2_FACTS.md §11: boundary loops
of at most 0.03 are triangulated), with our hole filler (``cleanup.holes.fill_holes``) doing the triangulation.

The mesh (the export's, reduced to about its face target: ``reduce``) may have millions of faces and few holes, so
the boundary is found on the mesh's device (an edge used by one face) and only the faces touching a boundary vertex
(the holes' rings) go to the numpy filler. A ring's own outer rim is no hole of the mesh: its edges never touch a
boundary vertex (both faces of an inner edge at such a vertex are in the ring), so the loops kept are those whose
vertices are all on the mesh's boundary, with a perimeter within the limit. The rings are wound consistently first
(``orientation``: the dual grid's faces are not), which the filler needs to chain a loop; patches of loops not kept
are dropped.
"""
from __future__ import annotations

import numpy as np
import torch

from ...core.callbacks import StageProgress, check
from ..arrays import report
from ..options import MAX_HOLE_PERIMETER
from ..cleanup.holes import boundary_cycles, boundary_with_faces, fill_holes
from .manifold import edge_keys
from .orientation import unify_orientation
from .sorting import distinct_counts, unique_inverse

__all__ = ["MAX_HOLE_PERIMETER", "boundary_vertex_mask", "fill_small_holes"]



def boundary_vertex_mask(faces: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """bool [V]: vertices on an edge that only one face uses (on the faces' device)."""
    key, _ = edge_keys(faces, n_vertices)
    # the edges used once, from the sorted keys alone (no per-half-edge inverse): their two ends decoded
    distinct, count = distinct_counts(key)
    lone = distinct[count == 1]
    mask = torch.zeros(n_vertices, dtype=torch.bool, device=faces.device)
    mask[lone // n_vertices] = True
    mask[lone % n_vertices] = True
    return mask


def _kept_loops(v, f, on_boundary, max_perimeter):
    """(vertices of the loops to close (and of no other loop), their longest edge count, how many, the ring mesh's
    boundary as ``fill_holes`` takes it: bnd, bnd_face, succ, cycle) of the ring mesh."""
    bnd, bnd_face = boundary_with_faces(f, len(v))
    if len(bnd) == 0:
        return np.zeros(len(v), dtype=bool), 0, 0, None
    succ, cycle = boundary_cycles(bnd, len(v))
    found = bnd, bnd_face, succ, cycle
    on = np.nonzero(cycle >= 0)[0]
    if len(on) == 0:
        return np.zeros(len(v), dtype=bool), 0, 0, found
    _, loop = np.unique(cycle[on], return_inverse=True)
    n = int(loop.max()) + 1
    e = bnd[on]
    perimeter = np.bincount(loop, np.linalg.norm(v[e[:, 1]] - v[e[:, 0]], axis=1), n)
    real = np.bincount(loop, ~on_boundary[e[:, 0]], n) == 0        # the mesh's own hole, not a ring's rim
    length = np.bincount(loop, minlength=n)
    keep = real & (perimeter <= max_perimeter) & (length >= 3)
    good = np.zeros(len(v), dtype=bool)
    good[e[keep[loop], 0]] = True
    good[e[~keep[loop], 0]] = False                                 # a vertex of two loops: only if both close
    return good, int(length[keep].max()) if keep.any() else 0, int(keep.sum()), found


def fill_small_holes(vertices: torch.Tensor, faces: torch.Tensor, max_perimeter: float = MAX_HOLE_PERIMETER,
                     progress: StageProgress = None, cancel=None, info: dict | None = None):
    """(vertices, faces) on their device with every hole of perimeter up to ``max_perimeter`` closed (a patch
    of the hole's own vertices; a centroid fan where none fits adds one vertex). ``info`` gets "holes_filled"
    (the loops given to the filler) and "patch_faces"."""
    info = {} if info is None else info
    info.update(holes_filled=0, patch_faces=0)
    report(progress, "fill_holes", 0, 2)
    check(cancel)
    n_v = vertices.shape[0]
    on_boundary = boundary_vertex_mask(faces, n_v)
    if not bool(on_boundary.any()):
        report(progress, "fill_holes", 2, 2)
        return vertices, faces
    ring_rows = torch.nonzero(on_boundary[faces].any(dim=1))[:, 0]
    ring = faces[ring_rows]
    used, local = unique_inverse(ring.reshape(-1))
    rv = vertices[used].double().cpu().numpy()
    rf = local.reshape(-1, 3).cpu().numpy()
    rf = unify_orientation(rv, rf, outward=False)
    good, max_edges, holes, found = _kept_loops(rv, rf, on_boundary[used].cpu().numpy(), max_perimeter)
    report(progress, "fill_holes", 1, 2)
    check(cancel)
    if max_edges == 0:
        report(progress, "fill_holes", 2, 2)
        return vertices, faces
    v2, f2 = fill_holes(rv, rf, max_edges, cancel=cancel, boundary=found)
    patches = f2[len(rf):]
    old = patches < len(rv)
    ok = np.where(old, good[np.minimum(patches, len(rv) - 1)], True).all(1) & old.sum(1).astype(bool)
    patches = patches[ok]
    # fan centres the kept patches use, appended to the mesh's vertices
    centres = np.unique(patches[patches >= len(rv)])
    to_global = np.concatenate([used.cpu().numpy(), n_v + np.arange(len(centres))])
    remap = np.zeros(len(v2), dtype=np.int64)
    remap[:len(rv)] = np.arange(len(rv))
    remap[centres] = len(rv) + np.arange(len(centres))
    new_faces = torch.as_tensor(to_global[remap[patches]], device=faces.device)
    new_vertices = torch.as_tensor(v2[centres], dtype=vertices.dtype, device=vertices.device)
    info.update(holes_filled=holes, patch_faces=int(len(patches)))
    report(progress, "fill_holes", 2, 2)
    return torch.cat([vertices, new_vertices]), torch.cat([faces, new_faces.to(faces.dtype)])
