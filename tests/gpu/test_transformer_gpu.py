"""The flows' transformer blocks in half precision on the GPU: the cast-free layer norm and the
one-kernel modulation / gated residual give the numbers of the reference's formulation (tests/gpu: skipped
without CUDA).

Tolerances, stated once:
* ``LayerNorm32`` without affine on a CUDA half tensor runs ``F.layer_norm`` on the half input; the reference
  casts to fp32, normalises and casts back. CUDA's kernel accumulates half inputs in fp32 and rounds once,
  so the two may differ only by the order of the fp32 reduction: at most one unit in the last place of
  the half output (|diff| <= eps * max(1, |out|)) and equal on at least 99 % of the elements.
* A whole modulated block (dense and sparse, fp16 torso) against the reference's formulation of the same
  block (``h * (1 + scale) + shift``, ``x + gate * y``, norms in fp32 and cast back) with the same
  weights and inputs: relative RMS below 2e-3 (fp16 rounding of the intermediates, eps = 9.8e-4, through
  attention and MLP), and both within the same distance of an fp32 run of the block.
"""
import pytest
import torch
import torch.nn.functional as F

from trellis.modules.norm import LayerNorm32
from trellis.modules.sparse import SparseTensor
from trellis.modules.sparse.transformer import SparseModulatedTransformerCrossBlock
from trellis.modules.transformer import ModulatedTransformerCrossBlock

from tests.helpers.gpu_inputs import rel_rms

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_half_equals_fp32_round_trip(dtype):
    torch.manual_seed(0)
    x = (torch.randn(2, 4096, 1024, device="cuda") * 3 + 0.5).to(dtype)
    norm = LayerNorm32(1024, elementwise_affine=False, eps=1e-6).cuda()
    got = norm(x)
    want = F.layer_norm(x.float(), (1024,), None, None, 1e-6).to(dtype)
    assert got.dtype == dtype
    eps = torch.finfo(dtype).eps
    diff = (got.float() - want.float()).abs()
    assert (diff <= eps * want.float().abs().clamp_min(1.0)).all()
    assert (diff == 0).float().mean().item() >= 0.99


def ln(norm, t):
    """The reference's LayerNorm32: fp32 maths, cast back."""
    w = norm.weight.float() if norm.weight is not None else None
    b = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(t.float(), norm.normalized_shape, w, b, norm.eps).to(t.dtype)


def reference_forward(block, x, emb, context):
    """The reference's formulation of the dense block (separate multiply and add, norms in fp32)."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (m[:, None] for m in block.modulation_chunks(emb))
    x = x + gate_msa * block.self_attn(ln(block.norm1, x) * (1 + scale_msa) + shift_msa)
    x = x + block.cross_attn(ln(block.norm2, x), context)
    return x + gate_mlp * block.mlp(ln(block.norm3, x) * (1 + scale_mlp) + shift_mlp)


def make_block(cls, channels=1024, heads=16):
    torch.manual_seed(1)
    block = cls(channels, channels, heads, qk_rms_norm=True, qk_rms_norm_cross=False).cuda().eval()
    with torch.no_grad():
        for p in block.parameters():                 # non-trivial modulation, gains and biases
            p.add_(torch.randn_like(p) * 0.02)
    return block


def half_copy(block):
    import copy
    h = copy.deepcopy(block)
    for name, mod in h.named_modules():
        if isinstance(mod, torch.nn.Linear):
            mod.half()
    return h


@torch.no_grad()
def test_dense_block_matches_reference_formulation():
    block32 = make_block(ModulatedTransformerCrossBlock)
    block16 = half_copy(block32)
    x = torch.randn(2, 4096, 1024, device="cuda")
    emb = torch.randn(2, 1024, device="cuda")
    ctx = torch.randn(2, 1374, 1024, device="cuda")
    want32 = block32(x, emb, ctx)
    got = block16(x.half(), emb.half(), ctx.half())
    ref = reference_forward(block16, x.half(), emb.half(), ctx.half())
    assert rel_rms(got, ref) < 2e-3
    assert rel_rms(got, want32) <= rel_rms(ref, want32) * 1.2 + 1e-4


@torch.no_grad()
@pytest.mark.parametrize("sizes", [(20000,), (9000, 9000), (7000, 9000)])
def test_sparse_block_matches_dense_formulation(sizes):
    """Equal items take the [B, rows, C] broadcast, unequal ones the per-row gather: both equal the
    reference formulation (per-row modulation, separate multiply and add, norms in fp32)."""
    block32 = make_block(SparseModulatedTransformerCrossBlock)
    block16 = half_copy(block32)
    torch.manual_seed(2)
    feats, coords = [], []
    for b, n in enumerate(sizes):
        flat = torch.randperm(64 ** 3, device="cuda")[:n].sort().values
        c = torch.stack([flat // 4096, flat // 64 % 64, flat % 64], 1).int()
        coords.append(torch.cat([torch.full((n, 1), b, device="cuda", dtype=torch.int32), c], 1))
        feats.append(torch.randn(n, 1024, device="cuda"))
    x = SparseTensor(torch.cat(feats).half(), torch.cat(coords))
    emb = torch.randn(len(sizes), 1024, device="cuda").half()
    ctx = torch.randn(len(sizes), 1374, 1024, device="cuda").half()
    got = block16(x, emb, ctx).feats
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (m[x.batch_index()]
                                                                      for m in block16.modulation_chunks(emb))
    h = x.feats
    h = h + gate_msa * block16.self_attn(x.replace(ln(block16.norm1, h) * (1 + scale_msa) + shift_msa)).feats
    h = h + block16.cross_attn(x.replace(ln(block16.norm2, h)), ctx).feats
    ref = h + gate_mlp * block16.mlp(ln(block16.norm3, h) * (1 + scale_mlp) + shift_mlp)
    assert rel_rms(got, ref) < 2e-3


def test_conditioner_in_fp16_autocast_stays_within_rounding_of_fp32():
    """An fp16 pipeline runs DINOv2 under fp16 autocast on CUDA (an fp32 one as the reference does, in fp32): its
    condition tokens equal the fp32 ones to fp16 rounding (H100: relative RMS 5.9e-4), and come out fp32."""
    import trellis.pipelines.trellis_image_to_3d as t3d
    from trellis.models.dinov2 import DINOV2_VITL14_REG_ARGS
    from trellis.models.image_conditioner import ImageConditioner
    from trellis.pipelines.memory import MemoryPolicy

    torch.manual_seed(0)
    pipe = t3d.TrellisImageTo3DPipeline.__new__(t3d.TrellisImageTo3DPipeline)
    pipe.image_cond_model = ImageConditioner.from_config(DINOV2_VITL14_REG_ARGS).cuda().eval()
    pipe._device, pipe._hosts = torch.device("cuda"), {}
    pipe._policy = MemoryPolicy("fp16", "none")
    pipe.models = {}
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    half = pipe.get_cond(image)["cond"]
    pipe._policy = MemoryPolicy("fp32", "none")
    full = pipe.get_cond(image)["cond"]
    assert half.dtype == torch.float32 and full.dtype == torch.float32
    rel = ((half - full).pow(2).mean().sqrt() / full.pow(2).mean().sqrt()).item()
    assert 0 < rel < 2e-3, rel
