"""O-Voxel (TRELLIS2_FACTS.md §7.2, §7.3, §10.2, §12.7, §16a.5, §16a.7): the shape head's activation, the
flexible-dual-grid quad rule (against a plain-Python recomputation), attribute sampling by hand-computed
trilinear weights, and the glTF axis swap."""
import math

import numpy as np
import pytest
import torch

from trellis.representations.ovoxel import (MeshWithVoxel, VoxelLookup, flexible_dual_grid_to_mesh, grid_sample_3d,
                                            pbr_attributes, shape_head, to_gltf_frame)

OFFSETS = {0: [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)],
           1: [(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)],
           2: [(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)]}


def python_dual_grid_faces(coords, flags, weights):
    """§7.3 written out with a dict and loops: quads in (voxel row, axis) order, each as its two triangles."""
    row_of = {tuple(c): i for i, c in enumerate(coords)}
    faces = []
    for v, c in enumerate(coords):
        for axis in range(3):
            if not flags[v][axis]:
                continue
            q = [row_of.get((c[0] + o[0], c[1] + o[1], c[2] + o[2])) for o in OFFSETS[axis]]
            if None in q:
                continue
            w = [weights[i] for i in q]
            if w[0] * w[2] > w[1] * w[3]:
                faces += [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]
            else:
                faces += [[q[0], q[1], q[3]], [q[3], q[1], q[2]]]
    return faces


def test_two_adjacent_voxels_make_no_face():
    coords = torch.tensor([[0, 0, 0], [0, 0, 1]])
    _, faces = flexible_dual_grid_to_mesh(coords, torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool),
                                          torch.ones(2), 8)
    assert faces.shape == (0, 3)


@pytest.mark.parametrize("weights, want", [([2.0, 1, 1, 1], [[0, 2, 1], [0, 1, 3]]),     # w0 w2 > w1 w3
                                           ([1.0, 1, 1, 1], [[0, 2, 3], [3, 2, 1]])])    # a tie takes the other
def test_four_voxels_around_an_x_edge_make_one_quad_split_by_the_weights(weights, want):
    # rows: q0 = (1,1,1), q2 = (1,2,2), q1 = (1,1,2), q3 = (1,2,1); the x-flag of q0 only, and a y-flag on
    # q2 whose quad lacks voxels
    coords = torch.tensor([[1, 1, 1], [1, 2, 2], [1, 1, 2], [1, 2, 1]])
    flags = torch.zeros(4, 3, dtype=torch.bool)
    flags[0, 0] = flags[1, 1] = True
    w = torch.tensor([weights[0], weights[2], weights[1], weights[3]])
    d = torch.rand(4, 3)
    vertices, faces = flexible_dual_grid_to_mesh(coords, d, flags, w, 16)
    assert faces.tolist() == want
    torch.testing.assert_close(vertices, (coords + d) / 16 - 0.5)


def test_dual_grid_faces_equal_a_plain_python_recomputation_in_emission_order():
    g = torch.Generator().manual_seed(0)
    coords = torch.nonzero(torch.rand(6, 6, 6, generator=g) < 0.7)
    coords = coords[torch.randperm(len(coords), generator=g)]          # rows in no spatial order
    flags = torch.rand(len(coords), 3, generator=g) < 0.6
    w = torch.rand(len(coords), generator=g) + 0.1
    _, faces = flexible_dual_grid_to_mesh(coords, torch.zeros(len(coords), 3), flags, w, 6)
    want = python_dual_grid_faces(coords.tolist(), flags.tolist(), w.tolist())
    assert len(want) > 50 and faces.tolist() == want


def test_shape_head_activation_ranges():
    o = torch.zeros(3, 7)
    o[1], o[2] = 30.0, -30.0
    head = shape_head(o)
    torch.testing.assert_close(head.dual_vertices[0], torch.full((3,), 0.5))
    assert head.dual_vertices[1].tolist() == [1.5] * 3 and head.dual_vertices[2].tolist() == [-0.5] * 3
    assert head.intersected.tolist() == [[False] * 3, [True] * 3, [False] * 3]
    assert head.split_weight[0].item() == pytest.approx(math.log(2))
    assert head.split_weight[2].item() > 0
    r = shape_head(torch.randn(1000, 7) * 4)
    assert r.dual_vertices.min() > -0.5 and r.dual_vertices.max() < 1.5 and r.split_weight.min() > 0
    assert pbr_attributes(torch.tensor([[-1.0, 0, 1, 2, -3, 0.5]])).tolist() == [[0, 0.5, 1, 1.5, -1, 0.75]]
    with pytest.raises(ValueError, match="7 channels"):
        shape_head(torch.zeros(2, 6))


def test_grid_sample_trilinear_renormalises_over_existing_voxels():
    coords = torch.tensor([[0, 0, 0], [1, 0, 0], [5, 5, 5]])
    feats = torch.tensor([[1.0, 10.0], [3.0, 30.0], [7.0, 70.0]])
    q = torch.tensor([[1.0, 0.5, 0.5],        # halfway between the centres of (0,0,0) and (1,0,0)
                      [1.25, 0.75, 0.5],      # (0,1,0) and (1,1,0) missing: weights 0.1875, 0.5625 of 0.75
                      [5.5, 5.5, 5.5],        # the centre of (5,5,5): that voxel alone
                      [20.0, 20.0, 20.0]])    # nothing around: zero
    got = grid_sample_3d(feats, coords, q)
    want = torch.tensor([[2.0, 20.0], [2.5, 25.0], [7.0, 70.0], [0.0, 0.0]])
    torch.testing.assert_close(got, want)
    near = grid_sample_3d(feats, coords, torch.tensor([[1.9, 0.1, 0.99], [0.5, 1.5, 0.5]]), mode="nearest")
    assert near.tolist() == [[3.0, 30.0], [0.0, 0.0]]


def test_voxel_lookup_answers_absent_negative_and_outside_queries():
    lookup = VoxelLookup(torch.tensor([[2, 0, 1], [0, 0, 0], [1, 3, 2]]))
    q = torch.tensor([[0, 0, 0], [1, 3, 2], [2, 0, 1], [-1, 0, 0], [0, 0, 2], [9, 9, 9], [2, 3, 2]])
    assert lookup.find(q).tolist() == [1, 2, 0, -1, -1, -1, -1]


def test_mesh_with_voxel_queries_attributes_at_world_points():
    coords = torch.tensor([[0, 0, 0], [1, 0, 0]])
    attrs = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]])
    mesh = MeshWithVoxel(torch.zeros(2, 3), torch.zeros(0, 3, dtype=torch.long), coords, 4).with_attrs(attrs)
    centre0 = (torch.tensor([[0.5, 0.5, 0.5]]) * mesh.voxel_size) - 0.5
    torch.testing.assert_close(mesh.query_attrs(centre0), attrs[:1])
    torch.testing.assert_close(mesh.query_attrs(centre0 + torch.tensor([[0.125, 0, 0]])), attrs.mean(0, keepdim=True))
    assert torch.equal(mesh.attr("metallic"), attrs[:, 3:4]) and mesh.attr("base_color").shape == (2, 3)
    with pytest.raises(ValueError, match="rows"):
        mesh.with_attrs(attrs[:1])


def test_gltf_axis_swap_turns_internal_z_up_into_y_up():
    v = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.25, -0.5, 0.125]])
    uv = torch.tensor([[0.25, 0.0], [0.5, 0.75]])
    gv, gn, guv = to_gltf_frame(v, v.clone(), uv)
    assert gv.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [0.25, 0.125, 0.5]]
    assert gn.tolist() == gv.tolist() and guv.tolist() == [[0.25, 1.0], [0.5, 0.25]]
    nv, nn, nuv = to_gltf_frame(v.numpy().astype(np.float32))
    assert nv.dtype == np.float32 and nv.tolist() == gv.tolist() and nn is None and nuv is None
