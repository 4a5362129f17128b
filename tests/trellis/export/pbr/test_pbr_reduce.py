"""The O-Voxel export's reduction to the face target (trellis/export/pbr/cluster.py, reduce.py, sorting.py): grid
clustering on exact small cases, the sorts against their torch twins, a random-weight decoder's mesh of noisy open
sheets brought to its target within 5 % with its vertices within the bound the cell gives (and its GLB valid), a
voxel sphere kept on the sphere, the steps' record, a cancel inside the clustering, and the normal map restoring
detail that the reduced mesh no longer has."""
import numpy as np
import pytest
import torch

from tests.helpers.gltf import glb_json, validate_gltf
from tests.helpers.ovoxel_blobs import random_blob
from tests.helpers.ovoxels import RADIUS, voxel_sphere
from trellis.core.callbacks import Cancelled
from trellis.export.pbr import SurfaceGrid, bake_ovoxel, ovoxel_to_glb
from trellis.export.pbr.cluster import cluster_to_faces, cluster_vertices
from trellis.export.pbr.prepare import dense_mesh
from trellis.export.pbr.reduce import CONTRACT_TOLERANCE, cluster_stage, finish_reduction, reduce_to_target
from trellis.export.pbr.sorting import (count_distinct, count_distinct_torch, first_of_each, first_of_each_torch,
                                       unique_counts, unique_counts_torch, unique_inverse, unique_inverse_torch)
from trellis.representations.ovoxel import MeshWithVoxel, flexible_dual_grid_to_mesh


def grid_sheet(n: int):
    """A flat n x n grid of unit squares in z = 0, two triangles each (vertices [(n+1)^2, 3], faces [2 n^2, 3])."""
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    v = torch.stack([i.reshape(-1), j.reshape(-1), torch.zeros((n + 1) ** 2, dtype=torch.long)], 1).float()
    a = (torch.arange(n)[:, None] * (n + 1) + torch.arange(n)[None, :]).reshape(-1)
    f = torch.cat([torch.stack([a, a + n + 1, a + 1], 1), torch.stack([a + 1, a + n + 1, a + n + 2], 1)])
    return v, f


def test_clustering_merges_the_cells_keeps_faces_once_and_stays_on_a_plane():
    v, f = grid_sheet(8)                                     # 128 triangles, spacing 1
    cv, cf = cluster_vertices(v, f, 2.0, origin=torch.tensor([-0.5, -0.5, -0.5]))
    # cells of 2 x 2 spacings: vertices 0..8 fall in 5 cells per axis, a 5 x 5 grid of clusters, 4 x 4 squares
    assert len(cv) == 25 and len(cf) == 32
    assert torch.all(cv[:, 2].abs() < 1e-6)                 # the plane's quadric keeps every vertex on it
    keys = torch.sort(cf, 1).values
    assert len(torch.unique(keys, dim=0)) == len(cf)         # each triple of cells once
    assert torch.all((cf[:, 0] != cf[:, 1]) & (cf[:, 1] != cf[:, 2]) & (cf[:, 0] != cf[:, 2]))
    # normals all one way, as the input's
    n = torch.cross(cv[cf[:, 1]] - cv[cf[:, 0]], cv[cf[:, 2]] - cv[cf[:, 0]], dim=1)
    assert torch.all(n[:, 2] < 0) or torch.all(n[:, 2] > 0)
    whole, none = cluster_vertices(v, f, 100.0)              # one cell: every face collapses
    assert len(whole) == 0 and len(none) == 0
    with pytest.raises(ValueError, match="positive"):
        cluster_vertices(v, f, 0.0)


def test_the_sorting_helpers_equal_their_torch_twins():
    key = torch.tensor([5, 3, 5, 9, 3, 3, 1])
    uniq, inverse = unique_inverse(key)
    assert uniq.tolist() == [1, 3, 5, 9] and torch.equal(uniq[inverse], key)
    assert first_of_each(key).tolist() == [0, 1, 3, 6] and count_distinct(key) == 4
    for k in (key, torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0)), key[:0]):
        for fast, twin in ((unique_inverse, unique_inverse_torch), (unique_counts, unique_counts_torch),
                           (first_of_each, first_of_each_torch)):
            for a, b in zip(*(x if isinstance(x, tuple) else (x,) for x in (fast(k), twin(k)))):
                assert torch.equal(a, b)
        assert count_distinct(k) == count_distinct_torch(k)


def without_clocks(record):
    """A record without any of its "seconds"."""
    if isinstance(record, dict):
        return {k: without_clocks(v) for k, v in record.items() if k != "seconds"}
    return record


@pytest.mark.parametrize("target", [2400, 3000])
def test_the_clustering_made_apart_gives_the_same_reduction_and_record(target):
    """``cluster_stage`` made first (as the early preparation makes it, in the sampling's thread) and handed to
    ``finish_reduction``: the same arrays and the same record as one call; the steps after it run on CPU tensors.
    At 2400 the clustering lands past its tolerance (within the loose one) and the quadric trim runs; at 3000 not."""
    mesh = random_blob(150, latent=32)
    v, f = dense_mesh(mesh)
    one: dict = {}
    want = reduce_to_target(v, f, target, mesh.voxel_size, info=one)
    made = cluster_stage(v, f, target, mesh.voxel_size, info={})
    assert made.vertices.device.type == "cpu" and made.faces.device.type == "cpu"
    got: dict = {}
    have = finish_reduction(made, target, info=got)
    assert np.array_equal(want[0], have[0]) and np.array_equal(want[1], have[1])
    assert ("trim" in one) == (target == 2400), one
    assert without_clocks(one) == without_clocks(got) and set(one["seconds"]) == set(got["seconds"])


def test_a_random_weight_blob_reaches_its_target_within_the_cells_bound():
    """The decoder's mesh of a random-weight network: mostly open border, where edge collapses stall far above the
    target; the clustering lands on it, each vertex within a cell's reach of the dense surface."""
    mesh = random_blob(150, latent=32)
    v, f = dense_mesh(mesh)
    target = 3000
    info = {}
    out_v, out_f = reduce_to_target(v, f, target, mesh.voxel_size, info=info)
    assert abs(len(out_f) - target) <= CONTRACT_TOLERANCE * target, info
    assert out_f.min() >= 0 and out_f.max() < len(out_v) and np.isfinite(out_v).all()
    assert {"cluster", "holes"} <= set(info) and info["cluster"]["tries"] >= 1
    assert {"cluster", "fill_holes"} <= set(info["seconds"])
    cell = info["cluster"]["cell_voxels"] * mesh.voxel_size
    hit = SurfaceGrid(v, f).closest(torch.as_tensor(out_v))
    # a representative stays within half a cell of its cell, which holds a dense vertex: 1.5 cell diagonals
    assert float((hit.point - torch.as_tensor(out_v)).norm(dim=1).max()) <= 1.5 * 3 ** 0.5 * cell


def test_the_blobs_glb_meets_its_target_and_passes_the_khronos_validator(tmp_path):
    path = tmp_path / "blob.glb"
    textured = ovoxel_to_glb(random_blob(100, latent=32, seed=1), path, target_faces=2000, texture_size=128)
    assert abs(len(textured.faces) - 2000) <= CONTRACT_TOLERANCE * 2000
    report = validate_gltf(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    assert "metallicRoughnessTexture" in glb_json(path)["materials"][0]["pbrMetallicRoughness"]


def test_a_voxel_sphere_clustered_stays_on_the_sphere_at_its_target():
    mesh = voxel_sphere(48, cap=None)
    v, f = dense_mesh(mesh)
    got = cluster_to_faces(v, f, 1500, 0.03, mesh.voxel_size)
    assert abs(len(got.faces) - 1500) <= 0.03 * 1500 and got.cell > mesh.voxel_size
    radius = got.vertices.norm(dim=1)
    assert float((radius - RADIUS).abs().max()) < 0.25 * mesh.voxel_size     # quadric placement, not cell means
    same = cluster_to_faces(v, f, 10 ** 9)                  # a target above the mesh: the mesh as it is
    assert same.cell == 0 and torch.equal(same.faces, f)


def test_a_cancel_inside_the_clustering_stops_the_export():
    mesh = random_blob(60, latent=32)
    seen = []
    with pytest.raises(Cancelled):
        bake_ovoxel(mesh, target_faces=500, texture_size=32, normal_map=False, cancel=lambda: "cluster" in seen,
                    progress=lambda stage, done, total: seen.append(stage))
    assert "uv_unwrap" not in seen


def bumpy_ovoxel(res: int = 40) -> MeshWithVoxel:
    """A sphere with bumps of a few voxels (r = R + 0.03 sin 6x sin 6y sin 6z): detail the reduced mesh loses."""
    idx = torch.arange(res)
    grid = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)

    def sdf(p):
        return p.norm(dim=-1) - RADIUS - 0.03 * torch.sin(6 * np.pi * p).prod(-1)
    centre = (grid + 0.5) / res - 0.5
    keep = sdf(centre).abs() < 1.5 / res
    coords, p = grid[keep], centre[keep].clone().requires_grad_(True)
    g, = torch.autograd.grad(sdf(p).sum(), p)
    p = (p - (sdf(p) / (g * g).sum(-1))[:, None] * g).detach()          # one Newton step onto the surface
    dual = ((p + 0.5) * res - coords).clamp(-0.5, 1.5)
    flags = []
    for a in range(3):
        start = (coords + 1).float()
        start[:, a] = coords[:, a].float()
        end = start.clone()
        end[:, a] += 1
        flags.append((sdf(start / res - 0.5) < 0) != (sdf(end / res - 0.5) < 0))
    v, f = flexible_dual_grid_to_mesh(coords, dual, torch.stack(flags, 1), None, res)
    return MeshWithVoxel(v, f, coords, res, torch.full((len(coords), 6), 0.5))


def test_the_normal_map_gives_back_the_bumps_the_reduced_mesh_lost():
    """Per texel, the baked tangent-space normal turned back into world space agrees with the dense surface's
    normal there (the bumps) far better than the reduced mesh's own interpolated normal does."""
    from trellis.export.pbr.bake import texel_points
    from trellis.export.pbr.dense_normals import VertexFaces, dense_normals_at, texel_frames

    mesh = bumpy_ovoxel()
    out = bake_ovoxel(mesh, target_faces=300, texture_size=96)
    v, f, uv = (torch.as_tensor(a) for a in (out.vertices, out.faces, out.uvs))
    pix, face, bary, points = texel_points(v.float(), f.long(), uv.float(), 96)
    crease = out.info["normal_map"]["crease_angle"]
    normal, tangent, bitangent = texel_frames(out.vertices, out.faces, out.uvs, face, bary, crease,
                                              out.split.for_faces(out.faces, crease))
    dv, df = dense_mesh(mesh)
    hit = SurfaceGrid(dv, df).closest(points)
    truth = dense_normals_at(dv, df, VertexFaces(df, len(dv)), hit.face, hit.bary)
    truth = torch.where(((truth * normal).sum(-1) < 0)[:, None], -truth, truth)      # the dense mesh's side
    local = torch.as_tensor(np.asarray(out.normal_texture), dtype=torch.float32).reshape(-1, 3)[pix] / 255 * 2 - 1
    mapped = torch.nn.functional.normalize(local[:, :1] * tangent + local[:, 1:2] * bitangent
                                           + local[:, 2:] * normal, dim=-1)

    def degrees(a):
        return torch.rad2deg(torch.acos((a * truth).sum(-1).clamp(-1, 1))).median()
    assert degrees(mapped) < 5 and degrees(mapped) < 0.5 * degrees(normal)


def scattered_quads(n: int, size: float = 0.004):
    """``n`` small separate squares (two triangles each, open: a 4-edge hole each) on a grid 0.05 apart."""
    corners = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float32) * size
    offsets = torch.stack([torch.arange(n) % 8, torch.arange(n) // 8, torch.zeros(n, dtype=torch.long)], 1) * 0.05
    v = (offsets[:, None, :] + corners[None]).reshape(-1, 3)
    base = torch.arange(n)[:, None] * 4
    f = torch.cat([base + torch.tensor([0, 1, 2]), base + torch.tensor([0, 2, 3])], 1).reshape(-1, 3)
    return v, f


@pytest.mark.parametrize("target_share", [1.0, 0.99])
def test_the_reduction_never_ends_with_no_faces(target_share):
    """The tiny model's mesh of separate quads at a target of about its own faces (Simplify 0): closing each quad's
    hole doubles the faces, and the trim back to the target collapses each closed piece whole; the mesh before the
    patches is kept instead of none."""
    v, f = scattered_quads(64)
    target = int(len(f) * target_share)
    info = {}
    out_v, out_f = reduce_to_target(v, f, target, 1 / 512, info=info)
    assert info["holes"]["holes_filled"] == 64
    assert len(out_f) > 0 and abs(len(out_f) - target) <= CONTRACT_TOLERANCE * target, info
    assert out_f.max() < len(out_v)
