"""Sparse down-sampling, up-sampling and subdivision (spec §3.10).

Down-sampling by 2 merges children into parents (unique parents sorted by (batch, x, y, z)). The
reference's "mean" divides the children's sum by (n + 1), because its scatter target starts at zero
and counts as an element; the official SLat flow was trained that way, so we do the same. The
child->parent map is remembered on the parent tensor so that the paired up-sampling restores the
original coordinates, row order and cached maps exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .tensor import COORD_BITS, SparseTensor, pack_keys


def _unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    mask = (1 << COORD_BITS) - 1
    cols = [(keys >> (COORD_BITS * s)) & mask for s in (3, 2, 1, 0)]
    return torch.stack(cols, dim=1).int()


def downsample(x: SparseTensor, factor: int = 2) -> SparseTensor:
    key = ("downsample", factor, x.device)
    plan = x.cache.get(key)
    if plan is None:           # parent coordinates and the child->parent map, once per coordinate set
        parent = x.coords.clone()
        parent[:, 1:] = torch.div(parent[:, 1:], factor, rounding_mode="floor")
        keys, inverse = torch.unique(pack_keys(parent), return_inverse=True)   # sorted = lexicographic
        divisor = torch.bincount(inverse, minlength=keys.shape[0]).to(torch.float32) + 1
        coords = _unpack_keys(keys)
        layout = SparseTensor._compute_layout(coords)
        parent_cache = {("upsample", factor): (x.coords, x.layout, x.cache, inverse)}
        plan = x.cache[key] = (coords, layout, parent_cache, inverse, divisor)
    coords, layout, parent_cache, inverse, divisor = plan
    acc = torch.zeros(coords.shape[0], *x.feats.shape[1:], dtype=torch.float32, device=x.device)
    acc.index_add_(0, inverse, x.feats.float())
    feats = (acc / divisor.view(-1, *[1] * (acc.ndim - 1))).to(x.dtype)
    return SparseTensor(feats, coords, layout=layout, cache=parent_cache)


def upsample(x: SparseTensor, factor: int = 2) -> SparseTensor:
    entry = x.cache.get(("upsample", factor))
    if entry is None:
        raise RuntimeError("upsample needs the map of a preceding downsample of the same tensor")
    coords, layout, cache, inverse = entry
    return SparseTensor(x.feats[inverse], coords, layout=layout, cache=cache)


def subdivide_coords(coords: torch.Tensor) -> torch.Tensor:
    """[N,4] -> [8N,4]: each voxel c -> 8 children 2c + o, o enumerated z fastest; children of a parent
    are consecutive (child row i has parent row i // 8)."""
    r = torch.arange(2, device=coords.device)
    offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(8, 3).int()
    out = coords.repeat_interleave(8, dim=0)
    out[:, 1:] = out[:, 1:] * 2 + offsets.repeat(coords.shape[0], 1)
    return out


def subdivide(x: SparseTensor) -> SparseTensor:
    """Each voxel c -> 8 children 2c + o (see subdivide_coords), each a copy of its parent's features."""
    return SparseTensor(x.feats.repeat_interleave(8, dim=0), subdivide_coords(x.coords))


class _Resample(nn.Module):
    """A module (no weights) that calls its class's `resample(x, factor)`."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.resample(x, self.factor)


class SparseDownsample(_Resample):
    resample = staticmethod(downsample)


class SparseUpsample(_Resample):
    resample = staticmethod(upsample)


class SparseSubdivide(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return subdivide(x)


def share_first_copy(src: SparseTensor, dst: SparseTensor) -> None:
    """Give ``dst`` the cached maps of the first ``len(dst)`` rows of ``src``, where ``src`` is ``dst`` repeated
    along the batch (the sampler's batched CFG pair: copy k of dst's items becomes items k * B ... of src), so that
    dst's own maps need not be built again (a build waits on the GPU several times: the unguided steps at the end
    of a CFG-interval run otherwise rebuild them mid-run). Only maps derived exactly are given (the same numbers
    as building them on dst): neighbour maps and down-sampling plans, recursively for the coarser levels; anything
    else dst builds itself as before. Entries dst already has are kept."""
    n, total = dst.coords.shape[0], src.coords.shape[0]
    if n == 0 or total % n or dst.batch_size * (total // n) != src.batch_size:
        return
    _share_level(src.cache, dst.cache, dst.coords, dst.layout, n, total)


def _share_level(src_cache: dict, cache: dict, coords: torch.Tensor, layout: list, n: int, total: int) -> None:
    """One resolution level of ``share_first_copy``: ``src_cache`` (``total`` rows) into ``cache`` (the first ``n``)."""
    for key, value in list(src_cache.items()):
        if not isinstance(key, tuple) or key in cache:
            continue
        if key[0] == "neighbour_map" and torch.is_tensor(value) and value.shape[0] == total:
            first = value[:n]
            cache[key] = torch.where(first == total, torch.full_like(first, n), first)
        elif key[0] == "downsample" and isinstance(value, tuple) and len(value) == 5:
            p_coords, p_layout, p_cache, inverse, divisor = value
            items = len(layout)
            m = sum(s.stop - s.start for s in p_layout[:items])       # the first copy's parents come first
            child_inverse = inverse[:n]
            parent_cache = {("upsample", key[1]): (coords, layout, cache, child_inverse)}
            parent_layout = list(p_layout[:items])
            _share_level(p_cache, parent_cache, p_coords[:m], parent_layout, m, p_coords.shape[0])
            cache[key] = (p_coords[:m], parent_layout, parent_cache, child_inverse, divisor[:m])
