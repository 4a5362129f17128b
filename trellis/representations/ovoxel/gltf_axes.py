"""The O-Voxel mesh (z-up) in glTF's frame (y-up): (x, y, z) -> (x, z, -y) for positions and normals, v -> 1 - v
for texture coordinates (TRELLIS2_FACTS.md §12.7). The rotation is the one the v1 export uses (core.axes)."""
from __future__ import annotations

import numpy as np
import torch

from ...core.axes import Z_UP_TO_Y_UP

__all__ = ["to_gltf_frame"]


def _rotate(v):
    if isinstance(v, torch.Tensor):
        return v @ torch.as_tensor(Z_UP_TO_Y_UP, dtype=v.dtype, device=v.device)
    v = np.asarray(v)
    return (v @ Z_UP_TO_Y_UP).astype(v.dtype, copy=False)


def to_gltf_frame(vertices, normals=None, uvs=None):
    """(vertices, normals, uvs) in glTF's frame; torch tensors or numpy arrays, each kept in its type and dtype
    (None stays None)."""
    out_uv = None
    if uvs is not None:
        out_uv = uvs.clone() if isinstance(uvs, torch.Tensor) else np.array(uvs, copy=True)
        out_uv[:, 1] = 1 - out_uv[:, 1]
    return _rotate(vertices), None if normals is None else _rotate(normals), out_uv
