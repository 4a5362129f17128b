"""Sparse voxel tensors and the layers that work on them."""
from .tensor import SparseTensor, sparse_batch, sparse_cat
from .conv import SparseConv3d, SparseConvWeights, SparseSubMConv3d, submanifold_conv3d, neighbour_map
from .spatial import SparseDownsample, SparseUpsample, SparseSubdivide, downsample, upsample, subdivide
from .transformer import (SparseLinear, SparseMultiHeadAttention, SparseTransformerBlock,
                          SparseModulatedTransformerCrossBlock, window_partition)
from .blocks import SparseGroupNorm32, SparseResBlock3d, SparseSubdivideBlock3d

__all__ = [
    "SparseTensor", "sparse_batch", "sparse_cat", "SparseConv3d", "SparseConvWeights", "SparseSubMConv3d",
    "submanifold_conv3d", "neighbour_map",
    "SparseDownsample", "SparseUpsample", "SparseSubdivide", "downsample", "upsample", "subdivide",
    "SparseLinear", "SparseMultiHeadAttention", "SparseTransformerBlock", "SparseModulatedTransformerCrossBlock",
    "window_partition", "SparseGroupNorm32", "SparseResBlock3d", "SparseSubdivideBlock3d",
]
