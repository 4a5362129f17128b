"""A flow's transformer block through ``torch.compile`` (TorchInductor generates Triton kernels: the layer norms,
modulation, gating, GELU and casts around the matrix products and attention become a few fused kernels).

Twin: ``trellis.modules.transformer.block_forward_torch`` (the eager block), same arguments. Chosen by
``trellis.fastpaths`` ("flow_block") when the pipeline's memory policy asks for it (``MemoryPolicy.compile``).

Each block keeps its own compiled callable. Sparse blocks (a SparseTensor first argument: the row count changes
with every structure) compile with dynamic shapes, dense ones with static shapes (the stage-1 token grid is
fixed; a CFG batch of 1 or 2 is a second specialisation). The first call in a process compiles (all blocks of a
flow share one compiled graph; docs/benchmarks/pipeline.md#compiled-blocks); later calls run the cached code.
Half-precision results differ from the eager block by rounding only (fused kernels round intermediates once):
``tests/gpu/test_compiled_block_gpu.py`` states and checks the bound.
"""
from __future__ import annotations

import torch

_ATTR = "_trellis_compiled_forward"


def flow_block(block: torch.nn.Module, *args):
    fn = block.__dict__.get(_ATTR)
    if fn is None:
        sparse = not isinstance(args[0], torch.Tensor)
        fn = torch.compile(block.forward, dynamic=sparse)
        block.__dict__[_ATTR] = fn
    return fn(*args)
