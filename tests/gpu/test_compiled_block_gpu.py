"""The flows' transformer blocks through torch.compile (fastpaths "flow_block", ``trellis_triton.compiled_block``)
equal the eager blocks (``trellis.modules.transformer.block_forward_torch``) on the GPU (tests/gpu: skipped
without CUDA).

Tolerance, stated once: Inductor fuses the layer norms, modulation, gating and GELU and rounds their
intermediates once instead of after each op, so in fp16 the compiled and eager results differ by rounding:
one block within relative RMS 1e-3 (about one fp16 eps, 9.8e-4), and a whole flow (24 blocks, measured
1.4e-3 to 1.9e-3 on an H100) within 4e-3 -- less than the flow's own fp16-vs-fp32 distance (1.7e-3 to
6.4e-3 in docs/BENCHMARKS.md). In fp32 the two agree within 1e-5.
"""
import pytest
import torch

from trellis import fastpaths
from trellis.modules.sparse import SparseTensor
from trellis.modules.sparse.transformer import SparseModulatedTransformerCrossBlock
from trellis.modules.transformer import ModulatedTransformerCrossBlock, run_block

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _fast_paths_on():
    """The compiled path is what is under test, also when the run has TRELLIS_FAST_PATHS=off."""
    fastpaths.set_enabled(True)
    yield
    fastpaths.set_enabled(None)


def rel_rms(a, b):
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def shell(n, batch=1, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    coords = []
    for b in range(batch):
        flat = torch.randperm(64 ** 3, device="cuda", generator=g)[:n].sort().values
        c = torch.stack([flat // 4096, flat // 64 % 64, flat % 64], 1)
        coords.append(torch.cat([torch.full((n, 1), b, device="cuda"), c], 1))
    return torch.cat(coords).int()


def make(cls, dtype):
    torch.manual_seed(0)
    block = cls(1024, 1024, 16, qk_rms_norm=True).cuda().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for m in block.modules():
            if isinstance(m, torch.nn.Linear):
                m.to(dtype)
    return block


@torch.no_grad()
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-3), (torch.float32, 1e-5)])
def test_dense_block_compiled_equals_eager(dtype, tol):
    assert fastpaths.path_of("flow_block", "cuda") == "triton"
    block = make(ModulatedTransformerCrossBlock, dtype)
    for batch in (2, 1, 2):                     # CFG pair, single pass, back: specialisations are reused
        x = torch.randn(batch, 4096, 1024, device="cuda").to(dtype)
        emb = torch.randn(batch, 1024, device="cuda").to(dtype)
        ctx = torch.randn(batch, 1374, 1024, device="cuda").to(dtype)
        got = run_block(block, x, emb, ctx, compiled=True)
        want = block(x, emb, ctx)
        assert "_trellis_compiled_forward" in block.__dict__
        assert got.dtype == dtype and rel_rms(got, want) < tol


@torch.no_grad()
@pytest.mark.parametrize("rows, batch", [(20000, 2), (13000, 1), (7000, 2)])
def test_sparse_block_compiled_equals_eager(rows, batch):
    """Dynamic shapes: new row counts (and batch sizes) reuse the compiled code and stay right."""
    block = make(SparseModulatedTransformerCrossBlock, torch.float16)
    coords = shell(rows, batch, seed=rows)
    x = SparseTensor(torch.randn(coords.shape[0], 1024, device="cuda").half(), coords)
    emb = torch.randn(batch, 1024, device="cuda").half()
    ctx = torch.randn(batch, 1374, 1024, device="cuda").half()
    got = run_block(block, x, emb, ctx, compiled=True).feats
    want = block(x, emb, ctx).feats
    assert "_trellis_compiled_forward" in block.__dict__
    assert rel_rms(got, want) < 1e-3


@torch.no_grad()
def test_whole_slat_flow_compiled_equals_eager():
    from benchmarks.networks_gpu import build, inputs, shell_structure

    model = build("slat_flow_model", "cuda")
    model.set_torso_dtype(torch.float16)
    s = shell_structure(20000)
    x = inputs("slat_flow_model", s, "cuda")
    want = model(*x).feats
    model.compile_blocks = True
    got = model(SparseTensor(x[0].feats, x[0].coords), *x[1:]).feats
    assert rel_rms(got, want) < 4e-3
    with _off():                               # fast paths off: the eager twin, bit for bit
        off = model(SparseTensor(x[0].feats, x[0].coords), *x[1:]).feats
        model.compile_blocks = False
        eager = model(SparseTensor(x[0].feats, x[0].coords), *x[1:]).feats
    assert torch.equal(off, eager)


class _off:
    def __enter__(self):
        fastpaths.set_enabled(False)

    def __exit__(self, *exc):
        fastpaths.set_enabled(True)
