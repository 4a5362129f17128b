"""TRELLIS.2's flow transformers (TRELLIS.2 facts §6): the dense sparse-structure flow over the 16^3 latent grid and
the sparse shape / texture flows over the occupied latent voxels, one token per voxel.

Both are a stack of v1's modulated cross blocks (trellis.modules.transformer) with what TRELLIS.2 changed: a 3-D
RoPE on self-attention's q and k (trellis.modules.rope) instead of an absolute position embedding, one adaLN linear
for all blocks plus each block's own learned vector (share_mod), q/k RMS norms in the cross-attention too, and an
fp32 head (cast, then norm). Their ckpt JSONs name v1's classes; ``trellis.models.model_class`` picks these by
pe_mode "rope".
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...modules.embed import TimestepEmbedder, grid_coords
from ...modules.norm import LayerNorm32
from ...modules.rope import cached_rope_phases, rope_phases
from ...modules.sparse import SparseLinear, SparseModulatedTransformerCrossBlock, SparseTensor
from ...modules.transformer import ModulatedTransformerCrossBlock, head_layout, run_block
from ..common import TorsoMixin

__all__ = ["SparseStructureFlowModel", "SLatFlowModel", "RopeFlowModel", "DTYPES", "torso_dtype"]

# The ckpt JSONs' "dtype" names.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Training-time weight initialisations the configs name; inference ignores them.
INITIALIZATIONS = ("vanilla", "scaled")


def torso_dtype(dtype) -> torch.dtype:
    """The blocks' dtype from a ckpt JSON's "dtype" (a name of DTYPES, or a torch dtype)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


class RopeFlowModel(TorsoMixin, nn.Module):
    """What both flows share: timestep embedder, the shared adaLN, input layer, blocks, fp32 head.

    The blocks' linears run in ``dtype`` (the checkpoints': bfloat16; the pipeline's precision policy may switch
    it, ``set_torso_dtype``); the timestep embedder, adaLN, input and output layers, the norms' and RMS norms' gains
    and the blocks' modulation vectors stay fp32. ``resolution``, ``use_checkpoint`` and ``initialization`` are
    training settings, accepted as the configs give them."""

    torso_modules = ("blocks",)
    compile_blocks = False     # set from the pipeline's memory policy (MemoryPolicy.compile)
    bf16_master = False        # the released weights are bf16 values: an fp32 round trip loses nothing
    # State-dict entries computed at construction, never read from a weights file (trellis.models.load_weights).
    computed_buffers: tuple[str, ...] = ()

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, pe_mode: str = "rope", dtype="float32", use_checkpoint: bool = False,
                 share_mod: bool = True, initialization: str = "vanilla", qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False, rope_freq=(1.0, 10000.0), linear_cls=nn.Linear,
                 block_cls=ModulatedTransformerCrossBlock):
        super().__init__()
        if pe_mode != "rope":
            raise ValueError(f"pe_mode {pe_mode!r} is not a TRELLIS.2 flow (they use 'rope'; 'ape' is TRELLIS v1)")
        if not share_mod:
            raise ValueError("TRELLIS.2 flows share one adaLN modulation (share_mod true); share_mod false "
                             "is not supported")
        if initialization not in INITIALIZATIONS:
            raise ValueError(f"initialization must be one of {', '.join(INITIALIZATIONS)}, got {initialization!r}")
        if len(rope_freq) != 2:
            raise ValueError(f"rope_freq must be (base, theta), got {rope_freq!r}")
        dt = torso_dtype(dtype)
        heads, self.head_dim = head_layout(model_channels, num_heads, num_head_channels)
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.model_channels, self.share_mod = model_channels, share_mod
        self.rope_base, self.rope_theta = float(rope_freq[0]), float(rope_freq[1])
        c = model_channels

        self.t_embedder = TimestepEmbedder(c)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
        self.input_layer = linear_cls(in_channels, c)
        self.blocks = nn.ModuleList([
            block_cls(c, cond_channels, heads, mlp_ratio, qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross,
                      share_mod=True, own_modulation=True)
            for _ in range(num_blocks)])
        self.out_layer = linear_cls(c, out_channels)
        self.final_norm = LayerNorm32(c, elementwise_affine=False, eps=1e-5)
        self._init_torso(False, dt)

    def shared_modulation(self, t: torch.Tensor) -> torch.Tensor:
        """[B, 6C] in the torso dtype: adaLN of the timestep embedding (fp32), before each block adds its own."""
        return self.adaLN_modulation(self.t_embedder(t)).to(self.dtype)

    def input_dtype(self) -> torch.dtype:
        return self.input_layer.weight.dtype


class SparseStructureFlowModel(RopeFlowModel):
    """Stage 1: x [B, in, R, R, R] -> velocity [B, out, R, R, R]; token n = x R^2 + y R + z (no patches), RoPE phases
    of the R^3 grid kept in the buffer `rope_phases` [R^3, head_dim / 2] (complex64; computed, not in the file)."""

    computed_buffers = ("rope_phases",)

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, **kwargs):
        super().__init__(resolution, in_channels, model_channels, cond_channels, out_channels, num_blocks, **kwargs)
        # Computed on the CPU whatever the build device: the phases of a network built on the CPU and moved.
        phases = rope_phases(grid_coords(resolution, device="cpu"), self.head_dim, self.rope_theta, self.rope_base)
        self.register_buffer("rope_phases", phases.to(torch.get_default_device()))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        expected = (self.in_channels, r, r, r)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        b = x.shape[0]
        h = self.input_layer(x.reshape(b, self.in_channels, r ** 3).transpose(1, 2).to(self.input_dtype()))
        emb, cond = self.shared_modulation(t), self.context_in_dtype(cond)
        h = h.to(self.dtype)
        for block in self.blocks:
            h = run_block(block, h, emb, cond, self.rope_phases, compiled=self.compile_blocks)
        h = self.out_layer(self.final_norm(h.to(torch.float32)))
        return h.transpose(1, 2).reshape(b, self.out_channels, r, r, r)


class SLatFlowModel(RopeFlowModel):
    """Stages 2 and 3: a SparseTensor of latents [N, in] (or [N, in - k] and ``concat_cond`` [N, k], appended along
    the channels: the texture flow's normalised shape latent) -> velocity [N, out], one token per voxel, full
    attention within each batch item, RoPE phases from the voxels' coordinates."""

    # Low-VRAM mode (set by the pipeline when it offloads): the same numbers with a lower activation peak
    # (SparseModulatedTransformerCrossBlock._forward_lean); compiled blocks stay as they are.
    lean = False

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, **kwargs):
        super().__init__(resolution, in_channels, model_channels, cond_channels, out_channels, num_blocks,
                         linear_cls=SparseLinear, block_cls=SparseModulatedTransformerCrossBlock, **kwargs)

    def input_features(self, x: SparseTensor, concat_cond) -> torch.Tensor:
        """x's features with ``concat_cond``'s (a SparseTensor on the same voxels or a tensor of its rows) appended;
        one item's ``concat_cond`` serves every item of a batch of equal items (the sampler's CFG pair)."""
        feats = x.feats
        if concat_cond is not None:
            extra = concat_cond.feats if isinstance(concat_cond, SparseTensor) else concat_cond
            rows = feats.shape[0]
            if extra.shape[0] != rows and extra.shape[0] and rows % extra.shape[0] == 0 \
                    and all(s.stop - s.start == extra.shape[0] for s in x.layout):
                extra = extra.repeat(rows // extra.shape[0], 1)
            if extra.ndim != 2 or extra.shape[0] != rows:
                raise ValueError(f"concat_cond has {list(extra.shape)} rows x channels; the input has {rows} rows")
            feats = torch.cat([feats, extra.to(feats.dtype)], dim=-1)
        if feats.shape[-1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels (with concat_cond), got {feats.shape[-1]}")
        return feats

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor, concat_cond=None) -> SparseTensor:
        feats = self.input_features(x, concat_cond)
        h = x.replace(self.input_layer(x.replace(feats.to(self.input_dtype()))).feats.to(self.dtype))
        emb, cond = self.shared_modulation(t), self.context_in_dtype(cond)
        phases = cached_rope_phases(x, self.head_dim, self.rope_theta, self.rope_base)
        lean = self.lean and not self.compile_blocks
        for block in self.blocks:
            if lean:
                h = block(h, emb, cond, phases, lean=True)
            else:
                h = run_block(block, h, emb, cond, phases, compiled=self.compile_blocks)
        return self.out_layer(h.replace(self.final_norm(h.feats.to(torch.float32))))
