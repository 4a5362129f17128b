"""Sparse residual blocks: the SLat flow's SparseResBlock3d (§6.2) and the mesh decoder's subdivide block (§7.4)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..norm import LayerNorm32
from .conv import SparseConv3d, subdivided_conv3d
from .spatial import SparseDownsample, SparseSubdivide, SparseUpsample, subdivide_coords
from .tensor import SparseTensor
from .transformer import SparseLinear


class SparseGroupNorm32(nn.GroupNorm):
    """GroupNorm with statistics over all voxels of one batch item (and the group's channels), fp32.

    Statistics are accumulated in fp32 chunk by chunk and the output is written in the input dtype,
    so no full fp32 copy of a million-voxel feature map is ever held.
    """

    CHUNK_ROWS = 1 << 16

    def forward(self, x: SparseTensor, inplace: bool = False) -> SparseTensor:
        """``inplace``: write the output over x's features (the caller's x is then gone); the statistics
        are complete before the first row is written, so the numbers are the same."""
        feats = x.feats
        c, g = feats.shape[1], self.num_groups
        dt = torch.promote_types(feats.dtype, torch.float32)
        w, b = self.weight.to(dt), self.bias.to(dt)
        out = feats if inplace else torch.empty_like(feats)
        for s in x.layout:
            n = s.stop - s.start
            total = torch.zeros(g, dtype=dt, device=feats.device)
            for a in range(s.start, s.stop, self.CHUNK_ROWS):
                total += feats[a:min(a + self.CHUNK_ROWS, s.stop)].to(dt).view(-1, g, c // g).sum(dim=(0, 2))
            mean = total / (n * (c // g))
            sq = torch.zeros(g, dtype=dt, device=feats.device)
            for a in range(s.start, s.stop, self.CHUNK_ROWS):
                d = feats[a:min(a + self.CHUNK_ROWS, s.stop)].to(dt).view(-1, g, c // g) - mean[:, None]
                sq += d.square().sum(dim=(0, 2))
            inv = torch.rsqrt(sq / (n * (c // g)) + self.eps)
            scale = (inv.repeat_interleave(c // g) * w)
            shift = b - mean.repeat_interleave(c // g) * scale
            for a in range(s.start, s.stop, self.CHUNK_ROWS):
                e = min(a + self.CHUNK_ROWS, s.stop)
                out[a:e] = (feats[a:e].to(dt) * scale + shift).to(feats.dtype)
        return x.replace(out)


class SparseResBlock3d(nn.Module):
    """Conv residual block modulated by the timestep embedding; (scale, shift) order (quirk §19.2)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 downsample: bool = False, upsample: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        if downsample and upsample:
            raise ValueError("a block cannot both down- and up-sample")
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, out_channels, 3)
        self.conv2 = SparseConv3d(out_channels, out_channels, 3)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.skip_connection = SparseLinear(channels, out_channels) if channels != out_channels else nn.Identity()
        self.updown = SparseDownsample(2) if downsample else SparseUpsample(2) if upsample else None

    # Elements of one chunk of the lean path's row-wise norm (its fp32 temporaries: 16 MiB each).
    LEAN_CHUNK_ELEMENTS = 1 << 22

    def forward(self, x: SparseTensor, emb: torch.Tensor, lean: bool = False) -> SparseTensor:
        if lean:
            return self._forward_lean(x, emb)
        scale, shift = self.emb_layers(emb).to(x.dtype).chunk(2, dim=1)
        if self.updown is not None:
            x = self.updown(x)
        rows = x.batch_index()
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))
        h = self.norm2(h.feats) * (1 + scale[rows]) + shift[rows]
        h = self.conv2(x.replace(F.silu(h)))
        return h + self.skip_connection(x)

    def _act1(self, feats: torch.Tensor) -> torch.Tensor:
        """SiLU(norm1(feats)) row chunk by row chunk into one output in feats' dtype: the fp32 copies of the
        norm exist for one chunk at a time (the norm is per row, so the numbers are those of one call)."""
        out = torch.empty_like(feats)
        step = max(1, self.LEAN_CHUNK_ELEMENTS // max(1, feats.shape[1]))
        for a in range(0, feats.shape[0], step):
            out[a:a + step] = F.silu(self.norm1(feats[a:a + step]))
        return out

    def _forward_lean(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        """`forward` with a lower memory peak, same numbers (the flow's low-VRAM mode):

        * norm1 + SiLU run in row chunks (`_act1`): the affine norm's fp32 copies of the whole input are
          never held (the SLat flow's up-sampling block: 2 x N x 2048 x 4 bytes, 0.46 GiB at 30 k voxels);
        * when up-sampling, norm1 + SiLU and the linear skip run on the parent rows and their results are
          up-sampled (the up-sampling copies rows, and these layers work row by row), so the up-sampled
          input itself is never built;
        * the later element-wise steps are in place on tensors nothing else holds.
        """
        scale, shift = self.emb_layers(emb).to(x.dtype).chunk(2, dim=1)
        if isinstance(self.updown, SparseUpsample):
            act = x.replace(self._act1(x.feats))
            skip = self.skip_connection(x)
            skip = self.updown(skip if isinstance(skip, SparseTensor) else x.replace(skip))
            act = self.updown(act)
            x = act.replace(act.feats.new_empty(act.feats.shape[0], 0))    # the up-sampled coordinates only
        else:
            if self.updown is not None:
                x = self.updown(x)
            act = x.replace(self._act1(x.feats))
            skip = None
        h = self.conv1(act).feats
        del act
        rows = x.batch_index()
        h = self.norm2(h)
        h.mul_(1 + scale[rows]).add_(shift[rows])
        F.silu(h, inplace=True)
        h = self.conv2(x.replace(h))
        if skip is None:
            skip = self.skip_connection(x)
        h.feats.add_(skip.feats)
        return h


class SparseSubdivideBlock3d(nn.Module):
    """GN-SiLU, subdivide, conv-GN-SiLU-conv, plus a kernel-1 conv skip of the subdivided input."""

    def __init__(self, channels: int, out_channels: int | None = None, num_groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.act_layers = nn.Sequential(SparseGroupNorm32(num_groups, channels), _SparseSiLU())
        self.sub = SparseSubdivide()
        self.out_layers = nn.Sequential(
            SparseConv3d(channels, out_channels, 3),
            SparseGroupNorm32(num_groups, out_channels),
            _SparseSiLU(),
            SparseConv3d(out_channels, out_channels, 3),
        )
        self.skip_connection = SparseConv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: SparseTensor) -> SparseTensor:
        """The modules above in the reference's order, computed with less memory, same numbers:

        * the skip path is per voxel and children copy their parent, so it runs before subdividing (8x
          fewer rows) and is added to each parent's 8 consecutive children in place at the end;
        * the subdivided input of the first conv is never built: `subdivided_conv3d` reads each
          neighbour from its parent row (for the mesh decoder's last block 1.3 M x 192 fp16 = 0.47 GiB);
        * normalisation and SiLU of the intermediate tensors, which nothing else holds, are in place.
        """
        skip = self.skip_connection(x).feats
        norm, _ = self.act_layers
        conv1, norm2, _, conv2 = self.out_layers
        h = norm(x).feats
        F.silu(h, inplace=True)
        child = SparseTensor(h.new_empty(8 * h.shape[0], 0), subdivide_coords(x.coords))
        h = child.replace(subdivided_conv3d(child, h, conv1.conv.weight, conv1.conv.bias))
        h = norm2(h, inplace=True)
        F.silu(h.feats, inplace=True)
        h = conv2(h)
        h.feats.view(skip.shape[0], 8, -1).add_(skip[:, None])
        return h


class _SparseSiLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.silu(x.feats))
