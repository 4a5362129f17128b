"""A voxelised sphere as TRELLIS.2's O-Voxel (a MeshWithVoxel): its fine voxels, their dual vertices on the sphere,
the dual grid's mesh, and attributes that follow a known pattern (base colour red rising and blue falling with height
z, metallic 1 on the +x half, roughness rising with y, alpha 0 on a cap): the PBR export's input in the tests of
trellis/export/pbr/ and of what reads its GLBs (the Blender add-on)."""
import torch

from trellis.representations.ovoxel import MeshWithVoxel, flexible_dual_grid_to_mesh

RES, RADIUS, CAP = 64, 0.35, 0.25


def voxel_sphere(res: int = RES, cap: float | None = CAP, cap_alpha: float = 0.0) -> MeshWithVoxel:
    """The fine voxels within a voxel of a sphere, each with its dual vertex on the sphere and the edge flags of
    the sphere's crossings (§7.3), and the attribute pattern of the module docstring."""
    idx = torch.arange(res)
    grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)
    centre = (grid + 0.5) / res - 0.5
    keep = (centre.norm(dim=1) - RADIUS).abs() < 1.0 / res
    coords, p = grid[keep], centre[keep]
    dual = (p / p.norm(dim=1, keepdim=True) * RADIUS + 0.5) * res - coords

    def inside(corner):
        return (corner / res - 0.5).norm(dim=-1) < RADIUS
    flags = []
    for a in range(3):                      # voxel c's a-edge runs from c + 1 (c_a on axis a) one voxel along a
        start = (coords + 1).float()
        start[:, a] = coords[:, a].float()
        end = start.clone()
        end[:, a] += 1
        flags.append(inside(start) != inside(end))
    v, f = flexible_dual_grid_to_mesh(coords, dual, torch.stack(flags, 1), None, res)
    return MeshWithVoxel(v, f, coords, res, pattern((coords + 0.5) / res - 0.5, cap, cap_alpha))


def pattern(w: torch.Tensor, cap: float | None = CAP, cap_alpha: float = 0.0) -> torch.Tensor:
    """[N, 6] attributes at world points w (z up): base colour, metallic, roughness, alpha."""
    out = torch.stack([w[:, 2] + 0.5, torch.full_like(w[:, 0], 0.3), 0.5 - w[:, 2], (w[:, 0] > 0).float(),
                       w[:, 1] + 0.5, torch.ones_like(w[:, 0])], 1)
    if cap is not None:
        out[w[:, 2] > cap, 5] = cap_alpha
    return out
