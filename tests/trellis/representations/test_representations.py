"""Gaussian activations (spec §13.1), PLY layout and round trip; Strivec/MeshExtractResult basics."""
import math

import numpy as np
import pytest
import torch

from trellis.representations import Gaussian, MeshExtractResult
from trellis.representations.gaussian import PLY_TRANSFORM, matrix_to_quaternion, quaternion_to_matrix

PLY_FIELDS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
              "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def random_gaussian(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    rep = Gaussian(aabb=[-0.5, -0.5, -0.5, 1, 1, 1], sh_degree=0, mininum_kernel_size=9e-4, scaling_bias=4e-3,
                   opacity_bias=0.1, scaling_activation="softplus")
    rep._xyz = torch.rand(n, 3, generator=g)
    rep._features_dc = torch.randn(n, 1, 3, generator=g)
    rep._scaling = torch.randn(n, 3, generator=g)
    rep._rotation = torch.randn(n, 4, generator=g) * 0.3
    rep._opacity = torch.randn(n, 1, generator=g)
    return rep


def test_activations_follow_spec():
    rep = random_gaussian()
    torch.testing.assert_close(rep.get_xyz, rep._xyz - 0.5)
    bias = math.log(math.expm1(0.004))
    assert rep.scale_bias == pytest.approx(-5.51946, abs=1e-4)
    sp = torch.nn.functional.softplus(rep._scaling + bias)
    torch.testing.assert_close(rep.get_scaling, torch.sqrt(sp ** 2 + 9e-4 ** 2))
    q = rep._rotation + torch.tensor([1.0, 0, 0, 0])
    torch.testing.assert_close(rep.get_rotation, q / q.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(rep.get_opacity, torch.sigmoid(rep._opacity + math.log(0.1 / 0.9)))
    assert rep.get_features is rep._features_dc


def test_ply_layout_and_round_trip(tmp_path):
    rep = random_gaussian()
    path = tmp_path / "g.ply"
    rep.save_ply(path)
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 50"]
    assert [ln.split()[-1] for ln in lines if ln.startswith("property")] == PLY_FIELDS
    assert all(ln.startswith("property float ") for ln in lines if ln.startswith("property"))
    data = np.frombuffer(body, "<f4").reshape(50, 17)
    xyz = rep.get_xyz.numpy()
    np.testing.assert_allclose(data[:, :3], np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], 1), atol=1e-6)
    assert (data[:, 3:6] == 0).all()
    np.testing.assert_allclose(data[:, 9], torch.logit(rep.get_opacity)[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(data[:, 10:13], torch.log(rep.get_scaling).numpy(), atol=1e-5)
    back = Gaussian(aabb=[-0.5, -0.5, -0.5, 1, 1, 1], mininum_kernel_size=9e-4, scaling_bias=4e-3,
                    opacity_bias=0.1, scaling_activation="softplus")
    back.load_ply(path)
    torch.testing.assert_close(back.get_xyz, rep.get_xyz, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(back.get_scaling, rep.get_scaling, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(back.get_opacity, rep.get_opacity, atol=1e-6, rtol=1e-5)
    # rotations agree as rotations (q and -q are the same)
    torch.testing.assert_close(quaternion_to_matrix(back.get_rotation), quaternion_to_matrix(rep.get_rotation),
                               atol=1e-5, rtol=1e-5)


def test_ply_rotation_is_transformed_like_positions():
    rep = random_gaussian(n=20, seed=1)
    t = torch.tensor(PLY_TRANSFORM, dtype=torch.float32)
    q = rep._rotation + torch.tensor([1.0, 0, 0, 0])
    rotated = matrix_to_quaternion(t @ quaternion_to_matrix(q))
    torch.testing.assert_close(quaternion_to_matrix(rotated), t @ quaternion_to_matrix(q), atol=1e-5, rtol=1e-5)


def test_mesh_extract_result_normals_and_success():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    m = MeshExtractResult(v, torch.tensor([[0, 1, 2]]), torch.rand(3, 6), res=64)
    assert m.success
    torch.testing.assert_close(m.face_normal, torch.tensor([[[0.0, 0, 1]] * 3]))
    empty = MeshExtractResult(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, 6))
    assert not empty.success
