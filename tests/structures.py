"""Random sparse voxel structures for the model tests (helpers, not tests)."""
import torch

from trellis.modules.sparse import SparseTensor


def random_structure(seed=0, res=16, batch=1, density=0.1, channels=8, dtype=torch.float32) -> SparseTensor:
    """`batch` items, each the voxels of a res^3 grid kept with probability `density`, random features."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for b in range(batch):
        xyz = (torch.rand(res, res, res, generator=g) < density).nonzero().int()
        parts.append(torch.cat([torch.full((len(xyz), 1), b, dtype=torch.int32), xyz], 1))
    coords = torch.cat(parts)
    return SparseTensor(torch.randn(len(coords), channels, generator=g).to(dtype), coords)
