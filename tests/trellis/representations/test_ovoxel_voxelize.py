"""Mesh -> O-Voxel (TRELLIS2_TEXTURING_FACTS.md §5, §12.3, §12.4, §12.11): the single-triangle grid at R = 8, the
box-constrained QEF solve, the conservative overlap test against brute force, chunking invariance, welding, and
a tessellated sphere against the §5.2 rule applied to the exact sphere."""
import itertools

import numpy as np
import pytest
import torch
import trimesh

from trellis.representations.ovoxel import (mesh_to_ovoxel, ovoxel_features, ovoxel_mesh, plane_quadrics, solve_box)
from trellis.representations.ovoxel.qef import pack, regularization_quadrics, unpack
from trellis.representations.ovoxel.lookup import VoxelLookup
from trellis.representations.ovoxel.voxel_terms import (add_boundary_term, add_face_term, box_overlaps_triangle,
                                                         boundary_edges)

TRIANGLE = torch.tensor([[0.03, 0.03, 0.55], [0.95, 0.03, 0.55], [0.03, 0.95, 0.55]]) - 0.5


def test_single_triangle_at_r8_matches_the_facts():
    grid = mesh_to_ovoxel(TRIANGLE, torch.tensor([[0, 1, 2]]), 8)
    got = {tuple(c) for c in grid.coords.tolist()}
    assert len(grid.coords) == 34
    # creation order: row n = 1, column m = 1 makes its 4 voxels (x outer, y inner), m = 2 adds 2 more
    assert grid.coords[:6].tolist() == [[0, 0, 4], [0, 1, 4], [1, 0, 4], [1, 1, 4], [2, 0, 4], [2, 1, 4]]
    assert got == {(a, b, 4) for a in range(7) for b in range(7) if max(a, 1) + max(b, 1) <= 7}
    assert not grid.intersected[:, :2].any()
    zflags = {tuple(c[:2]) for c, f in zip(grid.coords.tolist(), grid.intersected.tolist()) if f[2]}
    assert zflags == {(a, b) for a in range(6) for b in range(6) if a + b <= 5}
    feats = ovoxel_features(grid)
    inner = [(c, f) for c, f in zip(grid.coords.tolist(), feats) if c[0] >= 1 and c[1] >= 1 and c[0] + c[1] <= 5]
    assert len(inner) == 10
    for _, f in inner:
        torch.testing.assert_close(f, torch.tensor([0, 0, -0.1, -0.5, -0.5, 0.5]), atol=1e-5, rtol=0)
    assert grid.dual_vertices.min() >= 0 and grid.dual_vertices.max() <= 1


def test_box_constrained_solve_matches_the_facts():
    plane = torch.tensor([[1.0, 0, 0, -1.2]], dtype=torch.float64)
    q = pack(plane[:, :, None] * plane[:, None, :])
    q = q + regularization_quadrics(torch.tensor([[0.9, 0.5, 0.5]], dtype=torch.float64),
                                    torch.tensor([0.01], dtype=torch.float64))
    free = torch.linalg.solve(unpack(q)[:, :3, :3], -unpack(q)[:, :3, 3])
    assert free[0, 0].item() == pytest.approx(1.19703, abs=1e-5)
    x, e = solve_box(q, torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64))
    torch.testing.assert_close(x, torch.tensor([[1.0, 0.5, 0.5]], dtype=torch.float64))
    assert e.item() == pytest.approx(0.0401, abs=1e-9)


def test_box_solve_is_the_minimum_over_the_box():
    g = torch.Generator().manual_seed(3)
    planes = torch.randn(40, 3, 4, generator=g, dtype=torch.float64)
    q = pack((planes[..., :, None] * planes[..., None, :]).sum(1)) + regularization_quadrics(
        torch.rand(40, 3, generator=g, dtype=torch.float64) * 3 - 1, torch.full((40,), 0.05, dtype=torch.float64))
    lo = torch.zeros(40, 3, dtype=torch.float64)
    x, e = solve_box(q, lo, lo + 1)
    assert ((x >= 0) & (x <= 1)).all()
    s = torch.linspace(0, 1, 21, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(s, s, s, indexing="ij"), -1).reshape(1, -1, 3).expand(40, -1, 3)
    full = unpack(q)
    dense = ((pts @ full[:, :3, :3]) * pts).sum(-1) + 2 * (pts * full[:, None, :3, 3]).sum(-1) + full[:, None, 3, 3]
    assert (e <= dense.min(dim=1).values + 1e-9).all()


def test_face_term_candidates_equal_brute_force_over_the_bbox():
    g = torch.Generator().manual_seed(0)
    tri = torch.rand(30, 3, 3, generator=g, dtype=torch.float64) * 6 + 1
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], dim=-1)
    every = torch.tensor(list(itertools.product(range(8), repeat=3)))
    for f in range(30):
        q = torch.zeros(len(every), 10, dtype=torch.float64)
        add_face_term(q, tri[f:f + 1], torch.ones(1, 10, dtype=torch.float64), VoxelLookup(every), 8, budget=7)
        lo, hi = torch.floor(tri[f].amin(0)).long(), torch.floor(tri[f].amax(0)).long()
        inside = ((every >= lo) & (every <= hi)).all(1)
        brute = inside & box_overlaps_triangle(tri[f:f + 1].expand(len(every), 3, 3),
                                               normal[f:f + 1].expand(len(every), 3), every.double())
        assert torch.equal(q[:, 0] > 0, brute), f


def test_chunking_changes_nothing():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.45)
    v, f = torch.tensor(mesh.vertices), torch.tensor(mesh.faces)
    a = mesh_to_ovoxel(v, f, 24)
    b = mesh_to_ovoxel(v, f, 24, chunk=301)
    assert torch.equal(a.coords, b.coords) and torch.equal(a.intersected, b.intersected)
    torch.testing.assert_close(a.dual_vertices, b.dual_vertices, atol=1e-6, rtol=0)


def test_seams_are_welded_for_the_boundary_term_only_when_asked():
    box = trimesh.creation.box(extents=(0.6, 0.5, 0.4))
    split = box.copy()
    split.unmerge_vertices()                               # every face its own vertices: 36 boundary edges
    assert len(boundary_edges(torch.tensor(split.faces))) == 36
    assert len(boundary_edges(torch.tensor(box.faces))) == 0
    merged = mesh_to_ovoxel(torch.tensor(box.vertices), torch.tensor(box.faces), 16)
    welded = mesh_to_ovoxel(torch.tensor(split.vertices), torch.tensor(split.faces), 16)
    by_index = mesh_to_ovoxel(torch.tensor(split.vertices), torch.tensor(split.faces), 16, weld=False)
    assert torch.equal(merged.coords, welded.coords)
    torch.testing.assert_close(merged.dual_vertices, welded.dual_vertices)
    assert torch.equal(merged.coords, by_index.coords)
    assert not torch.allclose(merged.dual_vertices, by_index.dual_vertices)


def _exact_sphere_voxels(res, radius):
    """§5.2 applied to the exact sphere (centre of the cube): the 4 voxels around every crossed grid edge."""
    c, rho, out = res / 2, radius * res, set()
    m = np.arange(1, res)
    mm, nn = np.meshgrid(m, m, indexing="ij")
    disc = rho ** 2 - (mm - c) ** 2 - (nn - c) ** 2
    for axis in range(3):
        ax0, ax1 = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-1, 1):
            ok = disc > 0
            z = c + sign * np.sqrt(disc[ok])
            for a, b, k in zip(mm[ok], nn[ok], np.floor(z).astype(int)):
                for d0, d1 in itertools.product((0, 1), (0, 1)):
                    v = [0, 0, 0]
                    v[ax0], v[ax1], v[axis] = a - 1 + d0, b - 1 + d1, k
                    out.add(tuple(v))
    return out


def test_tessellated_sphere_follows_the_rule_and_its_mesh_is_closed():
    radius, res = 0.499995, 32
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    grid = mesh_to_ovoxel(torch.tensor(mesh.vertices), torch.tensor(mesh.faces), res)
    got, want = {tuple(c) for c in grid.coords.tolist()}, _exact_sphere_voxels(res, radius)
    assert len(got ^ want) <= 0.01 * len(want)
    world = (grid.coords.double() + grid.dual_vertices.double()) / res - 0.5
    assert ((world.norm(dim=1) - radius).abs() * res).max() < 0.1  # dual vertices on the surface
    out = ovoxel_mesh(grid, res)
    tm = trimesh.Trimesh(out.vertices.numpy(), out.faces.numpy(), process=False)
    tm.remove_unreferenced_vertices()
    assert tm.is_watertight
    assert tm.area == pytest.approx(4 * np.pi * radius ** 2, rel=0.01)


def test_plane_quadric_of_a_degenerate_triangle_is_zero():
    tri = torch.tensor([[[0.0, 0, 0], [1, 1, 1], [2, 2, 2]]], dtype=torch.float64)
    assert torch.equal(plane_quadrics(tri), torch.zeros(1, 10, dtype=torch.float64))


@pytest.mark.parametrize("start, end, want", [
    ((0.5, 0.5, 0.5), (2.5, 2.5, 0.5), [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 2, 0), (2, 2, 0)]),
    ((2.5, 2.5, 0.5), (0.5, 0.5, 0.5), [(2, 2, 0), (2, 1, 0), (1, 1, 0), (1, 0, 0), (0, 0, 0)]),
    ((0.5, 0.5, 0.5), (0.5, 2.0, 0.5), [(0, 0, 0), (0, 1, 0), (0, 2, 0)]),
])
def test_boundary_walk_steps_the_later_axis_first_on_ties(start, end, want):
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))
    q = torch.zeros(len(every), 10, dtype=torch.float64)
    v = torch.tensor([start, end], dtype=torch.float64)
    add_boundary_term(q, v, torch.tensor([[0, 1]]), VoxelLookup(every), 0.2, 1e-9, budget=5)
    got = {tuple(c) for c, row in zip(every.tolist(), q) if row.abs().sum() > 0}
    assert got == set(want)
    assert (q.abs().sum(1) > 0).sum() == len(want)                   # each visited once


def test_a_cancel_stops_the_voxelisation_between_chunks():
    from trellis.core.callbacks import Cancelled
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.45)
    asked = []

    def cancel():
        asked.append(1)
        return len(asked) > 3
    with pytest.raises(Cancelled):
        mesh_to_ovoxel(torch.tensor(mesh.vertices), torch.tensor(mesh.faces), 24, chunk=301, cancel=cancel)
    assert len(asked) == 4
