"""Array conversions and progress reports shared by the export's stages (numpy in, float32 / int64 out)."""
from __future__ import annotations


import numpy as np

from ..core.callbacks import StageProgress

__all__ = ["report", "to_numpy", "output", "drop_unreferenced"]


def report(progress: StageProgress, stage: str, i: int, n: int) -> None:
    """``progress(stage, i, n)`` when a callback was given."""
    if progress is not None:
        progress(stage, i, n)


def to_numpy(vertices, faces, vertex_dtype=np.float64):
    """(``vertex_dtype`` [V,3], int64 [F,3]) contiguous numpy arrays of torch or numpy inputs (the inputs themselves
    where they are that already)."""
    if hasattr(vertices, "detach"):
        vertices = vertices.detach().cpu().numpy()
    if hasattr(faces, "detach"):
        faces = faces.detach().cpu().numpy()
    v = np.ascontiguousarray(np.asarray(vertices), dtype=vertex_dtype).reshape(-1, 3)
    f = np.ascontiguousarray(np.asarray(faces), dtype=np.int64).reshape(-1, 3)
    return v, f


def output(vertices, faces):
    """The stages' result types: contiguous float32 vertices [V,3] and int64 faces [F,3]."""
    return (np.ascontiguousarray(vertices, dtype=np.float32),
            np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3))


def drop_unreferenced(vertices, faces):
    """(vertices, faces) without the vertices no face uses, faces renumbered."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces]
