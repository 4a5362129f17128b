"""O-Voxels shaped like what the full-size random-weight TRELLIS.2 pipeline decodes (``trellis.tools.
tiny_trellis2_pipeline``: every C2S level keeps children 0-3, so each latent voxel becomes a 16 x 16 sheet of fine
voxels one voxel thick), with random dual vertices, edge flags, split weights and attributes: a mesh of noisy open
sheets, holes, specks and non-manifold corners, the worst case of the PBR export (tests of trellis/export/pbr/ and
benchmarks/trellis2_export_gpu.py)."""
import torch

from trellis.representations.ovoxel import MeshWithVoxel, flexible_dual_grid_to_mesh

# The share of set edge flags that gives the measured blob's faces per fine voxel (6.25 M faces from 5.07 M voxels).
FLAG_SHARE = 0.63


def random_blob(tokens: int, latent: int = 64, seed: int = 0, flag_share: float = FLAG_SHARE,
                device="cpu") -> MeshWithVoxel:
    """``tokens`` latent voxels of a ``latent``^3 grid (those nearest its centre, slightly jittered), each a 16 x 16
    sheet of fine voxels on the (16 latent)^3 grid, with random dual vertices in (-0.5, 1.5), flags set with
    probability ``flag_share``, softplus split weights and uniform attributes in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(latent)
    grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)
    r = ((grid + 0.5) / latent - 0.5).norm(dim=1)
    chosen = grid[torch.argsort(r + 0.05 * torch.rand(len(r), generator=g))[:tokens]]
    sheet = torch.stack(torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij"), -1).reshape(-1, 2)
    fine = (chosen[:, None, :] * 16).repeat(1, 256, 1)
    fine[:, :, :2] += sheet
    coords = fine.reshape(-1, 3)
    m = coords.shape[0]
    dual = 2 * torch.sigmoid(torch.randn(m, 3, generator=g)) - 0.5
    flags = torch.rand(m, 3, generator=g) < flag_share
    weight = torch.nn.functional.softplus(torch.randn(m, generator=g))
    res = latent * 16
    v, f = flexible_dual_grid_to_mesh(coords, dual, flags, weight, res)
    attrs = torch.rand(m, 6, generator=g)
    return MeshWithVoxel(v.to(device), f.to(device), coords.int().to(device), res, attrs.to(device))
