"""The implicit-GEMM sparse convs, Triton (``trellis_triton.sparse_conv``) and CUDA C through NVRTC
(``trellis_nvrtc.sparse_conv``: what Windows without Triton gets), equal their PyTorch twin
(``trellis.modules.sparse.conv.submanifold_conv3d_torch``) on the GPU (tests/gpu: skipped without CUDA).
Every test runs once per backend; the NVRTC kernel also with each of its tile shapes and with Turing's
code path (plain loads, m16n8k8 MMAs), which runs on newer GPUs too.

Shapes: every 3x3x3 conv of the SLat flow and of the mesh decoder at the sizes a ~20 000-voxel structure
gives (64^3: 20 k sites, 32^3: ~4 k, 128^3: ~160 k, 256^3: ~1.3 M), on a subdivided shell like the
decoders see, plus odd sizes (N not a multiple of a tile, C_in not a multiple of BLOCK_K, C_out below 16).

Convs of 512 channels and more in and out go to the twin's gathered GEMM (the kernels decline them: faster
there); the kernels are still checked on those shapes directly.

Tolerance (stated once, used everywhere): the kernel and the twin both multiply the same rounded inputs
and accumulate in fp32, then round once to the feature dtype. Against a float64 conv of those same
inputs the kernel must be within ``eps * max|out|`` (at most one unit in the last place of the output's
largest values; fp16 eps = 9.8e-4, bf16 7.8e-3) for fp16/bf16 and ``1e-5 * max|out|`` for fp32 (IEEE
fp32 products, no TF32, like torch's default matmul), with a relative RMS error below ``eps / 2`` (a
correctly rounded result has about 0.3 eps); against the twin within those plus the twin's own distance
to float64 (cuBLAS may reduce split-K partial sums in half precision). Triton's CPU interpreter rounds
fp32 -> bf16 by truncation, so these bf16 bounds hold for compiled kernels (round to nearest) only. The whole mesh decoder (fp16 torso, full size) with fast paths on and off: head
features within relative RMS 2e-3 (the per-conv rounding differences pass through two blocks and
GroupNorms), and FlexiCubes meshes whose vertex and face counts agree within 1 % (random weights put
many SDF values near zero, where those differences can flip a sign).
"""
import json
from pathlib import Path

import pytest
import torch

from trellis import fastpaths
from trellis.core import backends
from trellis.modules.sparse import SparseTensor
from trellis.modules.sparse.conv import (gathered_gemm_wins, neighbour_map, submanifold_conv3d,
                                         submanifold_conv3d_torch)
from trellis.modules.sparse.spatial import downsample, subdivide

DEV = "cuda"
MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "state_dict"


def shell(target: int, res: int = 64, subdivisions: int = 0, c: int = 8) -> SparseTensor:
    """A thick spherical shell of about ``target`` voxels at ``res``^3, subdivided ``subdivisions`` times
    (each voxel -> its 8 children, in the decoder's order)."""
    r = torch.arange(res, device=DEV, dtype=torch.float32) + 0.5 - res / 2
    d = torch.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    radius, lo, hi = res * 0.38, 0.0, res / 4
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if int((torch.abs(d - radius) < mid).sum()) < target else (lo, mid)
    xyz = (torch.abs(d - radius) < hi).nonzero().int()
    x = SparseTensor(torch.zeros(len(xyz), c, device=DEV),
                     torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32, device=DEV), xyz], 1))
    for _ in range(subdivisions):
        x = subdivide(x)
    return x


def conv_case(x: SparseTensor, c_in: int, c_out: int, dtype, seed: int):
    g = torch.Generator(device=DEV).manual_seed(seed)
    feats = torch.randn(x.coords.shape[0], c_in, device=DEV, generator=g).to(dtype)
    w = (torch.randn(c_out, 3, 3, 3, c_in, device=DEV, generator=g) / (27 * c_in) ** 0.5).to(dtype)
    b = (torch.randn(c_out, device=DEV, generator=g) * 0.1).to(dtype)
    return SparseTensor(feats, x.coords, cache=x.cache), w, b


def nvrtc_takes(x, c_in, c_out) -> bool:
    """Whether the NVRTC kernel takes this conv (else it answers NotImplemented and the twin runs)."""
    return x.dtype in (torch.float16, torch.bfloat16) and c_in % 8 == 0 and c_out % 2 == 0


def kernel_and_twin(x, w, b, backend="triton", **kw):
    """(the backend's kernel's output, the twin's). Through the dispatcher for Triton, except for the channels the
    kernels leave to the twin's gathered GEMM (``gathered_gemm_wins``: the kernel itself is still checked there);
    the NVRTC module is called directly so a decline cannot pass as the twin's numbers (it must decline exactly
    what ``nvrtc_takes`` says it does not take)."""
    assert fastpaths.path_of("sparse_conv3d", DEV) == backend, fastpaths.reason_off("sparse_conv3d", DEV)
    if backend == "triton" and gathered_gemm_wins(w.shape[-1], w.shape[0]):
        module = fastpaths._import_kernel_module("trellis_triton.sparse_conv")
        return module.implicit_gemm(x.feats, neighbour_map(x, 3), w, b, **kw), submanifold_conv3d_torch(x, w, b)
    if backend == "nvrtc":
        module = fastpaths._import_kernel_module("trellis_nvrtc.sparse_conv")
        kern = module.implicit_gemm(x.feats, neighbour_map(x, 3), w, b, **kw)
        if not nvrtc_takes(x, w.shape[-1], w.shape[0]):
            assert kern is NotImplemented
            return None, None
        assert kern is not NotImplemented
    else:
        kern = submanifold_conv3d(x, w, b, backend="torch")      # "torch": ours (kernel, else twin); no spconv
    assert f"sparse_conv3d:{backend}" not in fastpaths._disabled, fastpaths._disabled
    return kern, submanifold_conv3d_torch(x, w, b)


def check_against_float64(x, w, b, kern, twin):
    if kern is None:                    # declined (checked by kernel_and_twin)
        return
    ref = submanifold_conv3d_torch(x.replace(x.feats.double()), w.double(), b.double())
    scale = ref.abs().max().item()
    eps = 1e-5 if x.dtype == torch.float32 else torch.finfo(x.dtype).eps
    k_err = (kern.double() - ref).abs().max().item()
    t_err = (twin.double() - ref).abs().max().item()
    diff = (kern.double() - twin.double())

    def rel_rms(d):
        return (d.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
    k_rms, t_rms, rms = rel_rms(kern.double() - ref), rel_rms(twin.double() - ref), rel_rms(diff)
    msg = (f"max: kernel {k_err / scale:.2e}, twin {t_err / scale:.2e} of max|out| {scale:.3g}; rel RMS: kernel "
           f"{k_rms:.2e}, twin {t_rms:.2e}, kernel vs twin {rms:.2e}")
    assert kern.dtype == x.dtype and kern.shape == twin.shape
    assert torch.isfinite(kern).all()
    assert k_err <= eps * scale, msg
    assert k_rms <= eps / 2, msg
    assert diff.abs().max().item() <= eps * scale + t_err, msg
    assert rms <= eps / 2 + t_rms, msg


_SHELLS = {}


def level(name: str) -> SparseTensor:
    """The structure at each level of the networks (built once, neighbour maps cached on it)."""
    if name not in _SHELLS:
        if name == "32":
            x = downsample(shell(20_000, 64))
        else:
            x = shell(20_000, 64, {"64": 0, "128": 1, "256": 2}[name])
        _SHELLS[name] = x
    return _SHELLS[name]


# (level, C_in, C_out): the SLat flow's input/output blocks and the mesh decoder's subdivision blocks.
REAL_SHAPES = [
    ("64", 128, 128), ("32", 128, 1024), ("32", 1024, 1024), ("64", 2048, 128), ("64", 256, 128),
    ("128", 768, 192), ("128", 192, 192), ("256", 192, 96), ("256", 96, 96),
]


@pytest.mark.parametrize("lvl, c_in, c_out", REAL_SHAPES)
def test_kernel_equals_twin_on_the_networks_shapes(lvl, c_in, c_out, backend):
    x, w, b = conv_case(level(lvl), c_in, c_out, torch.float16, c_in + c_out)
    kern, twin = kernel_and_twin(x, w, b, backend)
    check_against_float64(x, w, b, kern, twin)


def test_wide_convs_go_to_the_twins_gathered_gemm_and_the_rest_to_the_kernel(backend):
    for c_in, c_out, expected in ((1024, 1024, "pytorch"), (512, 2048, "pytorch"), (256, 1024, backend),
                                  (2048, 128, backend)):
        x, w, b = conv_case(level("32"), c_in, c_out, torch.float16, 7)
        with fastpaths.paths_taken() as taken:
            out = submanifold_conv3d(x, w, b, backend="torch")
        assert taken["sparse_conv3d"] == expected, (c_in, c_out, taken)
        if expected == "pytorch":
            assert torch.equal(out, submanifold_conv3d_torch(x, w, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c_in, c_out", [(192, 96), (96, 96)])
def test_kernel_equals_twin_in_bf16_and_fp32(dtype, c_in, c_out, backend):
    x, w, b = conv_case(level("128"), c_in, c_out, dtype, 7)
    kern, twin = kernel_and_twin(x, w, b, backend)
    check_against_float64(x, w, b, kern, twin)


@pytest.mark.parametrize("n_keep, c_in, c_out", [(1, 16, 16), (1000, 40, 8), (12_345, 100, 72), (4097, 8, 24),
                                                 (3001, 24, 130)])
def test_kernel_equals_twin_on_odd_sizes(n_keep, c_in, c_out, backend):
    base = level("64")
    keep = torch.randperm(base.coords.shape[0], generator=torch.Generator().manual_seed(n_keep))[:n_keep]
    coords = base.coords[keep.sort().values.to(DEV)]          # sparser: many sites without neighbours
    x, w, b = conv_case(SparseTensor(torch.zeros(len(coords), 1, device=DEV), coords), c_in, c_out,
                        torch.float16, n_keep)
    assert (neighbour_map(x, 3) == len(coords)).any()
    kern, twin = kernel_and_twin(x, w, b, backend)
    check_against_float64(x, w, b, kern, twin)


def test_no_bias_and_declined_inputs(backend):
    x, w, _ = conv_case(level("64"), 64, 32, torch.float16, 3)
    kern, twin = kernel_and_twin(x, w, None, backend)
    check_against_float64(x, w, torch.zeros(32, device=DEV, dtype=w.dtype), kern, twin)
    sparse_conv = fastpaths._import_kernel_module(f"trellis_{backend}.sparse_conv")   # installed or in extensions/
    xd = x.replace(x.feats.double())
    assert sparse_conv.submanifold_conv3d(xd, w.double(), None) is NotImplemented      # float64: the twin
    with torch.enable_grad():
        wg = w.clone().requires_grad_()
        assert sparse_conv.submanifold_conv3d(x, wg, None) is NotImplemented            # autograd: the twin


@pytest.mark.parametrize("tiles", [(128, 128), (64, 128), (128, 64), (64, 64)])
@pytest.mark.parametrize("turing", [False, True])
def test_nvrtc_tiles_and_turing_path(tiles, turing, monkeypatch):
    """Each tile shape of the NVRTC kernel, on C_out that fill and that do not fill a tile, and C_in with a
    partial last step of 32; ``turing``: Turing's code (plain loads, two m16n8k8 MMAs per step; fp16 only)."""
    monkeypatch.setenv(fastpaths.ENV_VAR, "nvrtc")
    module = fastpaths._import_kernel_module("trellis_nvrtc.sparse_conv")
    for dtype in (torch.float16, torch.bfloat16):
        for c_in, c_out in ((192, 96), (40, 192), (128, 130)):
            x, w, b = conv_case(level("64"), c_in, c_out, dtype, c_in * c_out)
            if turing and dtype == torch.bfloat16:
                assert module.implicit_gemm(x.feats, neighbour_map(x, 3), w, b, tiles=tiles,
                                            turing=True) is NotImplemented
                continue
            kern, twin = kernel_and_twin(x, w, b, "nvrtc", tiles=tiles, turing=turing)
            check_against_float64(x, w, b, kern, twin)


def test_nvrtc_conv_inside_a_captured_cuda_graph(monkeypatch):
    """The flows' CUDA-graph replay (MemoryPolicy(cuda_graphs=True)) captures the io blocks' convs: the NVRTC
    kernel launches on the capturing stream and a replay on new inputs gives the eager result."""
    monkeypatch.setenv(fastpaths.ENV_VAR, "nvrtc")
    assert fastpaths.path_of("sparse_conv3d", DEV) == "nvrtc"
    x, w, b = conv_case(level("64"), 128, 128, torch.float16, 11)
    assert nvrtc_takes(x, 128, 128)
    static = x.feats.clone()
    xs = SparseTensor(static, x.coords, cache=x.cache)
    eager_first = submanifold_conv3d(xs, w, b, backend="torch")        # compiles, builds the neighbour map
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        out = submanifold_conv3d(xs, w, b, backend="torch")
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager_first)
    static.copy_(torch.randn_like(static))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, submanifold_conv3d(xs, w, b, backend="torch"))
    assert "sparse_conv3d:nvrtc" not in fastpaths._disabled


def test_neighbour_maps_on_the_gpu_equal_the_search():
    from trellis.modules.sparse import conv
    for name in ("32", "256"):
        coords = level(name).coords.long()
        offsets = conv.kernel_offsets(3)
        grid = conv._neighbour_map_grid(coords, offsets.tolist(), 1)
        assert grid is not None                                  # 258^3 fits the dense-grid budget
        assert torch.equal(grid, conv._neighbour_map_search(coords, offsets.to(DEV)))


def test_a_1024_level_neighbour_grid_equals_the_search():
    """The dense grid a roomy GPU allows at the TRELLIS.2 decoders' finest level (``conv.grid_budget``): a thin shell
    of ~2 M voxels in a 1024^3 box, every row of the map equal to the binary search's."""
    from trellis.modules.sparse import conv
    if torch.cuda.mem_get_info()[0] < 24 * 2 ** 30:
        pytest.skip("needs ~20 GiB free (a 1024^3 distance volume, the 4.3 GB grid and the search's temporaries)")
    a = torch.arange(1024, device=DEV, dtype=torch.float32) + 0.5 - 512
    d = torch.sqrt(a[:, None, None] ** 2 + a[None, :, None] ** 2 + a[None, None, :] ** 2)
    xyz = ((d - 380).abs() < 0.9).nonzero()
    del d
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long, device=DEV), xyz], 1)
    offsets = conv.kernel_offsets(3)
    grid = conv._neighbour_map_grid(coords, offsets.tolist(), 1, budget=1 << 31)
    assert grid is not None and len(coords) > 1_000_000
    assert torch.equal(grid, conv._neighbour_map_search(coords, offsets.to(DEV)))
    if conv.grid_budget(torch.device(DEV)) >= 1026 ** 3:         # a roomy card takes the grid in neighbour_map too
        assert torch.equal(conv.neighbour_map(SparseTensor(torch.zeros(len(coords), 1, device=DEV), coords), 3), grid)
    del grid, coords, xyz
    torch.cuda.empty_cache()                                     # ~9 GB cached: later tests' budgets assume less


def _mesh_decoder():
    config = json.loads(json.loads((MANIFESTS / "slat_decoder_mesh.json").read_text())["ckpt_json_text"])
    import trellis.models as models
    torch.manual_seed(0)
    with torch.device(DEV):
        model = models.from_config(config)
    model.set_torso_dtype(torch.float16)
    return model.eval()


@torch.no_grad()
def test_whole_mesh_decoder_with_fast_paths_on_and_off(backend):
    assert fastpaths.path_of("sparse_conv3d", DEV) == backend
    model = _mesh_decoder()
    x64 = shell(20_000, 64)
    g = torch.Generator(device=DEV).manual_seed(0)
    slat = SparseTensor(torch.randn(x64.coords.shape[0], 8, device=DEV, generator=g), x64.coords)
    outs = {}
    before = backends.get("sparse_conv")
    backends.set_backend("sparse_conv", "torch")        # compare the kernel with the twin, not spconv
    try:
        for fast in (True, False):
            fastpaths.set_enabled(False if not fast else None)     # None: the backend named by the fixture
            try:
                fresh = SparseTensor(slat.feats, slat.coords)
                feats = model.decode_features(fresh)
                mesh = model.to_representation(feats)[0]
                outs[fast] = (feats.feats.float(), mesh.vertices.shape[0], mesh.faces.shape[0])
            finally:
                fastpaths.set_enabled(None)
    finally:
        backends.set_backend("sparse_conv", before)
    assert f"sparse_conv3d:{backend}" not in fastpaths._disabled
    (f_on, v_on, t_on), (f_off, v_off, t_off) = outs[True], outs[False]
    assert f_on.shape[0] > 1_000_000 and torch.isfinite(f_on).all()
    rms = ((f_on - f_off).pow(2).mean().sqrt() / f_off.pow(2).mean().sqrt()).item()
    assert rms <= 2e-3, rms
    assert abs(v_on - v_off) <= 0.01 * v_off and abs(t_on - t_off) <= 0.01 * t_off, (v_on, v_off, t_on, t_off)


def test_flexicubes_blocks_sized_by_free_memory_give_the_same_mesh(monkeypatch):
    """On CUDA the extraction's blocks grow with the free memory (flexicubes._block_sizes); the mesh equals
    the one made in the smallest blocks (faces bit for bit; vertices and colours to the rounding of CUDA's
    atomic sums, which differ run to run anyway; face normals as computed from those vertices at once), on the
    decoder's features of a 1.3 M-face shell."""
    import trellis.representations.mesh.flexicubes as fc
    from trellis.representations.mesh import extract_mesh

    model = _mesh_decoder()
    x64 = shell(20_000, 64)
    g = torch.Generator(device=DEV).manual_seed(0)
    feats = model.decode_features(SparseTensor(torch.randn(x64.coords.shape[0], 8, device=DEV, generator=g),
                                               x64.coords))
    s = feats.layout[0]
    coords, f = feats.coords[s, 1:], feats.feats[s]
    cube_block, face_block = fc._block_sizes(f.device)
    assert cube_block >= 1 << 20 and face_block >= 1 << 24, (cube_block, face_block)   # an idle GPU: one block
    big = extract_mesh(coords, f, model.mesh_resolution, use_color=model.use_color)
    monkeypatch.setattr(fc, "_block_sizes", lambda device: (fc.CUBE_BLOCK, fc.FACE_BLOCK))
    small = extract_mesh(coords, f, model.mesh_resolution, use_color=model.use_color)
    assert big.faces.shape[0] > 1_000_000
    assert torch.equal(big.faces, small.faces)
    torch.testing.assert_close(big.vertices, small.vertices, atol=1e-6, rtol=0)
    torch.testing.assert_close(big.vertex_attrs, small.vertex_attrs, atol=1e-5, rtol=0)
    # normals: from the vertices in blocks as at once (those of a sliver face follow its vertices' rounding)
    from trellis.representations.mesh.mesh_extract_result import MeshExtractResult
    assert torch.equal(big.face_normal_rows, MeshExtractResult.face_normal_rows_of(big.vertices, big.faces))
