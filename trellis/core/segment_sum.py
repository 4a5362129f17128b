"""Row sums by index that give the same bits at every run on a GPU as well (``out[index[i]] += values[i]``).

``Tensor.index_add_`` on CUDA adds with atomics, whose order changes from run to run, so float sums (a bake's texels,
a cluster's quadrics) differ in their last bits and exports of the same input stop being the same bytes. Here on CUDA
the rows are sorted by index (stably), each index's rows summed in that order by ``segment_reduce``, and each sum
added once; on a CPU ``index_add_`` already adds in order and is used as it is (its results unchanged).
"""
from __future__ import annotations

import torch

__all__ = ["index_add_in_order_", "index_add_sorted_"]


def index_add_in_order_(out: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out.index_add_(0, index, values)``, in the same order at every run on every device; returns ``out``."""
    if not out.is_cuda:
        return out.index_add_(0, index, values)
    return index_add_sorted_(out, index, values)


def index_add_sorted_(out: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The sort-based sum on any device (the GPU's path; a CPU runs it in tests)."""
    index = index.reshape(-1)
    if index.numel() == 0:
        return out
    order = torch.argsort(index, stable=True)
    rows, counts = torch.unique_consecutive(index[order], return_counts=True)
    sums = torch.segment_reduce(values.index_select(0, order), "sum", lengths=counts, axis=0)
    return out.index_add_(0, rows, sums.to(out.dtype))        # one add per row: no two atomics meet
