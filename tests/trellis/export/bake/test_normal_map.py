"""The tangent-space normal map (trellis/export/bake/normal_map.py, trellis/export/tangents.py): its convention
(glTF: +X along increasing u, +Y along increasing v of our v-up UVs, mirrored charts through the tangent's w), and
what it is for: the low-poly mesh shaded with it is much closer to the dense mesh than with its own normals."""
import math

import numpy as np
import pytest
import torch
import trimesh

from trellis.export.bake.normal_map import (angular_error, bake_normal_map, dense_normals_view, shading_normals,
                                            smooth_normals)
from trellis.export.bake.observations import observation_cameras
from trellis.export.tangents import corner_sums, vertex_tangents
from trellis.renderers.cameras import orbit_cameras

from tests.helpers.meshes import plane
from tests.helpers.blender import inspected

SIZE, RES, VIEWS = 64, 128, 12


def square(mirror_u: bool = False):
    """The low-poly: one flat quad at z = 0 with u along +x (or -x) and v along +y."""
    v, f = plane(1, lambda x, y: 0 * x)
    u = (v[:, 0] + 0.5) if not mirror_u else (0.5 - v[:, 0])
    return v, f, np.stack([u, v[:, 1] + 0.5], 1).astype(np.float32)


def top_cameras():
    return orbit_cameras([0.0, 0.5, 1.5, 3.0, 4.5], [1.2, 1.0, 1.3, 1.1, 1.4])


def test_corner_sums_are_add_at_bit_for_bit():
    """The tangents' per-vertex sums add in np.add.at's order, corner by corner: the same bits (each vertex here
    sums ~18 terms, so another order would show in the last bits)."""
    rng = np.random.default_rng(1)
    f = rng.integers(0, 50, (300, 3))
    values, weight = rng.normal(size=(300, 3)), rng.random((300, 3))
    expected = np.zeros((60, 3))                                      # 10 vertices no face uses
    for k in range(3):
        np.add.at(expected, f[:, k], values * weight[:, k:k + 1])
    assert corner_sums(f, values, weight, 60).tobytes() == expected.tobytes()
    quadrics = rng.normal(size=(300, 10))                             # unweighted, any width (the LODs' quadrics)
    expected = np.zeros((60, 10))
    for k in range(3):
        np.add.at(expected, f[:, k], quadrics)
    assert corner_sums(f, quadrics, None, 60).tobytes() == expected.tobytes()


def test_tangents_follow_u_and_the_handedness_follows_v():
    v, f, uv = square()
    t = vertex_tangents(v, f, uv, np.tile([0.0, 0.0, 1.0], (len(v), 1)))
    np.testing.assert_allclose(t[:, :3], np.tile([1.0, 0, 0], (len(v), 1)), atol=1e-6)
    assert (t[:, 3] == 1).all()                       # cross(n, t) = +y = the direction of increasing v
    v, f, uv = square(mirror_u=True)
    t = vertex_tangents(v, f, uv, np.tile([0.0, 0.0, 1.0], (len(v), 1)))
    np.testing.assert_allclose(t[:, :3], np.tile([-1.0, 0, 0], (len(v), 1)), atol=1e-6)
    assert (t[:, 3] == -1).all()                      # mirrored chart: the bitangent must still point up v


@pytest.mark.parametrize("tilt, mirror, channel, sign", [("x", False, 0, -1), ("y", False, 1, -1),
                                                          ("x", True, 0, 1), ("y", True, 1, -1)])
def test_a_tilted_dense_surface_gives_the_glTF_channels(tilt, mirror, channel, sign):
    # Dense surface z = 0.1 x (or y): its normal leans to -x (-y). In the map, red is the lean along +u and green
    # along +v (glTF: "+X is right and +Y is up" in the image, v up), so red < 128 where u runs along +x, red > 128
    # where the chart is mirrored (u along -x), and green < 128 in both.
    a = 0.1
    dense = plane(32, (lambda x, y: a * x) if tilt == "x" else (lambda x, y: a * y))
    v, f, uv = square(mirror)
    ext, intr = top_cameras()
    out = bake_normal_map(dense[0], dense[1], v, f, uv, SIZE, ext, intr, RES, device="cpu")
    centre = out[SIZE // 4: 3 * SIZE // 4, SIZE // 4: 3 * SIZE // 4].reshape(-1, 3).astype(np.float64)
    decoded = centre / 255 * 2 - 1
    expected = sign * a / math.sqrt(1 + a * a)
    assert np.abs(decoded[:, channel] - expected).max() < 0.02, decoded[:, channel].min()
    other = 1 - channel
    assert np.abs(decoded[:, other]).max() < 0.02 and (decoded[:, 2] > 0.99).all()


def test_a_dense_surface_equal_to_the_low_poly_gives_a_flat_map():
    v, f, uv = square()
    ext, intr = top_cameras()
    out = bake_normal_map(*plane(16, lambda x, y: 0 * x), v, f, uv, SIZE, ext, intr, RES, device="cpu")
    assert np.abs(out.astype(int) - [128, 128, 255]).max() <= 1


def bumpy_sphere(subdivisions: int):
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.4)
    v = np.asarray(s.vertices, np.float64)
    d = v / np.linalg.norm(v, axis=1, keepdims=True)
    r = 1 + 0.04 * np.sin(9 * d[:, 0]) * np.sin(9 * d[:, 1]) * np.sin(9 * d[:, 2] + 1)
    return (v * r[:, None]).astype(np.float32), np.asarray(s.faces, np.int64)


@pytest.mark.slow
def test_the_map_at_least_halves_the_shading_error_of_a_decimated_mesh():
    from trellis.export.cleanup.decimate import simplify_mesh
    from trellis.export.uv.unwrap import unwrap_uv

    torch.manual_seed(0)
    dv, df = bumpy_sphere(5)                                        # 20 480 faces
    lv, lf = simplify_mesh(dv, df, 0.97)                            # ~600 faces
    lv, lf, luv, _ = unwrap_uv(np.asarray(lv, np.float32), np.asarray(lf, np.int64), method="charts",
                               texture_size=128)
    ext, intr = observation_cameras(24)
    info = {}
    nmap = bake_normal_map(dv, df, lv, lf, luv, 128, ext, intr, 192, device="cpu", info=info)
    assert info["normal_map_observed_share"] > 0.9
    held_ext, held_intr = orbit_cameras([0.3, 1.9, 3.7, 5.1], [0.2, -0.5, 0.7, -0.1])
    dn = smooth_normals(torch.from_numpy(dv), torch.from_numpy(df))
    without, with_map = [], []
    for e, k in zip(held_ext, held_intr):
        truth, tmask, _ = dense_normals_view(torch.from_numpy(dv), torch.from_numpy(df), dn, e, k, 160)
        plain, m0 = shading_normals(lv, lf, luv, None, e, k, 160)
        mapped, m1 = shading_normals(lv, lf, luv, nmap, e, k, 160)
        both = tmask & m0 & m1
        without.append(angular_error(plain, truth, both))
        with_map.append(angular_error(mapped, truth, both))
    e0, e1 = float(np.mean(without)), float(np.mean(with_map))
    print(f"\nshading error vs the dense mesh: {e0:.2f} deg without the map, {e1:.2f} deg with it")
    assert e1 <= 0.5 * e0, (e0, e1)


@pytest.fixture(scope="module")
def with_map():
    """A bumpy sphere decimated and baked with its normal map (the export's own path, small)."""
    from trellis.export.schedule import bake_textured_mesh

    from tests.helpers.asset import make_gaussians, make_mesh
    torch.manual_seed(0)
    v, f = make_mesh(4)
    return bake_textured_mesh(make_gaussians(v, f, n=8000), (v, f), simplify=0.9, fill_holes=False,
                              texture_size=64, verbose=False, nviews=8, render_resolution=96, device="cpu",
                              uv_method="charts", normal_map=True)


def test_the_export_bakes_the_map_and_the_glb_carries_it_with_its_tangents(with_map, tmp_path):
    from tests.helpers.gltf import glb_json, validate_gltf

    assert with_map.normal_texture.shape == (64, 64, 3) and with_map.normal_texture.dtype == np.uint8
    assert with_map.info["normal_map"]["observed_share"] > 0.5
    # mostly "up" in tangent space (blue high), with detail: not one flat colour
    nt = with_map.normal_texture.reshape(-1, 3).astype(float)
    assert np.median(nt[:, 2]) > 230 and nt[:, :2].std() > 2
    for fmt in ("png", "jpeg", "webp"):
        path = with_map.save(tmp_path / f"m_{fmt}.glb", texture_format=fmt)
        report = validate_gltf(path)
        assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
        doc = glb_json(path)
        prim = doc["meshes"][0]["primitives"][0]
        assert {"POSITION", "NORMAL", "TEXCOORD_0", "TANGENT"} <= set(prim["attributes"])
        tangent = doc["accessors"][prim["attributes"]["TANGENT"]]
        assert (tangent["type"], tangent["componentType"]) == ("VEC4", 5126)
        material = doc["materials"][prim["material"]]
        assert "normalTexture" in material and "baseColorTexture" in material["pbrMetallicRoughness"]
    loaded = trimesh.load(tmp_path / "m_png.glb", force="mesh")
    got = np.asarray(loaded.visual.material.normalTexture.convert("RGB"))
    np.testing.assert_array_equal(got, with_map.normal_texture)
    # other files: no map (and no error); a map baked for other normals is refused
    with_map.save(tmp_path / "m.obj")
    with pytest.raises(ValueError, match="baked for normals split at"):
        with_map.save(tmp_path / "m.glb", crease_angle=30)
    with_map.save(tmp_path / "g.glb", geometry_only=True)
    assert "normalTexture" not in glb_json(tmp_path / "g.glb")["materials"][0]


def test_blender_imports_the_glb_with_the_normal_map_bound_to_its_material(with_map, tmp_path):
    seen = inspected(with_map.save(tmp_path / "m.glb"))
    assert seen["meshes"] and seen["meshes"][0]["faces"] == len(with_map.faces) and seen["meshes"][0]["uv_maps"]
    material = seen["materials"][0]
    assert material["base_color_image"] == [64, 64]
    assert material["normal_map"] == {"space": "TANGENT", "uv_map": material["normal_map"]["uv_map"],
                                      "image": [64, 64], "colorspace": "Non-Color"}, material
