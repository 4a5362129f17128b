"""Every row of ``trellis.fastpaths.KERNELS`` (one kernel of one backend) equals its PyTorch twin on a small input
(tests/gpu: skipped without CUDA).

The table drives the parametrisation, so a new row runs here at once and fails until ``CASES`` has an entry for
its name; ``tests/test_structure.py`` checks on any machine, CPU included, that every name of the table has one.
The pairs' own files (test_fast_paths_gpu, test_sparse_conv_gpu, test_block_norm_gpu, test_compiled_block_gpu) go
further: the networks' real sizes, declined inputs, CUDA graphs. These cases are the floor every row meets.

A case gets ``run(fast, fn, *args)``: ``fn`` with the row's backend alone (``TRELLIS_FAST_PATHS=<backend>``) or
with the fast paths off (the twins), always through the library's public entry point that dispatches to the pair.
The test then checks that the row's kernel itself answered at least once (a kernel that declined every call,
leaving the twin to answer, would compare the twin with itself).

Tolerances (the pairs' own files say why):
* ``mesh_setup`` and ``mesh_raster``: bit for bit;
* ``gaussian_composite``: colour / alpha / depth within 1e-3 everywhere, within 2e-5 on all but 0.1 % of pixels;
* ``sparse_conv3d`` (fp16): within one fp16 eps of max|out| of a float64 conv, and of the twin by that plus the
  twin's own error;
* the block norms (fp16): the residual sums within one unit in the last place of max(1, |twin|) and equal on
  99.9 % of the elements; normalised outputs within two units, equal on 97 %; ``linear_gelu`` within three units;
* ``flow_block`` (fp16, compiled vs eager): relative RMS below 1e-3;
* ``attention_8bit``: relative RMS below 2e-3 (the same quantised inputs; only e4m3 rounding ties differ).
"""
import math
import sys

import pytest
import torch

from trellis import fastpaths

from tests.helpers.gpu_inputs import rel_rms

DEV = "cuda"
# Every (name, backend) row of the table, in its order.
ROWS = [(k.name, k.backend) for kernels in fastpaths.KERNELS.values() for k in kernels]


def close_in_ulps(got, want, ulps, equal_share):
    assert got.shape == want.shape and got.dtype == want.dtype
    diff = (got.float() - want.float()).abs()
    bound = ulps * torch.finfo(want.dtype).eps * want.float().abs().clamp_min(1.0)
    assert (diff <= bound).all(), f"max diff {diff.max().item():.3g} (bound {bound.max().item():.3g})"
    share = (diff == 0).float().mean().item()
    assert share >= equal_share, f"only {share:.4f} of the elements equal"


# ------------------------------------------------------------------------------------------------ the cases

def case_gaussian_composite(run):
    from trellis.renderers.cameras import orbit_cameras
    from trellis.renderers.gaussian_render import render_gaussians
    from trellis.representations.gaussian import SH_C0, Gaussian

    n, gen = 20_000, torch.Generator().manual_seed(0)
    g = Gaussian([-0.5, -0.5, -0.5, 1.0, 1.0, 1.0], mininum_kernel_size=0.0)
    g.from_xyz(torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 0.35)
    g.from_scaling(torch.exp(torch.empty(n, 3).uniform_(math.log(0.003), math.log(0.03), generator=gen)))
    g.from_rotation(torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1))
    g.from_opacity(torch.empty(n, 1).uniform_(0.02, 0.999, generator=gen))
    g.from_features(((torch.rand(n, 3, generator=gen) - 0.5) / SH_C0).reshape(-1, 1, 3))
    g = g.to(DEV)
    ext, intr = orbit_cameras([0.3], [0.2], radius=2.0, fov=40.0, device=DEV)
    kern = run(True, render_gaussians, g, ext[0], intr[0], (96, 128), bg_color=(0.2, 0.5, 1.0))
    twin = run(False, render_gaussians, g, ext[0], intr[0], (96, 128), bg_color=(0.2, 0.5, 1.0))
    assert twin["alpha"].max() > 0.5
    for key in ("color", "alpha", "depth"):
        diff = (kern[key] - twin[key]).abs()
        assert diff.max().item() <= 1e-3, key
        assert (diff > 2e-5).float().mean().item() <= 1e-3, key


def case_mesh_raster(run):
    from trellis.renderers.mesh_render import rasterize

    gen = torch.Generator().manual_seed(1)
    n, res = 3000, 256
    centres = (torch.rand(n, 1, 3, generator=gen) - 0.5) * 1.6
    verts = (centres + torch.randn(n, 3, 3, generator=gen) * 0.04).reshape(-1, 3)
    verts[:, 2] = verts[:, 2] * 0.3 + 3.0                      # in front of the camera: clip w in [2, 4]
    clip = torch.cat([verts[:, :2] * verts[:, 2:3], torch.zeros_like(verts[:, :1]), verts[:, 2:3]], -1)
    clip, faces = clip.float().to(DEV), torch.arange(n * 3).reshape(n, 3).to(DEV)
    kern = run(True, rasterize, clip, faces, res, res)
    twin = run(False, rasterize, clip, faces, res, res)
    assert (twin[0] > 0).any()
    for a, b in zip(kern, twin):
        assert torch.equal(a, b)


def case_mesh_setup(run):
    from trellis.renderers.mesh_render import triangle_setup_torch

    def setup(clip, faces, height, width, ndc_y_up):       # the pair itself: rasterize's first step
        return fastpaths.dispatch("mesh_setup", clip.device, triangle_setup_torch, clip, faces, height, width,
                                  ndc_y_up)

    gen = torch.Generator().manual_seed(3)
    n = 4000
    verts = (torch.rand(n * 3, 3, generator=gen) - 0.5) * 1.4
    verts[:, 2] = verts[:, 2] * 0.5 + 2.5
    clip = torch.cat([verts[:, :2] * verts[:, 2:3], torch.zeros_like(verts[:, :1]), verts[:, 2:3]], -1).double()
    clip[:40, 3] = -1.0                                    # behind the camera
    clip[40:50, 0] = float("nan")
    clip[50:60, 1] = float("inf")
    clip[60:70, 0] = 1e9                                   # past the fixed point's guard
    clip[300:330] = clip[330:360]                          # degenerate triangles (two corners equal)
    clip[600:900, :2] = torch.round(clip[600:900, :2] * 64) / 64       # corners on pixel centres and edges
    faces = torch.arange(n * 3).reshape(n, 3)
    faces[3000:] = torch.randint(0, n * 3, (n - 3000, 3), generator=gen)      # shared corners
    for dtype, (h, w), up in ((torch.float64, (96, 128), False), (torch.float32, (256, 256), True),
                              (torch.float64, (1024, 1024), True)):
        c, f = clip.to(dtype).to(DEV), faces.to(DEV)
        kern = run(True, setup, c, f, h, w, up)
        twin = run(False, setup, c, f, h, w, up)
        assert (twin[2] > 0).sum() > n // 2 and (twin[2] == 0).sum() >= 20    # the 23 triangles spoilt above
        for a, b in zip(kern[:3], twin[:3]):
            assert a.dtype == b.dtype and torch.equal(a, b)
        pk, pt = kern[3], twin[3]
        assert pk.dtype == pt.dtype == torch.float32
        assert torch.equal(pk.isnan(), pt.isnan())
        both = ~pt.isnan()
        assert torch.equal(pk.view(torch.int32)[both], pt.view(torch.int32)[both])     # bit for bit, signs of 0 too


def case_sparse_conv3d(run):
    from trellis.modules.sparse import SparseTensor
    from trellis.modules.sparse.conv import submanifold_conv3d, submanifold_conv3d_torch

    g = torch.Generator(device=DEV).manual_seed(2)
    flat = torch.randperm(32 ** 3, device=DEV, generator=g)[:6000].sort().values
    coords = torch.stack([torch.zeros_like(flat), flat // 1024, flat // 32 % 32, flat % 32], 1).int()
    c_in, c_out = 64, 96
    x = SparseTensor(torch.randn(len(flat), c_in, device=DEV, generator=g).half(), coords)
    w = (torch.randn(c_out, 3, 3, 3, c_in, device=DEV, generator=g) / (27 * c_in) ** 0.5).half()
    b = (torch.randn(c_out, device=DEV, generator=g) * 0.1).half()
    kern = run(True, submanifold_conv3d, x, w, b, backend="torch")     # "torch": ours (kernel, else twin); no spconv
    twin = run(False, submanifold_conv3d, x, w, b, backend="torch")
    ref = submanifold_conv3d_torch(x.replace(x.feats.double()), w.double(), b.double())
    eps, scale = torch.finfo(torch.float16).eps, ref.abs().max().item()
    assert kern.dtype == torch.float16 and kern.shape == twin.shape
    assert (kern.double() - ref).abs().max().item() <= eps * scale
    twin_err = (twin.double() - ref).abs().max().item()
    assert (kern.double() - twin.double()).abs().max().item() <= eps * scale + twin_err


def _modulations(x, seed):
    g = torch.Generator(device=DEV).manual_seed(seed)
    six = torch.randn(x.shape[0], 6 * x.shape[-1], device=DEV, generator=g).to(x.dtype) * 0.5
    return [m[:, None] for m in six.chunk(6, dim=-1)]          # [B, 1, C] views with row stride 6C, as the blocks


def case_norm_modulate(run):
    from trellis.modules.norm import LayerNorm32
    from trellis.modules.transformer import norm_modulate

    torch.manual_seed(3)
    x = (torch.randn(2, 301, 512, device=DEV) * 2 + 0.3).half()
    y = torch.randn_like(x) * 3
    shift, scale, gate = _modulations(x, seed=3)[:3]
    plain = LayerNorm32(512, elementwise_affine=False, eps=1e-6).to(DEV)
    affine = LayerNorm32(512, elementwise_affine=True, eps=1e-6).to(DEV)
    with torch.no_grad():
        affine.weight.copy_(torch.randn(512) * 0.3 + 1)
        affine.bias.copy_(torch.randn(512) * 0.2)
    affine.half()
    for args in ((x, y, None, plain, shift, scale), (x, y, gate, affine, None, None)):
        kern = run(True, norm_modulate, *args)
        twin = run(False, norm_modulate, *args)
        close_in_ulps(kern[0], twin[0], 1, 0.999)
        close_in_ulps(kern[1], twin[1], 2, 0.97)


def case_head_rms_norm(run):
    from trellis.modules.norm import MultiHeadRMSNorm
    from trellis.modules.transformer import head_rms_norm

    heads, d = 8, 64
    g = torch.Generator(device=DEV).manual_seed(4)
    qkv = torch.randn(2, 503, 3 * heads * d, device=DEV, generator=g).half() * 2
    q, k, _ = qkv.unflatten(-1, (3, heads, d)).unbind(-3)      # non-contiguous, as AttentionProjections.qkv
    qn, kn = MultiHeadRMSNorm(d, heads).to(DEV), MultiHeadRMSNorm(d, heads).to(DEV)
    with torch.no_grad():
        qn.gamma.copy_(torch.rand(heads, d) + 0.5)
        kn.gamma.copy_(torch.rand(heads, d) + 0.5)
    qn.half(), kn.half()
    kern = run(True, head_rms_norm, q, k, qn, kn)
    twin = run(False, head_rms_norm, q, k, qn, kn)
    for a, b in zip(kern, twin):
        close_in_ulps(a, b, 2, 0.97)


def case_gated_residual(run):
    from trellis.modules.transformer import gated_residual_sum

    torch.manual_seed(5)
    x = (torch.randn(2, 301, 512, device=DEV) * 2 + 0.3).half()
    y = torch.randn_like(x) * 3
    gate = _modulations(x, seed=5)[2]
    close_in_ulps(run(True, gated_residual_sum, x, gate, y), run(False, gated_residual_sum, x, gate, y), 1, 0.999)


def case_linear_gelu(run):
    from trellis.modules.transformer import linear_gelu

    torch.manual_seed(6)
    lin = torch.nn.Linear(512, 2048).to(DEV).half()
    x = torch.randn(2, 301, 512, device=DEV).half()
    with torch.no_grad():
        close_in_ulps(run(True, linear_gelu, x, lin), run(False, linear_gelu, x, lin), 3, 0.5)


@torch.no_grad()
def case_flow_block(run):
    from trellis.modules.transformer import ModulatedTransformerCrossBlock, run_block

    torch.manual_seed(7)
    block = ModulatedTransformerCrossBlock(256, 256, 4, qk_rms_norm=True).to(DEV).half().eval()
    x = torch.randn(2, 512, 256, device=DEV).half()
    emb = torch.randn(2, 256, device=DEV).half()
    ctx = torch.randn(2, 77, 256, device=DEV).half()
    kern = run(True, run_block, block, x, emb, ctx, compiled=True)
    twin = run(False, run_block, block, x, emb, ctx, compiled=True)
    assert kern.dtype == torch.float16 and rel_rms(kern, twin) < 1e-3


# The pair's name -> its case (tests/test_structure.py: one for every name of fastpaths.KERNELS, no more).
def case_attention_8bit(run):
    from trellis.modules.attention.quantised import quantised_varlen

    g = torch.Generator(device=DEV).manual_seed(9)
    lengths_q, lengths_kv = [300, 77], [129, 64]
    q = torch.randn(sum(lengths_q), 12, 128, device=DEV, generator=g).bfloat16()
    k, v = (torch.randn(sum(lengths_kv), 12, 128, device=DEV, generator=g).bfloat16() for _ in range(2))
    kern = run(True, quantised_varlen, q, k, v, lengths_q, lengths_kv)
    twin = run(False, quantised_varlen, q, k, v, lengths_q, lengths_kv)
    assert rel_rms(kern, twin) < 2e-3           # test_attention_8bit_gpu.py says why


CASES = {
    "gaussian_composite": case_gaussian_composite,
    "mesh_setup": case_mesh_setup,
    "mesh_raster": case_mesh_raster,
    "sparse_conv3d": case_sparse_conv3d,
    "norm_modulate": case_norm_modulate,
    "head_rms_norm": case_head_rms_norm,
    "gated_residual": case_gated_residual,
    "linear_gelu": case_linear_gelu,
    "flow_block": case_flow_block,
    "attention_8bit": case_attention_8bit,
}


# ------------------------------------------------------------------------------------------------ the test

@pytest.mark.parametrize("name, backend", ROWS, ids=[f"{n}-{b}" for n, b in ROWS])
def test_kernel_row_equals_its_twin(name, backend, monkeypatch):
    assert name in CASES, f"fastpaths.KERNELS has a row {name!r} without an equality case: add one to CASES here"
    (kernel,) = [k for k in fastpaths.KERNELS[name] if k.backend == backend]
    monkeypatch.setenv(fastpaths.ENV_VAR, backend)
    why = fastpaths.reason_off(name, DEV)
    if why:
        pytest.fail(f"kernel {kernel.key} does not run on this GPU machine: {why}")
    assert fastpaths.path_of(name, DEV) == backend
    # Count the kernel's own answers (dispatch looks the function up at every call).
    function, answered = kernel.load(), []

    def counted(*args, **kwargs):
        out = function(*args, **kwargs)
        answered.append(out is not NotImplemented)
        return out
    monkeypatch.setattr(sys.modules[kernel.module], kernel.function, counted)

    def run(fast, fn, *args, **kwargs):
        fastpaths.set_enabled(None if fast else False)     # None: the backend the variable names
        try:
            return fn(*args, **kwargs)
        finally:
            fastpaths.set_enabled(None)
    CASES[name](run)
    assert fastpaths.reason_off(name, DEV) is None, f"{kernel.key} failed during its case and was switched off"
    assert any(answered), f"{kernel.key} declined every call of its case (the twin answered)"
