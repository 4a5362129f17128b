"""Random sparse voxel structures for the model tests."""
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


def uneven_structure(seed, res=16, batch=2, density=0.2, channels=8) -> SparseTensor:
    """As random_structure, but item b keeps voxels with probability density * (1 + 0.3 b): items of different
    sizes unless batch == 1."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for b in range(batch):
        xyz = (torch.rand(res, res, res, generator=g) < density * (1 + 0.3 * b)).nonzero().int()
        parts.append(torch.cat([torch.full((len(xyz), 1), b, dtype=torch.int32), xyz], 1))
    coords = torch.cat(parts)
    return SparseTensor(torch.randn(len(coords), channels, generator=g), coords)
