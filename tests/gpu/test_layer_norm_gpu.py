"""LayerNorm32 with an affine weight and bias on half activations on a GPU: PyTorch's half kernel with half copies
of the weights (where they are exact, as checkpoints keep them) gives the fp32 path's bits, for the widths our
networks use; weights not exact in half keep the fp32 path; a CUDA graph's capture keeps it too until checked."""
import pytest
import torch

from trellis.modules.norm import LayerNorm32, layer_norm32


def fp16_valued(n: int, g: torch.Generator, scale: float, shift: float = 0.0) -> torch.Tensor:
    return (torch.randn(n, generator=g) * scale + shift).half().float().cuda()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536])
def test_the_half_kernel_gives_the_fp32_paths_bits(channels, dtype):
    g = torch.Generator().manual_seed(channels)
    norm = LayerNorm32(channels, elementwise_affine=True, eps=1e-6).cuda()
    with torch.no_grad():
        norm.weight.copy_(fp16_valued(channels, g, 0.3, 1.0).to(dtype).float())
        norm.bias.copy_(fp16_valued(channels, g, 0.1).to(dtype).float())
    for rows in (1, 7, 4099, 70_001):
        x = (torch.randn(rows, channels, generator=g) * 3 + 0.5).to(dtype).cuda()
        want = layer_norm32(x, norm.weight, norm.bias, norm.eps)
        got = norm(x)
        assert norm.half_affine(dtype) is not None
        assert got.dtype == dtype and torch.equal(got, want), (rows, channels)


def test_weights_not_exact_in_half_keep_the_fp32_path():
    norm = LayerNorm32(256, elementwise_affine=True, eps=1e-6).cuda()
    with torch.no_grad():
        norm.weight.fill_(1.0 + 2 ** -14)          # not a float16 value
    x = torch.randn(100, 256, device="cuda").half()
    assert norm.half_affine(torch.float16) is None
    assert torch.equal(norm(x), layer_norm32(x, norm.weight, norm.bias, norm.eps))
    with torch.no_grad():
        norm.weight.fill_(1.5)                     # changed in place: checked again
    assert norm.half_affine(torch.float16) is not None


def test_a_cuda_graph_capture_before_the_check_keeps_the_fp32_path():
    norm = LayerNorm32(128, elementwise_affine=True, eps=1e-6).cuda()
    x = torch.randn(64, 128, device="cuda").half()
    want = layer_norm32(x, norm.weight, norm.bias, norm.eps)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        with torch.cuda.graph(graph, stream=side):
            out = norm(x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, want)
    assert norm.half_affine(torch.float16) is not None       # checked once outside the capture
