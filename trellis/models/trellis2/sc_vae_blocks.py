"""The TRELLIS.2 SC-VAE blocks (TRELLIS2_FACTS.md §7.1, §7.4): ConvNeXt, channel-to-space (C2S, the decoders'
subdivision) and space-to-channel (S2C, the encoders' down-sampling).

Child k of a parent p sits at 2p + (k & 1, (k >> 1) & 1, (k >> 2) & 1) (x is bit 0) and owns channel slice
k of the parent's 8-way channel split. A C2S block emits the kept children parent by parent, in increasing k.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...modules.norm import LayerNorm32
from ...modules.sparse import SparseLinear, SparseSubMConv3d, SparseTensor
from ...modules.sparse.conv import submanifold_conv3d_rows
from ...modules.sparse.tensor import pack_keys

__all__ = ["CHILD_OFFSETS", "child_coords", "subdivision_children", "space_to_channel_plan", "rowwise", "even_step",
           "SparseConvNeXtBlock3d", "SparseResBlockC2S3d", "SparseResBlockS2C3d", "BLOCK_TYPES", "check_levels"]

# [8, 3] offset of child k: x = bit 0, y = bit 1, z = bit 2.
CHILD_OFFSETS = torch.tensor([[k & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], dtype=torch.int32)


def child_coords(coords: torch.Tensor, parent: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """int32 [M, 4] (batch, 2p + offset of child k) for the pairs (parent row, k)."""
    out = coords[parent].int()
    out[:, 1:] = out[:, 1:] * 2 + CHILD_OFFSETS.to(coords.device)[k]
    return out


def subdivision_children(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(parent row, k) of every kept child (logit > 0) of [N, 8] logits, parent by parent, increasing k."""
    if logits.ndim != 2 or logits.shape[1] != 8:
        raise ValueError(f"subdivision logits must be [N, 8], got {tuple(logits.shape)}")
    parent, k = (logits > 0).nonzero(as_tuple=True)
    return parent, k


def space_to_channel_plan(x: SparseTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(parent coords int32 [P, 4] sorted by (batch, x, y, z), parent row of each row [N], child index k [N]),
    cached on x's coordinates."""
    key = ("space_to_channel", x.device)
    plan = x.cache.get(key)
    if plan is None:
        c = x.coords.long()
        half = c.clone()
        half[:, 1:] = torch.div(c[:, 1:], 2, rounding_mode="floor")
        _, inverse = torch.unique(pack_keys(half), return_inverse=True)
        parents = torch.zeros(int(inverse.max()) + 1 if inverse.numel() else 0, 4, dtype=torch.int32,
                              device=x.device)
        parents[inverse] = half.int()              # the children of one parent agree: any write is its coords
        k = (c[:, 1] & 1) | ((c[:, 2] & 1) << 1) | ((c[:, 3] & 1) << 2)
        plan = x.cache[key] = (parents, inverse, k)
    return plan


def even_step(rows: int, step: int) -> int:
    """Rows per chunk when `rows` are cut into ceil(rows / step) chunks of nearly one size: no small tail chunk (the
    CPU's GEMM takes another kernel for a few rows, which rounds differently)."""
    chunks = max(1, -(-rows // max(1, step)))
    return max(1, -(-rows // chunks))


def rowwise(fn, feats: torch.Tensor, out_channels: int, rows: int, dtype: torch.dtype | None = None,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """fn, a per-row computation, over chunks of ``rows`` rows of feats (bounds its temporaries), written into
    one [N, out_channels] tensor in ``dtype`` (default feats'): ``out`` when given (feats itself works: each chunk
    is read before it is written)."""
    n = feats.shape[0]
    step = max(1, rows)
    if n <= step:
        return fn(feats)
    if out is None:
        out = torch.empty(n, out_channels, dtype=dtype or feats.dtype, device=feats.device)
    for a in range(0, n, step):
        out[a:a + step] = fn(feats[a:a + step])
    return out


class SparseConvNeXtBlock3d(nn.Module):
    """x + MLP(LN(SubMConv(x))): conv C->C, LayerNorm (affine, eps 1e-6, fp32), Linear C->rC, SiLU, Linear rC->C."""

    # Elements of the MLP's hidden activation per row chunk (fp16: 128 MiB).
    HIDDEN_BUDGET = 1 << 26

    def __init__(self, channels: int, mlp_ratio: float = 4.0, use_checkpoint: bool = False):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.conv = SparseSubMConv3d(channels, channels, 3)
        self.norm = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.conv(x).feats
        # In place, chunk by chunk: at millions of voxels x, the conv's output and one more such tensor are the peak.
        h = rowwise(lambda f: self.mlp(self.norm(f)), h, h.shape[1],
                    self.HIDDEN_BUDGET // self.mlp[0].out_features, out=h)
        return x.replace(h.add_(x.feats))


class SparseResBlockC2S3d(nn.Module):
    """Channel-to-space x2 (§7.1): each parent's kept children get slice k of conv1's output and of the raw
    input; the input's slice (C_in / 8 channels) is repeat-interleaved up to C_out as the skip.

    ``pred_subdiv``: the block predicts its subdivision logits (``to_subdiv``, Linear C_in -> 8, on its input);
    otherwise the caller passes them (the texture decoder follows the shape decoder's)."""

    # Above this many elements of conv1's output (8 C_out a parent; fp16: 512 MiB) the block runs chunk by chunk
    # (``forward_chunked``) unless the GPU has room for it whole (``whole_fits``): at millions of fine voxels
    # conv1's output, the children's norm, conv2's neighbour map and the repeated skip were the decoders' peak.
    # Above CHILD_MAP_BYTES of the children's whole neighbour map (108 bytes a child) conv2 runs by rows too, in
    # chunks of CHILD_CHUNK children; below, it builds that map, which the next level's blocks then reuse.
    CHUNK_ELEMENTS = 1 << 28
    CHILD_MAP_BYTES = 1 << 29
    CHILD_CHUNK = 1 << 18
    # On a GPU the block still runs whole when its temporaries fit in this share of the memory the process can
    # still get (under any VRAM budget): the chunks' row searches and host syncs cost more than the convs.
    WHOLE_MEMORY_SHARE = 0.5

    def __init__(self, channels: int, out_channels: int, pred_subdiv: bool = True, use_checkpoint: bool = False):
        super().__init__()
        if channels % 8 or out_channels % (channels // 8):
            raise ValueError(f"C2S needs C_in divisible by 8 and C_out by C_in/8, got {channels} -> {out_channels}")
        self.channels, self.out_channels = channels, out_channels
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.conv1 = SparseSubMConv3d(channels, 8 * out_channels, 3)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv2 = SparseSubMConv3d(out_channels, out_channels, 3)
        self.to_subdiv = SparseLinear(channels, 8) if pred_subdiv else None

    def subdivision(self, x: SparseTensor, subdiv: SparseTensor | None = None) -> SparseTensor:
        """The subdivision logits [N, 8] on x's coordinates: ``subdiv`` checked against x, or predicted."""
        if subdiv is None:
            if self.to_subdiv is None:
                raise ValueError("this C2S block does not predict its subdivision (pred_subdiv=false): pass the "
                                 "shape decoder's subdivision logits of the same level (guide_subs)")
            return self.to_subdiv(x)
        if subdiv.feats.shape != (x.feats.shape[0], 8) or not torch.equal(subdiv.coords, x.coords):
            raise ValueError("the guide subdivision is not on this level's voxels: decode the texture latent on the "
                             "shape latent's coordinates (same rows, same order)")
        return subdiv

    def fine_coords(self, x: SparseTensor, subdiv: SparseTensor | None = None) -> torch.Tensor:
        """Only the children's coordinates int32 [M, 4] (the cascade's up-sampling needs no features)."""
        parent, k = subdivision_children(self.subdivision(x, subdiv).feats)
        return child_coords(x.coords, parent, k)

    def forward(self, x: SparseTensor, subdiv: SparseTensor | None = None) -> tuple[SparseTensor, SparseTensor]:
        """(children's features [M, C_out], the subdivision logits used [N, 8] on x's coordinates)."""
        subdiv = self.subdivision(x, subdiv)
        parent, k = subdivision_children(subdiv.feats)
        n, c_in, c_out = x.feats.shape[0], self.channels, self.out_channels
        if n * 8 * c_out > self.CHUNK_ELEMENTS and not self.whole_fits(x, parent.shape[0]):
            return self.forward_chunked(x, parent, k), subdiv
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats)))).feats
        h = h.view(n, 8, c_out)[parent, k]
        h = self.norm2(h)
        child = SparseTensor(F.silu(h, inplace=True), child_coords(x.coords, parent, k))
        del h
        out = self.conv2(child)
        skip = x.feats.view(n, 8, c_in // 8)[parent, k]
        out.feats.add_(skip.repeat_interleave(c_out // (c_in // 8), dim=1))
        return out, subdiv

    def whole_bytes(self, n: int, m: int, element_size: int) -> int:
        """What ``forward`` holds at most above its input for n parents and m children, rounded up: conv1's 8x
        output, the fp32 norm of the input, the children's features, conv2's output and the skip, the children's
        neighbour map and its dense lookup grid."""
        c_in, c_out = self.channels, self.out_channels
        return element_size * (n * 8 * c_out + 5 * n * c_in + 3 * m * c_out) + 200 * m + (1 << 27)

    def whole_fits(self, x: SparseTensor, m: int) -> bool:
        """Whether the whole block fits in WHOLE_MEMORY_SHARE of what x's GPU can still give (never on a CPU)."""
        from ...core.device import obtainable_device_memory

        room = obtainable_device_memory(x.device) if x.device.type == "cuda" else None
        need = self.whole_bytes(x.feats.shape[0], m, x.feats.element_size())
        return room is not None and need <= self.WHOLE_MEMORY_SHARE * room

    def forward_chunked(self, x: SparseTensor, parent: torch.Tensor, k: torch.Tensor) -> SparseTensor:
        """``forward``'s children, computed chunk by chunk with the same row-wise operations: conv1's rows for a
        range of parents (``submanifold_conv3d_rows``) and the norm of their kept children, then conv2 (by rows of
        children where their whole neighbour map is large) and the skip for a range of children. Peak: x, its
        activation, the children's features and conv2's output, plus one chunk's temporaries."""
        n, c_in, c_out, m = x.feats.shape[0], self.channels, self.out_channels, parent.shape[0]
        per = even_step(n, self.CHUNK_ELEMENTS // (8 * c_out))
        act = x.replace(rowwise(lambda f: F.silu(self.norm1(f)), x.feats, c_in, per))
        starts = list(range(0, n, per)) + [n]
        cuts = torch.searchsorted(parent, torch.tensor(starts, dtype=parent.dtype, device=parent.device)).tolist()
        feats = x.feats.new_empty(m, c_out)
        for pa, pb, ca, cb in zip(starts, starts[1:], cuts, cuts[1:]):
            if ca == cb:
                continue
            h = submanifold_conv3d_rows(act, self.conv1.weight, self.conv1.bias, pa, pb)
            h = h.view(pb - pa, 8, c_out)[parent[ca:cb] - pa, k[ca:cb]]
            feats[ca:cb] = F.silu(self.norm2(h), inplace=True)
            del h
        del act
        child = SparseTensor(feats, child_coords(x.coords, parent, k))
        by_rows = m * self.conv2.weight[0, ..., 0].numel() * 4 > self.CHILD_MAP_BYTES
        out = torch.empty_like(feats) if by_rows else self.conv2(child).feats
        skip = x.feats.view(n, 8, c_in // 8)
        step = even_step(m, self.CHILD_CHUNK)
        for a in range(0, m, step):
            b = min(a + step, m)
            extra = skip[parent[a:b], k[a:b]].repeat_interleave(c_out // (c_in // 8), dim=1)
            if by_rows:
                out[a:b] = submanifold_conv3d_rows(child, self.conv2.weight, self.conv2.bias, a, b).add_(extra)
            else:
                out[a:b].add_(extra)
            del extra
        return child.replace(out)


class SparseResBlockS2C3d(nn.Module):
    """Space-to-channel x2 (§7.4): conv1 (C_in -> C_out / 8) on the children, each parent concatenates its
    8 children's outputs in k order (zeros for a missing child); skip = the children's raw inputs concatenated
    the same way (8 C_in channels), averaged over consecutive groups of 8 C_in / C_out channels."""

    def __init__(self, channels: int, out_channels: int, use_checkpoint: bool = False):
        super().__init__()
        if out_channels % 8 or (8 * channels) % out_channels:
            raise ValueError(f"S2C needs C_out divisible by 8 and 8 C_in by C_out, got {channels} -> {out_channels}")
        self.channels, self.out_channels = channels, out_channels
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.conv1 = SparseSubMConv3d(channels, out_channels // 8, 3)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv2 = SparseSubMConv3d(out_channels, out_channels, 3)

    def forward(self, x: SparseTensor) -> SparseTensor:
        parents, row_parent, k = space_to_channel_plan(x)
        p, c_in, c_out = parents.shape[0], self.channels, self.out_channels
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats)))).feats
        packed = h.new_zeros(p, 8, c_out // 8)
        packed[row_parent, k] = h
        del h
        parent = SparseTensor(F.silu(self.norm2(packed.view(p, c_out))), parents)
        del packed
        # Each group of 8 C_in / C_out skip channels lies within one child (C_out is a multiple of 8): the children's
        # group means placed by k, not their whole inputs (a [P, 8, C_in] fp32 array at the fine levels).
        g = 8 * c_in // c_out
        skip = torch.zeros(p, 8, c_out // 8, dtype=torch.float32, device=x.device)
        skip[row_parent, k] = x.feats.float().view(-1, c_out // 8, g).mean(dim=2)
        skip = skip.view(p, c_out).to(x.dtype)
        out = self.conv2(parent)
        out.feats.add_(skip)
        return out


# Block names a ckpt JSON may use, per role.
BLOCK_TYPES = {"block": {"SparseConvNeXtBlock3d": SparseConvNeXtBlock3d},
               "up": {"SparseResBlockC2S3d": SparseResBlockC2S3d},
               "down": {"SparseResBlockS2C3d": SparseResBlockS2C3d}}


def check_levels(model_channels, num_blocks, block_type, resample_type, block_args, role: str):
    """The level lists' lengths and names, checked; returns (block classes, resampling classes, block args)."""
    levels = len(model_channels)
    block_args = [{} for _ in range(levels)] if block_args is None else list(block_args)
    for name, value, want in (("num_blocks", num_blocks, levels), ("block_type", block_type, levels),
                              ("block_args", block_args, levels), (f"{role}_block_type", resample_type, levels - 1)):
        if len(value) != want:
            raise ValueError(f"{name} has {len(value)} entries; {levels} levels need {want}")

    def lookup(kind, name):
        if name not in BLOCK_TYPES[kind]:
            raise ValueError(f"unknown {kind} block {name!r}; known: {', '.join(BLOCK_TYPES[kind])}")
        return BLOCK_TYPES[kind][name]

    return ([lookup("block", t) for t in block_type], [lookup(role, t) for t in resample_type], block_args)
