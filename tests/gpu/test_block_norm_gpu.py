"""The flow blocks' norm kernels (NVRTC) against their PyTorch twins: ``norm_modulate`` and ``head_rms_norm``
(tests/gpu: skipped without CUDA).

Tolerances, stated once. The kernels round where the twins round (the residual sum, the LayerNorm output,
``1 + scale``, the modulated output, the RMS-normed values) and differ only in the order of their fp32 sums
(a warp's tree against PyTorch's Welford / vector-norm reductions) and in fused multiply-adds, so:
* the residual sum ``x + gate * y`` / ``x + y``: equal to the twin's on at least 99.9 % of the elements, never
  more than one unit in the last place apart;
* the normalised outputs: at most two units in the last place of the output's magnitude (|diff| <= 2 eps
  max(1, |twin|)), equal on at least 97 % of the elements (fp16; 95 % in bf16, whose units are 8x coarser
  but whose ties are as rare);
* the gated residual sum (``gated_residual``): as the residual sum above;
* Linear + tanh-GELU with the GELU in cuBLASLt's epilogue (``linear_gelu``): at most three units in the last place of
  max(1, |twin|) from the twin (which rounds the linear output first), and at least as close to the fp32 result;
* a whole block or MLP, kernels on vs. off: relative RMS below 1e-3 (fp16; the MLP in bf16 below 8e-3).
"""
import pytest
import torch

from trellis import fastpaths
from trellis.modules.norm import LayerNorm32, MultiHeadRMSNorm
from trellis.modules.sparse import SparseTensor
from trellis.modules.sparse.transformer import SparseModulatedTransformerCrossBlock
from trellis.modules.transformer import (FeedForwardNet, ModulatedTransformerCrossBlock, gated_residual, head_rms_norm,
                                         head_rms_norm_torch, linear_gelu_torch, norm_modulate, norm_modulate_torch)

from tests.helpers.gpu_inputs import rel_rms

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def kernel_module():
    (k,) = fastpaths.KERNELS["norm_modulate"]
    return fastpaths._import_kernel_module(k.module)


def close_in_ulps(got, want, ulps, equal_share):
    assert got.shape == want.shape and got.dtype == want.dtype
    eps = torch.finfo(want.dtype).eps
    g, w = got.float(), want.float()
    diff = (g - w).abs()
    bound = ulps * eps * w.abs().clamp_min(1.0)
    assert (diff <= bound).all(), f"max diff {diff.max().item():.3g} (bound {bound.max().item():.3g})"
    share = (diff == 0).float().mean().item()
    assert share >= equal_share, f"only {share:.4f} of the elements equal"


def mods_for(x, per_row, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    c = x.shape[-1]
    if per_row:     # the sparse block with items of different sizes: one modulation row per voxel
        six = torch.randn(x.shape[0], 6 * c, device="cuda", generator=g).to(x.dtype) * 0.5
        return [m for m in six.chunk(6, dim=-1)]
    six = torch.randn(x.shape[0], 6 * c, device="cuda", generator=g).to(x.dtype) * 0.5
    return [m[:, None] for m in six.chunk(6, dim=-1)]        # [B, 1, C] views with row stride 6C, as the blocks


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [768, 1024, 1280])
@pytest.mark.parametrize("case", ["norm1", "norm2", "norm3", "per_row", "plain"])
def test_norm_modulate_kernel_equals_twin(dtype, channels, case):
    torch.manual_seed(channels)
    if case == "per_row":
        x = (torch.randn(3001, channels, device="cuda") * 2 + 0.3).to(dtype)
    else:
        x = (torch.randn(2, 1037, channels, device="cuda") * 2 + 0.3).to(dtype)
    y = torch.randn_like(x) * 3
    shift, scale, gate = mods_for(x, case == "per_row", seed=channels)[:3]
    norm = LayerNorm32(channels, elementwise_affine=case == "norm2", eps=1e-6).cuda()
    if case == "norm2":
        with torch.no_grad():
            norm.weight.copy_(torch.randn(channels) * 0.3 + 1)
            norm.bias.copy_(torch.randn(channels) * 0.2)
        if dtype == torch.float16:
            norm.half()                                 # fp16 parameters, as in the fp16 torso
    args = {"norm1": (x, None, None, norm, shift, scale), "norm2": (x, y, gate, norm, None, None),
            "norm3": (x, y, None, norm, shift, scale), "per_row": (x, y, gate, norm, shift, scale),
            "plain": (x, y, None, norm, None, None)}[case]
    xs, ys, gs, n, sh, sc = args
    want = norm_modulate_torch(xs, ys, gs, n.weight, n.bias, n.eps, sh, sc)
    got = kernel_module().norm_modulate(xs, ys, gs, n.weight, n.bias, n.eps, sh, sc)
    assert got is not NotImplemented
    if ys is None:
        assert got[0] is xs
    else:
        close_in_ulps(got[0], want[0], 1, 0.999)
    close_in_ulps(got[1], want[1], 2, 0.97 if dtype == torch.float16 else 0.95)


def test_norm_modulate_declines_what_it_does_not_take():
    mod = kernel_module()
    x = torch.randn(4, 1024, device="cuda")
    assert mod.norm_modulate(x, None, None, None, None, 1e-6, None, None) is NotImplemented     # fp32
    odd = torch.randn(4, 1020, device="cuda", dtype=torch.float16)
    assert mod.norm_modulate(odd, None, None, None, None, 1e-6, None, None) is NotImplemented   # C % 8
    wide = torch.randn(4, 4096, device="cuda", dtype=torch.float16)
    assert mod.norm_modulate(wide, None, None, None, None, 1e-6, None, None) is NotImplemented  # C > 2048
    h = x.half()
    assert mod.norm_modulate(h, None, None, None, None, 1e-6, h[:1, None], None) is NotImplemented
    # parameters that are not 16-byte aligned (read 16 bytes at a time): declined, not a misaligned load
    wb = torch.randn(2 * 1024 + 1, device="cuda", dtype=torch.float16)
    assert mod.norm_modulate(h, None, None, wb[1:1025], wb[1025:], 1e-6, None, None) is NotImplemented
    # through the dispatcher those all run the twin
    norm = LayerNorm32(1020, elementwise_affine=False, eps=1e-6).cuda()
    got = norm_modulate(odd, None, None, norm)
    assert torch.equal(got[1], norm(odd))


def qkv_views(rows, heads, d, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(2, rows, 3 * heads * d, device="cuda", generator=g).to(dtype) * 2
    return qkv.unflatten(-1, (3, heads, d)).unbind(-3)      # non-contiguous, as AttentionProjections.qkv


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("heads,d", [(16, 64), (16, 80), (12, 64)])
def test_head_rms_norm_kernel_equals_twin(dtype, heads, d):
    q, k, _ = qkv_views(1531, heads, d, dtype, seed=d)
    qn, kn = MultiHeadRMSNorm(d, heads).cuda(), MultiHeadRMSNorm(d, heads).cuda()
    with torch.no_grad():
        qn.gamma.copy_(torch.rand(heads, d) + 0.5)
        kn.gamma.copy_(torch.rand(heads, d) + 0.5)
    if dtype == torch.float16:
        qn.half(), kn.half()
    want = head_rms_norm_torch(q, k, qn.gamma, kn.gamma, qn.scale)
    got = kernel_module().head_rms_norm(q, k, qn.gamma, kn.gamma, qn.scale)
    for a, b in zip(got, want):
        close_in_ulps(a, b, 2, 0.97 if dtype == torch.float16 else 0.95)
    # q and k of different lengths (cross-attention with qk_rms_norm_cross): two launches
    ctx = torch.randn(2, 77, heads, d, device="cuda").to(dtype)
    want = head_rms_norm_torch(q, ctx, qn.gamma, kn.gamma, qn.scale)
    got = head_rms_norm(q, ctx, qn, kn)
    assert fastpaths.path_of("head_rms_norm", "cuda") == "nvrtc"
    for a, b in zip(got, want):
        close_in_ulps(a, b, 2, 0.97 if dtype == torch.float16 else 0.95)


def dense_block_and_inputs(seed, tokens):
    """A dense modulated block at the flows' sizes (fp16, q/k RMS norm) and a CFG pair of inputs for it."""
    torch.manual_seed(seed)
    block = ModulatedTransformerCrossBlock(1024, 1024, 16, qk_rms_norm=True).cuda().half().eval()
    x = torch.randn(2, tokens, 1024, device="cuda").half()
    emb = torch.randn(2, 1024, device="cuda").half()
    ctx = torch.randn(2, 77, 1024, device="cuda").half()
    return block, x, emb, ctx


def test_whole_blocks_with_kernels_on_and_off(fast_on):
    """A dense and a sparse modulated block (fp16, the flows' sizes) give the twins' result with the kernels."""
    assert fastpaths.path_of("norm_modulate", "cuda") == "nvrtc"
    dense, x, emb, ctx = dense_block_and_inputs(0, 512)
    with torch.no_grad():
        on, off = fast_on(True, dense, x, emb, ctx), fast_on(False, dense, x, emb, ctx)
    assert rel_rms(on, off) < 1e-3
    sparse = SparseModulatedTransformerCrossBlock(1024, 1024, 16, qk_rms_norm=True).cuda().half().eval()
    for sizes in ([700, 700], [700, 450]):      # a CFG pair (equal rows) and items of different sizes
        coords = []
        for b, n in enumerate(sizes):
            flat = torch.randperm(64 ** 3)[:n].sort().values
            coords.append(torch.stack([torch.full((n,), b), flat // 4096, flat // 64 % 64, flat % 64], 1))
        coords = torch.cat(coords).int().cuda()
        st = SparseTensor(torch.randn(sum(sizes), 1024, device="cuda").half(), coords)
        with torch.no_grad():
            on, off = fast_on(True, sparse, st, emb, ctx), fast_on(False, sparse, st, emb, ctx)
        assert rel_rms(on.feats, off.feats) < 1e-3


def test_kernels_inside_a_cuda_graph():
    """The kernels launch on the current stream, so a captured block replays them (the graphs memory policy)."""
    block, x, emb, ctx = dense_block_and_inputs(1, 256)
    with torch.no_grad():
        block(x, emb, ctx)                              # compiles the kernels before the capture
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            block(x, emb, ctx)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = block(x, emb, ctx)
        x.copy_(torch.randn_like(x))
        graph.replay()
        assert torch.equal(out, block(x, emb, ctx))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("per_row", [False, True])
def test_gated_residual_kernel_equals_twin(dtype, per_row):
    torch.manual_seed(3)
    shape = (3001, 1024) if per_row else (2, 1037, 1024)
    x = (torch.randn(*shape, device="cuda") * 2 + 0.3).to(dtype)
    y = torch.randn_like(x) * 3
    gate = mods_for(x, per_row, seed=5)[2]
    got = kernel_module().gated_residual(x, gate, y)
    assert got is not NotImplemented
    close_in_ulps(got, gated_residual(x, gate, y), 1, 0.999)
    mod = kernel_module()
    assert mod.gated_residual(x.float(), gate.float(), y.float()) is NotImplemented            # fp32
    odd = x[..., :1020].contiguous()
    assert mod.gated_residual(odd, gate[..., :1020], y[..., :1020].contiguous()) is NotImplemented  # C % 8


def epilogue_module():
    (k,) = fastpaths.KERNELS["linear_gelu"]
    return fastpaths._import_kernel_module(k.module)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_gelu_epilogue_equals_twin(dtype):
    mod = epilogue_module()
    torch.manual_seed(4)
    lin = torch.nn.Linear(1024, 4096).cuda()
    x32 = torch.randn(2, 1037, 1024, device="cuda")
    x, w, b = x32.to(dtype), lin.weight.detach().to(dtype), lin.bias.detach().to(dtype)
    want = linear_gelu_torch(x, w, b)
    got = mod.linear_gelu(x, w, b)
    assert got is not NotImplemented and got.shape == want.shape
    close_in_ulps(got, want, 3, 0.5)
    ref = linear_gelu_torch(x.float(), w.float(), b.float())
    assert rel_rms(got, ref) <= rel_rms(want, ref) * 1.02         # the GELU of the fp32 sum, rounded once
    assert mod._epilogue_is_tanh_gelu(x.device, dtype)            # the checkpoints' tanh form, not erf
    # what it declines (the twin runs): no bias, a strided input, fp32
    assert mod.linear_gelu(x, w, None) is NotImplemented
    assert mod.linear_gelu(x.transpose(0, 1), w, b) is NotImplemented
    assert mod.linear_gelu(x32, lin.weight, lin.bias) is NotImplemented
    # through the module, kernels on and off
    ffn = FeedForwardNet(1024).cuda().to(dtype).eval()
    assert fastpaths.path_of("linear_gelu", "cuda") == "nvrtc"
    with torch.no_grad():
        on = ffn(x)
        fastpaths.set_enabled(False)
        try:
            off = ffn(x)
        finally:
            fastpaths.set_enabled(None)
    assert rel_rms(on, off) < (1e-3 if dtype == torch.float16 else 8e-3)     # bf16: units 8x coarser


def test_linear_gelu_first_call_inside_a_capture_runs_the_twin():
    """The epilogue's probe reads its result on the host, which a CUDA-graph capture forbids: a first call inside a
    capture declines (the dispatcher runs the twin, which captures), and the probe runs at the next eager call."""
    mod = epilogue_module()
    mod._probed.clear()
    ffn = FeedForwardNet(256).cuda().half().eval()
    x = torch.randn(2, 64, 256, device="cuda").half()
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
            out = ffn(x)
        torch.cuda.current_stream().wait_stream(stream)
        assert mod._probed == {}
        graph.replay()
        torch.cuda.synchronize()
        fastpaths.set_enabled(False)
        try:
            want = ffn(x)
        finally:
            fastpaths.set_enabled(None)
        assert torch.equal(out, want)               # the twin was captured
        ffn(x)
    assert mod._probed[(x.device.index, torch.float16)] is True
    assert "linear_gelu:nvrtc" not in fastpaths._disabled
