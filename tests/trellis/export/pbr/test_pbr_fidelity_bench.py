"""benchmarks/pbr_fidelity.py's comparison: a GLB baked from a perfect O-Voxel scores close to what its voxels hold,
and the same GLB with a wrong texture scores low (the measure can fail); the bake's texel fit keeps what the voxels
hold better than point-sampled texels did."""
import numpy as np
import pytest
import torch

from benchmarks.pbr_fidelity import read_glb, surface_fidelity, voxel_ceiling
from benchmarks.pbr_truth import Revolved, Sphere, perfect_ovoxel, truth
from trellis.export.pbr import bake_ovoxel


@pytest.fixture(scope="module")
def sphere():
    shape = Sphere()
    mesh, facts = perfect_ovoxel(shape, 64)
    return shape, mesh, facts


def test_perfect_ovoxel_is_closed_and_on_the_surface(sphere):
    shape, mesh, facts = sphere
    f = mesh.faces.numpy()
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    _, count = np.unique(e, axis=0, return_counts=True)
    assert (count == 2).all()                                   # closed, 2-manifold
    used = torch.unique(mesh.faces)
    r = mesh.vertices[used].norm(dim=-1)
    assert torch.allclose(r, torch.full_like(r, shape.r), atol=1e-5)
    centre = (mesh.coords.float() + 0.5) / 64 - 0.5
    assert torch.allclose(mesh.attrs, truth(centre / centre.norm(dim=-1, keepdim=True) * shape.r), atol=1e-5)


def test_goblet_profile_distance_is_exact():
    goblet = Revolved()
    p = torch.rand(2000, 3, dtype=torch.float64) - 0.5
    q, inside = goblet.closest(p)
    # from outside, the closest point lies on the wall: its own closest point is itself (from inside, the nearest
    # segment's wall can lie within its neighbour's where two segments meet: only the inside flag counts there)
    q2, _ = goblet.closest(q.double())
    assert torch.allclose(q2[~inside], q[~inside], atol=1e-5) and 0 < int(inside.sum()) < len(p)
    d = (p.float() - q).norm(dim=-1)
    assert bool((d[inside] <= goblet.t + 1e-6).all())


def test_bake_scores_high_and_a_wrong_texture_low(sphere, tmp_path):
    shape, mesh, _ = sphere
    ceiling = voxel_ceiling(mesh, shape, 20_000)
    textured = bake_ovoxel(mesh, target_faces=3000, texture_size=256, normal_map=False)
    good = tmp_path / "good.glb"
    textured.save(str(good))
    v, f, uv, base, mr = read_glb(good)
    ok = surface_fidelity(v, f, uv, base, mr, mesh, shape, 20_000)
    assert ok["boundary_edges"] == 0
    assert ok["vs_voxels"]["psnr"] > 37.5            # texels fitted to the bilinear lookup (point-sampled: 35 dB)
    assert ok["vs_truth"]["psnr"] > ceiling["trilinear"]["psnr"] - 3
    assert ok["vs_truth"]["metal_wrong_pct"] < 5
    # the same mesh and layout with the colour shifted by 9 texels and metallic inverted
    mr = mr.copy()
    mr[..., 2] = 255 - mr[..., 2]
    wrong = surface_fidelity(v, f, uv, np.roll(base, 9, axis=1), mr, mesh, shape, 20_000)
    assert wrong["vs_truth"]["psnr"] < ok["vs_truth"]["psnr"] - 3
    assert wrong["vs_voxels"]["psnr"] < ok["vs_voxels"]["psnr"] - 8
    assert wrong["vs_truth"]["metal_wrong_pct"] > 90
