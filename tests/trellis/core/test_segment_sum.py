"""Row sums by index in a fixed order (trellis.core.segment_sum): the sort-based sum a GPU runs gives index_add_'s
result (exactly where the sums are exact), on rows in any order, repeated, of any width, in float64 too."""
import torch

from trellis.core.segment_sum import index_add_in_order_, index_add_sorted_


def test_the_sorted_sum_is_index_adds():
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 50, (5000,), generator=g)
    values = torch.randint(-8, 9, (5000, 3), generator=g).float() / 4        # exact sums in float32
    want = torch.zeros(60, 3).index_add_(0, index, values)
    got = index_add_sorted_(torch.zeros(60, 3), index, values)
    assert torch.equal(got, want)
    flat = torch.rand(5000, generator=g, dtype=torch.float64)
    assert torch.allclose(index_add_sorted_(torch.ones(60, dtype=torch.float64), index, flat),
                          torch.ones(60, dtype=torch.float64).index_add_(0, index, flat), rtol=1e-12, atol=0)


def test_an_empty_index_and_a_cpu_tensor_keep_index_adds_behaviour():
    out = torch.arange(4.0)
    assert torch.equal(index_add_sorted_(out.clone(), torch.zeros(0, dtype=torch.long), torch.zeros(0)), out)
    index, values = torch.tensor([3, 1, 3]), torch.tensor([0.1, 0.2, 0.3])
    assert torch.equal(index_add_in_order_(out.clone(), index, values), out.clone().index_add_(0, index, values))
