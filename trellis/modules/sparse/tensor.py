"""SparseTensor: a batch of sparse voxel features (spec §3.7).

`coords` is int32 [N, 4] = (batch, x, y, z); `feats` is [N, C, ...]. Rows of one batch item are
contiguous and items come in increasing batch order. Everything derived from the coordinates alone
(neighbour maps of convolutions, attention windows, the child/parent maps of down-sampling) is kept
in a cache that `replace()` shares, so a network that keeps its coordinates builds each map once.
"""
from __future__ import annotations

import torch

# Coordinates are assumed in [0, 4095]: 12 bits per axis in a packed int64 key (TRELLIS v1 stays below 1024,
# TRELLIS.2's finest grid reaches 1535); the keys order rows lexicographically whatever the width.
COORD_BITS = 12
COORD_LIMIT = 1 << COORD_BITS


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """(batch, x, y, z) -> one int64 key per row, ordered like the lexicographic order of the rows."""
    c = coords.long()
    return (((c[:, 0] << COORD_BITS | c[:, 1]) << COORD_BITS | c[:, 2]) << COORD_BITS) | c[:, 3]


class SparseTensor:
    """`SparseTensor(feats=, coords=)` as in the reference's API; `shape`, `layout` and `cache` are ours
    (derived values handed on by `replace` and the resampling layers). Any other keyword is a TypeError,
    so a misspelled argument is not silently dropped."""

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, shape: torch.Size | None = None,
                 layout: list[slice] | None = None, cache: dict | None = None):
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        self.feats = feats
        self.coords = coords
        self._cache = {} if cache is None else cache
        if layout is None:
            layout = self._cache.get("layout")
        if layout is None:
            layout = self._compute_layout(coords)
        self._cache["layout"] = layout
        self.layout = layout
        self.shape = torch.Size([len(layout), *feats.shape[1:]]) if shape is None else torch.Size(shape)

    @staticmethod
    def _compute_layout(coords: torch.Tensor) -> list[slice]:
        if coords.shape[0] == 0:
            return []
        counts = torch.bincount(coords[:, 0].long()).tolist()
        layout, start = [], 0
        for n in counts:
            layout.append(slice(start, start + n))
            start += n
        return layout

    # ------------------------------------------------------------------ basic properties
    @property
    def batch_size(self) -> int:
        return len(self.layout)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def cache(self) -> dict:
        return self._cache

    def seqlens(self) -> list[int]:
        return [s.stop - s.start for s in self.layout]

    def batch_index(self) -> torch.Tensor:
        """int64 batch index of every row (cached)."""
        idx = self._cache.get("batch_index")
        if idx is None or idx.device != self.device:
            idx = self.coords[:, 0].long()
            self._cache["batch_index"] = idx
        return idx

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return (f"SparseTensor(shape={tuple(self.shape)}, rows={self.feats.shape[0]}, dtype={self.dtype}, "
                f"device={self.device})")

    # ------------------------------------------------------------------ construction helpers
    def replace(self, feats: torch.Tensor, coords: torch.Tensor | None = None) -> "SparseTensor":
        """Same coordinates (and cached maps) with new features; new coords start a fresh cache."""
        if coords is None:
            return SparseTensor(feats, self.coords, layout=self.layout, cache=self._cache)
        return SparseTensor(feats, coords)

    def to(self, *args, **kwargs) -> "SparseTensor":
        feats = self.feats.to(*args, **kwargs)
        coords = self.coords.to(device=feats.device)
        if coords.device == self.coords.device:
            return SparseTensor(feats, coords, layout=self.layout, cache=self._cache)
        return SparseTensor(feats, coords, layout=self.layout)

    def type(self, dtype: torch.dtype) -> "SparseTensor":
        return self.replace(self.feats.type(dtype))

    def float(self) -> "SparseTensor":
        return self.type(torch.float32)

    def half(self) -> "SparseTensor":
        return self.type(torch.float16)

    def cuda(self, device=None) -> "SparseTensor":
        return self.to("cuda" if device is None else device)

    def cpu(self) -> "SparseTensor":
        return self.to("cpu")

    def detach(self) -> "SparseTensor":
        return self.replace(self.feats.detach())

    def dense(self) -> torch.Tensor:
        """Scatter into a dense [B, C, X, Y, Z] grid just large enough for the coordinates."""
        c = self.coords.long()
        size = (c[:, 1:].max(0).values + 1).tolist() if c.shape[0] else [0, 0, 0]
        out = self.feats.new_zeros(self.batch_size, *size, *self.feats.shape[1:])
        out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = self.feats
        return out.movedim(4, 1) if self.feats.ndim == 2 else out

    def __getitem__(self, i: int) -> "SparseTensor":
        """Batch item i as a SparseTensor of batch size 1."""
        s = self.layout[i]
        coords = self.coords[s].clone()
        coords[:, 0] = 0
        return SparseTensor(self.feats[s], coords)

    # ------------------------------------------------------------------ arithmetic on features
    def _rowwise(self, other):
        if isinstance(other, SparseTensor):
            return other.feats
        if isinstance(other, torch.Tensor) and other.ndim == self.feats.ndim and other.shape != self.feats.shape \
                and other.shape[0] == self.batch_size:
            return other[self.batch_index()]          # dense [B, C] broadcast to the rows of each item
        return other

    def __add__(self, other):
        return self.replace(self.feats + self._rowwise(other))

    __radd__ = __add__

    def __sub__(self, other):
        return self.replace(self.feats - self._rowwise(other))

    def __rsub__(self, other):
        return self.replace(self._rowwise(other) - self.feats)

    def __mul__(self, other):
        return self.replace(self.feats * self._rowwise(other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self.replace(self.feats / self._rowwise(other))

    def __neg__(self):
        return self.replace(-self.feats)


def sparse_cat(tensors: list[SparseTensor], dim: int = -1) -> SparseTensor:
    """Concatenate features of tensors that share coordinates (channel concat by default)."""
    if dim == 0:
        raise ValueError("sparse_cat concatenates features; batch concatenation is sparse_batch()")
    return tensors[0].replace(torch.cat([t.feats for t in tensors], dim=dim))


def sparse_batch(items: list[SparseTensor]) -> SparseTensor:
    """Stack single-item tensors into one batch (item i gets batch index i)."""
    coords = []
    for i, t in enumerate(items):
        c = t.coords.clone()
        c[:, 0] = i
        coords.append(c)
    return SparseTensor(torch.cat([t.feats for t in items]), torch.cat(coords))
