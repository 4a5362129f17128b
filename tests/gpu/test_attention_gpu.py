"""cuDNN-first attention ("cudnn": packed sequences of one length and dense calls; "auto" keeps FlashAttention-2 at
v1's lengths, below TUNING.cudnn_min_tokens, where the whole chain measured slower with cuDNN) against the
FlashAttention-2 paths, and the samplers' CUDA-graph replay against eager sampling, on the GPU (tests/gpu: skipped
without CUDA).

Tolerance, stated once: cuDNN and FlashAttention-2 accumulate in fp32 in different orders, so fp16 outputs
differ by rounding: one attention call within relative RMS 2e-3 (measured 3.6e-4 to 3.8e-4 on an H100), a whole
24-block flow within 4e-3 (the compiled-block bound of test_compiled_block_gpu.py). Sequences of different
lengths never take the cuDNN path: there "auto" gives torch's varlen kernel's result bit for bit.
"""
import warnings

import pytest
import torch

from trellis.core import backends
from trellis.modules.attention import functional as fn
from trellis.modules.attention.functional import SeqLens, dense_attention, varlen_attention
from trellis.modules.sparse import SparseTensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rel_rms(a, b):
    a, b = a.float(), b.float()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def hopper():
    return torch.cuda.get_device_capability() >= (9, 0)


@pytest.fixture
def varlen_backend():
    def use(name):
        backends.set_backend("varlen", name)
        backends.set_backend("dense", name if name in backends.DENSE_BACKENDS else "sdpa")
    yield use
    backends.reload_from_env()


@torch.no_grad()
@pytest.mark.parametrize("b, n, l", [(2, 4096, 4096), (2, 4096, 1374), (1, 4500, 1374)])
def test_dense_cudnn_equals_sdpa(b, n, l):
    g = torch.Generator(device="cuda").manual_seed(n + l)
    q = torch.randn(b, n, 16, 64, device="cuda", generator=g).half()
    k = torch.randn(b, l, 16, 64, device="cuda", generator=g).half()
    v = torch.randn(b, l, 16, 64, device="cuda", generator=g).half()
    assert not fn._cudnn_wanted("auto", q, n)              # "auto" keeps FlashAttention-2 at v1's lengths
    assert fn._cudnn_wanted("cudnn", q) == (fn._sdpa_priority() is not None)
    got = dense_attention(q, k, v, backend="cudnn")
    want = dense_attention(q, k, v, backend="sdpa")
    assert got.shape == want.shape and got.dtype == torch.float16
    assert rel_rms(got, want) < 2e-3


@torch.no_grad()
@pytest.mark.parametrize("count, n, l", [(2, 4500, 4500), (2, 4500, 1374), (1, 3000, 3000)])
def test_uniform_varlen_auto_equals_torch_varlen(count, n, l):
    """The flows' case: the CFG pair shares one structure; q is a strided slice of a packed qkv tensor."""
    g = torch.Generator(device="cuda").manual_seed(n)
    qkv = torch.randn(count * n, 3, 16, 64, device="cuda", generator=g).half()
    q = qkv[:, 0]
    kv = torch.randn(count * l, 2, 16, 64, device="cuda", generator=g).half()
    k, v = kv.unbind(1)
    sq, sk = SeqLens([n] * count, "cuda"), SeqLens([l] * count, "cuda")
    assert fn.resolve_varlen_backend("auto", q, n) == "torch_varlen"  # below TUNING.cudnn_min_tokens
    if fn._sdpa_priority() is not None:
        assert fn.resolve_varlen_backend("cudnn", q) == "cudnn"
    want = varlen_attention(q, k, v, sq, sk, backend="torch_varlen")
    assert torch.equal(varlen_attention(q, k, v, sq, sk, backend="auto"), want)
    got = varlen_attention(q, k, v, sq, sk, backend="cudnn")
    assert got.shape == want.shape == q.shape
    assert rel_rms(got, want) < 2e-3


@torch.no_grad()
@pytest.mark.parametrize("count, n, l", [(2, 4500, 4500), (2, 4500, 1374), (1, 3000, 3000), (3, 64, 77)])
def test_packed_sequences_call_the_flash_operator_with_varlen_attn_numbers(count, n, l):
    """torch_varlen calls ATen's FlashAttention-2 operator directly on the packed tensors (one C++ call instead of
    varlen_attn's Python custom operator, or SDPA's batched operator on [B, H, L, D] views for sequences of one
    length): the same kernel, the same numbers as both."""
    assert fn._flash_forward_op() is not None
    g = torch.Generator(device="cuda").manual_seed(n + l)
    qkv = torch.randn(count * n, 3, 16, 64, device="cuda", generator=g).half()
    q, k0, v0 = qkv.unbind(1)
    kv = torch.randn(count * l, 2, 16, 64, device="cuda", generator=g).half()
    k, v = (k0, v0) if n == l else kv.unbind(1)
    sq, sk = SeqLens([n] * count, "cuda"), SeqLens([l] * count, "cuda")
    got = fn._torch_varlen(q, k, v, sq, sk)
    want = fn._torch_varlen_fn()(q, k, v, sq.cu, sk.cu, sq.max, sk.max)
    assert got.shape == want.shape == q.shape and got.is_contiguous()
    assert torch.equal(got, want)
    batched = torch.ops.aten._scaled_dot_product_flash_attention(
        q.view(count, n, 16, 64).transpose(1, 2), k.view(count, l, 16, 64).transpose(1, 2),
        v.view(count, l, 16, 64).transpose(1, 2))[0]
    assert torch.equal(got, batched.transpose(1, 2).reshape(count * n, 16, 64))


@torch.no_grad()
def test_different_lengths_keep_the_varlen_kernel():
    g = torch.Generator(device="cuda").manual_seed(0)
    lq, lk = [3000, 4100], [1374, 1374]
    q = torch.randn(sum(lq), 16, 64, device="cuda", generator=g).half()
    k = torch.randn(sum(lk), 16, 64, device="cuda", generator=g).half()
    v = torch.randn(sum(lk), 16, 64, device="cuda", generator=g).half()
    got = varlen_attention(q, k, v, lq, lk, backend="auto")
    want = varlen_attention(q, k, v, lq, lk, backend="torch_varlen")
    assert torch.equal(got, want)


@torch.no_grad()
def test_whole_flows_auto_attention_equal_flash(varlen_backend):
    from benchmarks.networks_gpu import build, inputs, shell_structure

    s = shell_structure(20000)
    for key in ("slat_flow_model", "sparse_structure_flow_model"):
        model = build(key, "cuda")
        model.set_torso_dtype(torch.float16)
        x = inputs(key, s, "cuda")
        outs = {}
        for name in ("torch_varlen", "cudnn"):
            varlen_backend(name)
            args = (SparseTensor(x[0].feats, x[0].coords),) + x[1:] if isinstance(x[0], SparseTensor) else x
            out = model(*args)
            outs[name] = out.feats if isinstance(out, SparseTensor) else out
        assert rel_rms(outs["cudnn"], outs["torch_varlen"]) < 4e-3, key
        del model


def slat_flow_sampling(voxels: int, seed: int):
    """``sample(cuda_graph=...)``: a 12-step CFG-interval sampling of the full-size SLat flow (fp16 torso, random
    weights) on a ``voxels``-voxel shell, the same noise and condition at every call."""
    from benchmarks.networks_gpu import build, shell_structure
    from trellis.pipelines.samplers import FlowEulerGuidanceIntervalSampler

    model = build("slat_flow_model", "cuda")
    model.set_torso_dtype(torch.float16)
    s = shell_structure(voxels)
    g = torch.Generator(device="cuda").manual_seed(seed)
    noise = SparseTensor(torch.randn(s.coords.shape[0], model.in_channels, device="cuda", generator=g), s.coords)
    cond = torch.randn(1, 1374, 1024, device="cuda", generator=g)
    kw = dict(steps=12, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0, verbose=False)

    def sample(cuda_graph: bool):
        return FlowEulerGuidanceIntervalSampler().sample(model, noise, cond, torch.zeros_like(cond),
                                                         cuda_graph=cuda_graph, **kw)
    sample.model = model
    return sample


@torch.no_grad()
def test_graph_replay_sampling_equals_eager():
    """The sampler's CUDA-graph replay (the resident preset's default) gives the eager run's numbers: the guided
    steps replay one captured forward (same repeated structure every step), the last two unguided steps run
    eagerly, and every step's latent equals the eager run's bit for bit."""
    from trellis.pipelines.samplers import cuda_graph

    sample = slat_flow_sampling(8000, seed=3)
    captured = []
    original = cuda_graph.GraphedFlow._capture

    def spy(self, *a):
        captured.append(1)
        return original(self, *a)
    cuda_graph.GraphedFlow._capture = spy
    try:
        graphed = sample(cuda_graph=True)
    finally:
        cuda_graph.GraphedFlow._capture = original
    eager = sample(cuda_graph=False)
    assert len(captured) == 1          # 10 guided steps share one graph; the 2 unguided ones stay eager
    for a, b in zip(graphed.pred_x_t, eager.pred_x_t):
        assert torch.equal(a.feats, b.feats)


@torch.no_grad()
def test_warm_capture_keeps_the_cache_and_needs_one_eager_call():
    """Once a model has been captured in this process, a new run's graph (the SLat flow's, new shapes every job)
    is captured at the shape's second call, the capture neither synchronises into an emptied cache (no segment is
    given back to CUDA: ``torch.cuda.graph`` empties PyTorch's cache before every capture) nor changes a number,
    and the last two unguided steps (one step left after the first) are not captured for one replay."""
    from trellis.pipelines.samplers import cuda_graph

    sample = slat_flow_sampling(7000, seed=4)
    sample(cuda_graph=True)                           # this model's first capture here: two eager calls first
    assert sample.model in cuda_graph._WARM
    eager = sample(cuda_graph=False)
    captured = []
    original = cuda_graph.GraphedFlow._capture

    def spy(self, x, t, cond):
        freed = torch.cuda.memory_stats()["segment.all.freed"]
        entry = original(self, x, t, cond)
        captured.append((self.seen[self.key(x, t, cond)], self.steps_left,
                         torch.cuda.memory_stats()["segment.all.freed"] - freed))
        return entry
    cuda_graph.GraphedFlow._capture = spy
    try:
        graphed = sample(cuda_graph=True)
    finally:
        cuda_graph.GraphedFlow._capture = original
    assert captured == [(1, 10, 0)]   # the guided shape at step 2 (10 steps left), no segment freed
    for a, b in zip(graphed.pred_x_t, eager.pred_x_t):
        assert torch.equal(a.feats, b.feats)


@torch.no_grad()
def test_graph_capture_beside_a_busy_thread():
    """A batch worker samples (capturing a CUDA graph) in one thread while another exports (GPU renders, host
    copies, allocations, synchronisations). Neither may fail, and the graphed sampling still equals the
    eager one. With CUDA's default global capture mode the other thread's calls raised
    (cudaErrorStreamCaptureUnsupported / "Cannot copy between CPU and CUDA tensors during CUDA graph capture")."""
    import threading

    sample = slat_flow_sampling(6000, seed=5)
    stop, errors, rounds = threading.Event(), [], [0]

    # What such a thread may not do while another captures, and the export does not: draw from the default
    # CUDA generator (the capture claims it: "Offset increment outside graph capture"; a private generator is
    # fine) or synchronise the whole device (torch.cuda.synchronize / empty_cache wait on the capturing stream
    # too and invalidate the capture).
    own = torch.Generator(device="cuda").manual_seed(1)

    def export_like():
        try:
            while not stop.is_set():
                a = torch.randn(1536, 1536, device="cuda", generator=own)   # fresh allocations
                b = (a @ a.T).softmax(-1)
                host = b[:64].cpu()                                  # device -> host copy (synchronising)
                back = torch.from_numpy(host.numpy()).to("cuda")     # host -> device, pageable
                torch.cuda.mem_get_info()                            # as the renderers' chunking does
                torch.cuda.current_stream().synchronize()           # (not torch.cuda.synchronize(): see above)
                assert torch.equal(back, b[:64])
                rounds[0] += 1
        except BaseException as err:      # reported by the main thread
            errors.append(err)

    worker = threading.Thread(target=export_like, daemon=True)
    worker.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)          # "CUDA graph capture failed" fails the test
            graphed = sample(cuda_graph=True)
        graphed2 = sample(cuda_graph=True)
    finally:
        stop.set()
        worker.join(60)
    assert not errors, repr(errors[0])
    assert rounds[0] > 0
    eager = sample(cuda_graph=False)
    for a, b, c in zip(graphed.pred_x_t, graphed2.pred_x_t, eager.pred_x_t):
        assert torch.equal(a.feats, c.feats) and torch.equal(b.feats, c.feats)
