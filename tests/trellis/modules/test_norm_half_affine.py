"""LayerNorm32's half copies of its affine weights (``half_affine``, used on a GPU): made only where every value is
exact in half, kept until the parameters change in place or move; ``exact_in`` on its own."""
import torch

from trellis.modules.norm import LayerNorm32, exact_in


def test_exact_in_casts_only_what_survives_the_cast():
    a = torch.tensor([1.0, 0.5, -3.25])
    b = torch.tensor([1.0 + 2 ** -20])
    assert exact_in(torch.float16, a, None)[0].dtype == torch.float16
    assert exact_in(torch.float16, a, None)[1] is None
    assert exact_in(torch.float16, a, b) is None
    assert exact_in(torch.bfloat16, torch.tensor([1.0 + 2 ** -9])) is None     # a float16 value, not a bfloat16 one


def test_the_half_copies_follow_the_parameters():
    norm = LayerNorm32(8, elementwise_affine=True)
    first = norm.half_affine(torch.float16)
    assert first is not None and torch.equal(first[0].float(), norm.weight.detach())
    assert norm.half_affine(torch.float16) is first                 # kept
    with torch.no_grad():
        norm.weight.mul_(1 + 2 ** -20)                               # no longer exact
    assert norm.half_affine(torch.float16) is None
    norm.load_state_dict({"weight": torch.full((8,), 2.0), "bias": torch.zeros(8)})
    again = norm.half_affine(torch.float16)
    assert again is not None and torch.equal(again[0], torch.full((8,), 2.0, dtype=torch.float16))


def test_the_cpu_keeps_the_fp32_path():
    norm = LayerNorm32(16, elementwise_affine=True)
    x = torch.randn(5, 16).half()
    want = torch.nn.functional.layer_norm(x.float(), (16,), norm.weight, norm.bias, norm.eps).half()
    assert torch.equal(norm(x), want)
