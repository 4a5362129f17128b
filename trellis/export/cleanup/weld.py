"""Welding around the decimation: equal vertex positions merged before it (it needs shared vertices to see
connectivity), faces it folded onto the same three vertices cancelled after it."""
from __future__ import annotations

import numpy as np

from ..arrays import drop_unreferenced
from ..rows import row_any, row_min

__all__ = ["merge_duplicate_vertices", "merge_duplicate_vertices_on_device", "cancel_coincident_faces",
           "tidy_decimated", "tidy_decimated_on_device"]


def _nondegenerate(faces):
    """``faces`` [F,3] (numpy or torch) without those that use a vertex twice."""
    return faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]


def merge_duplicate_vertices(vertices, faces):
    """Merge equal vertex positions (-0.0 and 0.0 are equal: every zero becomes 0.0) and drop faces that
    become degenerate. The merged vertices come sorted by x, then y, then z."""
    v = np.asarray(vertices)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        return v, f
    v = v + v.dtype.type(0)        # -0.0 -> 0.0, as the device twin does; otherwise the same values
    order = np.lexsort(v.T[::-1])
    sv = v[order]
    new_group = np.ones(len(v), dtype=bool)
    new_group[1:] = row_any(sv[1:] != sv[:-1])
    group = np.cumsum(new_group) - 1
    remap = np.empty(len(v), dtype=np.int64)
    remap[order] = group
    merged = sv[new_group]
    f = remap[f]
    return merged, _nondegenerate(f)


def merge_duplicate_vertices_on_device(vertices, faces, host: bool = True):
    """``merge_duplicate_vertices`` of torch tensors, on their device, as numpy (float64 [V,3], int64 [F,3]): the
    same arrays, bit for bit. A GPU sorts the rows in milliseconds where numpy's lexsort takes a noticeable
    share of the export's critical path on large meshes (docs/benchmarks/export.md#decimation). ``host=False``:
    the same arrays as tensors on the device instead (float64, int64), for more work there without a host copy."""
    import torch

    v = vertices.detach().reshape(-1, 3)
    if v.dtype not in (torch.float32, torch.float64):
        v = v.double()
    f = faces.detach().reshape(-1, 3).to(device=v.device, dtype=torch.int64)
    if v.shape[0] == 0:
        merged = v.double()
    else:
        # Rows sorted lexicographically (x, then y, then z) and equal rows merged, as the lexsort does; zeros made
        # positive first so that -0.0 and 0.0 merge into the same value on both.
        merged, remap = torch.unique(v + 0.0, dim=0, sorted=True, return_inverse=True)
        merged = merged.double()
        f = remap[f]
        f = _nondegenerate(f)
    return (merged.cpu().numpy(), f.cpu().numpy()) if host else (merged, f)


def cancel_coincident_faces(faces):
    """Faces on the same three vertices: opposite windings cancel in pairs, repeats collapse.

    The decimator sometimes folds a patch into a back-to-back pair of faces (a zero-volume fin
    whose edges are then used four times). Per vertex set the kept result is the net winding:
    nothing for a back-to-back pair, one face otherwise.
    """
    if len(faces) == 0:
        return faces
    # each face turned to start at its smallest vertex (the first one on a tie): the two after it, as columns
    # chosen by where (a gather of rows by computed columns is several times slower)
    f0, f1, f2 = faces[:, 0], faces[:, 1], faces[:, 2]
    first = np.argmin(faces, axis=1)
    r1 = np.where(first == 0, f1, np.where(first == 1, f2, f0))
    r2 = np.where(first == 0, f2, np.where(first == 1, f0, f1))
    sign = np.where(r1 < r2, 1, -1)
    canon = np.stack([row_min(faces), np.minimum(r1, r2), np.maximum(r1, r2)], -1)
    n = int(canon.max()) + 1
    if n < 1 << 21:                 # the three ids in one int64 key: one sort instead of three
        key = (canon[:, 0] * n + canon[:, 1]) * n + canon[:, 2]
        ordered = np.sort(key)
        if not (ordered[1:] == ordered[:-1]).any():
            return faces            # no two faces on the same vertices (the usual case)
        order = np.argsort(key, kind="stable")      # ties by index, as lexsort's
    else:
        order = np.lexsort(canon.T[::-1])
    sc = canon[order]
    start = np.ones(len(sc), dtype=bool)
    start[1:] = row_any(sc[1:] != sc[:-1])
    if start.all():
        return faces
    group = np.cumsum(start) - 1
    net = np.bincount(group, weights=sign[order]).astype(np.int64)
    # Keep the first face of each group whose winding agrees with the net winding.
    agrees = sign[order] == np.sign(net)[group]
    pick = np.zeros(len(sc), dtype=bool)
    cand = np.nonzero(agrees & (net[group] != 0))[0]
    _, first_in_group = np.unique(group[cand], return_index=True)
    pick[cand[first_in_group]] = True
    keep = np.zeros(len(faces), dtype=bool)
    keep[order[pick]] = True
    return faces[keep]


def tidy_decimated(vertices, faces):
    """A decimator's output without degenerate faces, back-to-back pairs (``cancel_coincident_faces``) and the
    vertices left unused; the arrays' types kept."""
    return drop_unreferenced(vertices, cancel_coincident_faces(_nondegenerate(faces)))


def tidy_decimated_on_device(vertices, faces):
    """``tidy_decimated`` of torch tensors (float64 [V,3], int64 [F,3]) on their device, as numpy: the same arrays,
    bit for bit. The usual mesh (no two faces on the same three vertices) is tidied there; one that has some is
    copied out and tidied by ``tidy_decimated`` itself, which decides which face of each group stays."""
    import torch

    f = _nondegenerate(faces)
    if len(f) and _shares_vertex_sets(f, vertices.shape[0]):
        return tidy_decimated(vertices.cpu().numpy(), f.cpu().numpy())
    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    used[f.reshape(-1)] = True
    remap = torch.cumsum(used, 0) - 1
    return vertices[used].cpu().numpy(), remap[f].cpu().numpy()


def _shares_vertex_sets(faces, n: int) -> bool:
    """Whether two of the (torch) ``faces`` (vertex ids below ``n``) use the same three vertices, in any order."""
    import torch

    canon = torch.sort(faces, dim=1).values
    if n < 1 << 21:                 # the three ids in one int64 key: one sort of one column
        key = torch.sort((canon[:, 0] * n + canon[:, 1]) * n + canon[:, 2]).values
        return bool((key[1:] == key[:-1]).any())
    return torch.unique(canon, dim=0).shape[0] < canon.shape[0]
