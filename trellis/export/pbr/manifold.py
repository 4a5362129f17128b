"""Edge topology of a triangle mesh, counted on the faces' device: boundary edges (used by one face) and
non-manifold edges (used by three or more), the two numbers a closed 2-manifold has at zero. The PBR export's
``reduce`` records them before and after each step, so its report says whether a closed input stayed closed; and
``drop_nonmanifold_faces`` opens the fans a step made (the faces over an edge of three or more), for the hole filler
to close again."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .sorting import distinct_counts, unique_counts

__all__ = ["EdgeTable", "edge_keys", "edge_table", "edge_use", "edge_counts", "drop_nonmanifold_faces"]


def _as_torch(faces) -> torch.Tensor:
    return torch.as_tensor(np.asarray(faces)) if isinstance(faces, np.ndarray) else faces


def edge_keys(faces: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, int]:
    """(int64 [3F]: per half-edge (f[0]->f[1], f[1]->f[2], f[2]->f[0], face by face) its undirected edge's key
    min * n + max, n) of int64 faces [F,3] with at least one face; ``n``: the vertex count (default: the count the
    faces use)."""
    n = int(faces.max()) + 1 if n is None else int(n)
    if faces.device.type == "cpu":                  # numpy: several times torch's gathers and temporaries here
        f = faces.numpy().astype(np.int64, copy=False)
        key = np.empty((len(f), 3), dtype=np.int64)
        for j, (a, b) in enumerate(((0, 1), (1, 2), (2, 0))):
            np.multiply(np.minimum(f[:, a], f[:, b]), n, out=key[:, j])
            key[:, j] += np.maximum(f[:, a], f[:, b])
        return torch.from_numpy(key.reshape(-1)), n
    he = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    return torch.minimum(he[:, 0], he[:, 1]) * n + torch.maximum(he[:, 0], he[:, 1]), n


def edge_use(faces) -> torch.Tensor:
    """int64 [3F]: per half-edge (f[0]->f[1], f[1]->f[2], f[2]->f[0], face by face) how many faces use its
    undirected edge."""
    f = _as_torch(faces).long()
    if f.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=f.device)
    inverse, count = unique_counts(edge_keys(f)[0])
    return count[inverse]


class EdgeTable(NamedTuple):
    """A face array's undirected edges: ``keys`` (sorted, each once: lower vertex * ``n`` + higher vertex), ``use``
    (how many half-edges have each), ``n`` (the vertex count the keys are made with)."""
    keys: torch.Tensor
    use: torch.Tensor
    n: int

    def counts(self) -> dict:
        """``edge_counts``'s record."""
        return {"boundary_edges": int((self.use == 1).sum()), "nonmanifold_edges": int((self.use >= 3).sum())}

    def pairs(self) -> torch.Tensor:
        """int64 [E,2]: each edge (lower vertex first), in the keys' order."""
        return torch.stack([self.keys // self.n, self.keys % self.n], 1)


def edge_table(faces) -> EdgeTable:
    """The ``EdgeTable`` of a face array (torch or numpy [F,3]), on its device: one sort of the half-edges' keys
    (no per-half-edge inverse)."""
    f = _as_torch(faces).long()
    if f.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=f.device)
        return EdgeTable(empty, empty, 1)
    key, n = edge_keys(f)
    keys, use = distinct_counts(key)
    return EdgeTable(keys, use, n)


def edge_counts(faces) -> dict:
    """{"boundary_edges", "nonmanifold_edges"} of a face array (torch or numpy [F,3]): 0 and 0 on a closed
    2-manifold (degenerate faces count as they are)."""
    return edge_table(faces).counts()


def drop_nonmanifold_faces(faces: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(faces without those having an edge used by three or more faces, how many were dropped)."""
    f = _as_torch(faces)
    if f.shape[0] == 0:
        return f, 0
    bad = (edge_use(f).reshape(-1, 3) >= 3).any(1)
    return f[~bad], int(bad.sum())
