"""Closed shapes as TRELLIS.2 O-Voxels (MeshWithVoxel) from signed distance functions: the fine voxels within a voxel
of the surface, each with its dual vertex projected onto the surface and the edge flags of the surface's crossings
(inside / outside at the voxel corners, TRELLIS2_FACTS.md §7.3), as a perfect decoder would give them. A sphere, a
torus and a thin-walled cup (a wall a few voxels thick): the closed 2-manifold inputs of the PBR export's topology
tests and benchmarks. Coordinates are world units in [-0.5, 0.5]^3, z up; an SDF is negative inside."""
import torch

from trellis.representations.ovoxel import MeshWithVoxel, flexible_dual_grid_to_mesh

from .ovoxels import pattern

__all__ = ["sdf_ovoxel", "sphere_sdf", "torus_sdf", "cup_sdf", "sphere_ovoxel", "torus_ovoxel", "cup_ovoxel"]


def sphere_sdf(radius: float = 0.35):
    return lambda p: p.norm(dim=-1) - radius


def torus_sdf(major: float = 0.28, minor: float = 0.1):
    def sdf(p):
        ring = torch.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2) - major
        return torch.sqrt(ring ** 2 + p[..., 2] ** 2) - minor
    return sdf


def cup_sdf(radius: float = 0.3, height: float = 0.7, wall: float = 0.01):
    """An open-topped cylinder cup (outer ``radius``, ``height`` about z = 0) whose side and floor are ``wall``
    thick: the solid is the outer cylinder minus the inner one shifted up by the floor's thickness."""
    def cylinder(p, r, lo, hi):
        d_side = torch.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2) - r
        d_cap = torch.maximum(lo - p[..., 2], p[..., 2] - hi)
        outside = torch.sqrt(d_side.clamp(min=0) ** 2 + d_cap.clamp(min=0) ** 2)
        return outside + torch.minimum(torch.maximum(d_side, d_cap), torch.zeros_like(d_side))

    def sdf(p):
        lo, hi = -height / 2, height / 2
        outer = cylinder(p, radius, lo, hi)
        inner = cylinder(p, radius - wall, lo + wall, hi + 1.0)
        return torch.maximum(outer, -inner)
    return sdf


def _project(sdf, p: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Points moved onto the SDF's zero set along its numerical gradient (Newton steps)."""
    eps = 1e-4
    for _ in range(steps):
        d = sdf(p)
        grad = torch.stack([(sdf(p + eps * e) - sdf(p - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=p.dtype)], -1)
        p = p - (d / grad.square().sum(-1).clamp(min=1e-12))[:, None] * grad
    return p


def sdf_ovoxel(sdf, res: int = 64, attributes=pattern) -> MeshWithVoxel:
    """The O-Voxel of the solid ``sdf`` < 0 at ``res``^3 (see the module docstring): voxels whose corners do not
    all agree on inside / outside, dual vertices at the surface point nearest the voxel centre (kept within the
    voxel's one-voxel margin), edge flags where an edge's two corners differ. ``attributes(world points)`` -> [N, C]."""
    n = res + 1
    idx = torch.arange(n)
    plane = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2).double() / res - 0.5
    inside = torch.empty(n, n, n, dtype=torch.bool)
    for x in range(n):                      # slab by slab: a 512^3 grid's corners at once would not fit
        p = torch.cat([torch.full_like(plane[:, :1], x / res - 0.5), plane], 1)
        inside[x] = (sdf(p) < 0).reshape(n, n)
    # a voxel is on the surface where its 8 corners disagree
    views = [inside[a:a + res, b:b + res, c:c + res] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    some, every = views[0].clone(), views[0].clone()
    for view in views[1:]:
        some |= view
        every &= view
    mixed = some & ~every
    coords = torch.nonzero(mixed)
    centre = (coords.double() + 0.5) / res - 0.5
    surface = _project(sdf, centre)
    dual = ((surface + 0.5) * res - coords).clamp(-0.5, 1.5).float()
    flags = []
    for a in range(3):                      # voxel c's a-edge runs from c + 1 (c_a on axis a) one voxel along a
        start = coords + 1
        start[:, a] = coords[:, a]
        end = start.clone()
        end[:, a] += 1
        flags.append(inside[tuple(start.T)] != inside[tuple(end.T)])
    v, f = flexible_dual_grid_to_mesh(coords, dual, torch.stack(flags, 1), None, res)
    return MeshWithVoxel(v, f, coords, res, attributes(centre.float()))


def sphere_ovoxel(res: int = 64) -> MeshWithVoxel:
    return sdf_ovoxel(sphere_sdf(), res)


def torus_ovoxel(res: int = 64) -> MeshWithVoxel:
    return sdf_ovoxel(torus_sdf(), res)


def cup_ovoxel(res: int = 64, wall_voxels: float = 2.5) -> MeshWithVoxel:
    """A cup whose wall and floor are ``wall_voxels`` voxels thick."""
    return sdf_ovoxel(cup_sdf(wall=wall_voxels / res), res)
