"""The export tests' synthetic asset: a bumpy sphere whose colour is a function of position (a soft 3-D checker, sine
bands) and small flat Gaussians sampled on its surface carrying that colour."""
import torch
import torch.nn.functional as F

from trellis.representations import Gaussian
from trellis.representations.gaussian import SH_C0, matrix_to_quaternion


def pattern(p: torch.Tensor) -> torch.Tensor:
    """The asset's RGB at points p [..., 3]."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r = 0.5 + 0.4 * torch.tanh(2 * torch.sin(22 * x) * torch.sin(22 * y + 1) * torch.sin(22 * z + 2))
    g = 0.5 + 0.3 * torch.sin(12 * y + 2) * torch.cos(9 * z) + 0.1 * torch.sin(40 * x)
    b = 0.5 + 0.35 * torch.sin(16 * z + 6 * x)
    return torch.stack([r, g, b], -1).clamp(0.02, 0.98)


def make_mesh(subdivisions: int = 4):
    """The bumpy sphere (radius about 0.33, concave regions): float32 vertices, int64 faces."""
    import trimesh           # here: the test modules skip without it (pytest.importorskip)

    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces, dtype=torch.int64)
    radius = 0.33 + 0.07 * torch.sin(9 * v[:, 0]) * torch.sin(9 * v[:, 1]) * torch.sin(7 * v[:, 2] + 0.5)
    return v * radius[:, None], f


def make_gaussians(v, f, n: int = 40000, sigma: float = 0.006, seed: int = 0) -> Gaussian:
    """Flat discs (normal scale 0.15 sigma) sampled uniformly on the surface, opacity 0.97."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = torch.cross(b - a, c - a, dim=-1)
    fi = torch.multinomial(cross.norm(dim=-1), n, replacement=True, generator=g)
    s1 = torch.rand(n, generator=g).sqrt()
    r2 = torch.rand(n, generator=g)
    p = (1 - s1)[:, None] * a[fi] + (s1 * (1 - r2))[:, None] * b[fi] + (s1 * r2)[:, None] * c[fi]
    nrm = F.normalize(cross[fi], dim=-1)
    t1 = F.normalize(torch.cross(nrm, torch.randn(n, 3, generator=g), dim=-1), dim=-1)
    rot = matrix_to_quaternion(torch.stack([t1, torch.cross(nrm, t1, dim=-1), nrm], -1))
    gs = Gaussian(aabb=[-0.5, -0.5, -0.5, 1, 1, 1], mininum_kernel_size=0.0, scaling_bias=0.004,
                  opacity_bias=0.1, scaling_activation="softplus")
    gs.from_xyz(p)
    gs.from_scaling(torch.tensor([sigma, sigma, 0.15 * sigma]).expand(n, 3).clone())
    gs.from_rotation(rot)
    gs.from_opacity(torch.full((n, 1), 0.97))
    gs.from_features(((pattern(p) - 0.5) / SH_C0)[:, None, :])
    return gs
