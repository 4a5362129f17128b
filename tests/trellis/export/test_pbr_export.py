"""O-Voxel -> PBR GLB (trellis/export/pbr/): a voxelised sphere whose attributes follow a known pattern (base colour
red rising and blue falling with height z, metallic 1 on the +x half, roughness rising with y, alpha 0 on a cap)
exported through the real chain (dual grid, hole filling, decimation, orientation, unwrap, bake, GLB writer), then
read back with trimesh and checked against the pattern sampled at the same 3-D points, against the Khronos
validator, and for its face target, alpha mode, axes and normal map; plus the pieces on small exact cases (closest
point against brute force, orientation, the hole perimeter rule, the alpha-mode rule)."""
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from tests.helpers.ovoxels import CAP, RADIUS, RES, voxel_sphere
from tests.helpers.repo import JS_DIR
from trellis.core.callbacks import Cancelled
from trellis.export.bake.normal_map import angular_error, shading_normals
from trellis.export.bake.views import sample_texture, view_clip
from trellis.export.formats.gltf import welded
from trellis.export.pbr import (SurfaceGrid, bake_ovoxel, choose_alpha_mode, fill_small_holes, ovoxel_to_glb,
                                unify_orientation)
from trellis.export.pbr.orientation import orientation_agrees
from trellis.export.pbr.triangle_distance import closest_on_triangles
from trellis.renderers.cameras import orbit_cameras
from trellis.renderers.mesh_render import interpolate, rasterize
from trellis.representations.ovoxel import MeshWithVoxel

TARGET, SIZE = 2000, 128


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    mesh = voxel_sphere()
    path = tmp_path_factory.mktemp("pbr") / "sphere.glb"
    stages = []
    textured = ovoxel_to_glb(mesh, path, target_faces=TARGET, texture_size=SIZE,
                             progress=lambda stage, done, total: stages.append(stage))
    return mesh, textured, path, stages


def glb_json(path) -> dict:
    data = Path(path).read_bytes()
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert data[:4] == b"glTF" and kind == b"JSON"
    return json.loads(data[20:20 + length])


def glb_samples(path, n: int = 4000, seed: int = 0):
    """Random points on the GLB's triangles read straight from its buffers (no loader's conventions): (internal
    z-up points [n,3] from glTF's (x, y, z) = (x, z, -y), v-up uvs [n,2] from glTF's (s, t) = (u, 1 - v)) and the
    material's images, by texture slot."""
    from io import BytesIO

    from PIL import Image
    data = Path(path).read_bytes()
    doc = glb_json(path)
    start = 20 + struct.unpack_from("<I", data, 12)[0] + 8

    def accessor(i):
        a = doc["accessors"][i]
        view = doc["bufferViews"][a["bufferView"]]
        dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[a["componentType"]]
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        offset = start + view.get("byteOffset", 0) + a.get("byteOffset", 0)
        return np.frombuffer(data, dtype, a["count"] * width, offset).reshape(a["count"], width)
    prim = doc["meshes"][0]["primitives"][0]
    faces = accessor(prim["indices"]).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    corners = faces[rng.integers(0, len(faces), n)]
    b = rng.dirichlet(np.ones(3), n)[:, :, None]
    x, y, z = ((accessor(prim["attributes"]["POSITION"])[corners] * b).sum(1)).T
    s, t = ((accessor(prim["attributes"]["TEXCOORD_0"])[corners] * b).sum(1)).T
    material = doc["materials"][0]
    images = {}
    for slot, ref in [("base", material["pbrMetallicRoughness"]["baseColorTexture"]),
                      ("mr", material["pbrMetallicRoughness"]["metallicRoughnessTexture"])]:
        view = doc["bufferViews"][doc["images"][doc["textures"][ref["index"]]["source"]]["bufferView"]]
        blob = data[start + view.get("byteOffset", 0):start + view.get("byteOffset", 0) + view["byteLength"]]
        images[slot] = Image.open(BytesIO(blob))
    return np.stack([x, -z, y], 1), np.stack([s, 1 - t], 1), images


def glb_attributes(path, *names) -> list:
    """The primitive's accessors ``names`` ("indices" or attribute names) read straight from the GLB's buffer."""
    data = Path(path).read_bytes()
    doc = glb_json(path)
    start = 20 + struct.unpack_from("<I", data, 12)[0] + 8
    prim = doc["meshes"][0]["primitives"][0]
    out = []
    for name in names:
        a = doc["accessors"][prim["indices"] if name == "indices" else prim["attributes"][name]]
        view = doc["bufferViews"][a["bufferView"]]
        dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[a["componentType"]]
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[a["type"]]
        offset = start + view.get("byteOffset", 0) + a.get("byteOffset", 0)
        out.append(np.frombuffer(data, dtype, a["count"] * width, offset).reshape(a["count"], width))
    return out


def test_the_glb_carries_the_tangents_its_normal_map_was_baked_in(exported):
    from trellis.export.tangents import vertex_tangents
    _, textured, path, _ = exported
    faces, position, normal, uv, tangent = glb_attributes(path, "indices", "POSITION", "NORMAL", "TEXCOORD_0",
                                                          "TANGENT")
    baked = textured.pbr.tangents                                  # z up: (x, y, z) -> (x, z, -y) in the file
    assert baked is not None and len(baked) == len(tangent)
    np.testing.assert_array_equal(tangent, np.stack([baked[:, 0], baked[:, 2], -baked[:, 1], baked[:, 3]], 1))
    # the frames the writer would make from the file's own arrays: the same, to rounding
    own = vertex_tangents(position, faces.reshape(-1, 3), np.stack([uv[:, 0], 1 - uv[:, 1]], 1), normal)
    same = ((own[:, :3] * tangent[:, :3]).sum(1) > 0.999) & (own[:, 3] == tangent[:, 3])
    assert same.mean() > 0.99


def texels(image, uv) -> np.ndarray:
    """Bilinear lookup of a PIL image at v-up uvs, in [0, 1]."""
    tex = torch.as_tensor(np.array(image), dtype=torch.float64) / 255
    return sample_texture(tex, torch.as_tensor(uv)).numpy()


def test_the_glb_has_the_pbr_material_and_passes_the_khronos_validator(exported):
    _, textured, path, stages = exported
    doc = glb_json(path)
    (material,) = doc["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert {"baseColorTexture", "metallicRoughnessTexture"} <= set(pbr)
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
    assert material["doubleSided"] is True and "normalTexture" in material
    assert {"POSITION", "NORMAL", "TEXCOORD_0", "TANGENT"} <= set(doc["meshes"][0]["primitives"][0]["attributes"])
    loaded = trimesh.load(path, force="mesh").visual.material
    assert loaded.baseColorTexture.mode == "RGBA" and loaded.metallicRoughnessTexture.size == (SIZE, SIZE)
    assert {"fill_holes", "orient", "uv_unwrap", "bake", "project", "normal_map", "assemble"} <= set(stages)
    assert validator_errors(path) == []


def validator_errors(path) -> list:
    """The Khronos glTF validator's error messages about ``path``."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the Khronos glTF validator is not installed: install Node.js, then run "
                    "`npm ci --prefix tests/js` (./run.sh test does this when npm is on PATH)")
    res = subprocess.run([node, str(JS_DIR / "validate.js"), str(path)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return [m for m in json.loads(res.stdout)["issues"]["messages"] if m["severity"] == 0]


def test_a_jpeg_glb_keeps_the_alpha_in_a_png_base_colour(exported, tmp_path):
    """Written again through formats.write with JPEG textures (as the export panel does): the base colour with its
    alpha stays PNG (JPEG has no alpha), the metallic-roughness and normal maps are JPEG; still valid."""
    _, textured, _, _ = exported
    path = textured.save(tmp_path / "sphere_jpeg.glb", texture_format="jpeg", height=1.8, pivot="bottom")
    doc = glb_json(path)
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    mime = [image["mimeType"] for image in doc["images"]]
    source = {key: doc["textures"][index["index"]]["source"] for key, index in
              [("base", pbr["baseColorTexture"]), ("mr", pbr["metallicRoughnessTexture"]),
               ("normal", doc["materials"][0]["normalTexture"])]}
    assert mime[source["base"]] == "image/png" and mime[source["mr"]] == mime[source["normal"]] == "image/jpeg"
    assert doc["materials"][0]["alphaMode"] == "MASK"
    assert validator_errors(path) == []


def test_the_face_target_is_met_on_a_mesh_wound_facing_out(exported):
    _, textured, path, _ = exported
    assert abs(len(textured.faces) - TARGET) <= 0.05 * TARGET
    assert len(trimesh.load(path, force="mesh").faces) == len(textured.faces)
    v, f = welded(textured.vertices, textured.faces)          # UV seams closed: the shape's own edges
    assert orientation_agrees(f) == 1.0 and trimesh.Trimesh(v, f, process=False).volume > 0    # wound facing out


def test_baked_texels_match_the_voxel_attributes_at_the_same_points(exported):
    mesh, _, path, _ = exported
    points, uv, images = glb_samples(path)
    want = mesh.query_attrs(torch.as_tensor(points, dtype=torch.float32)).numpy()
    rgba = texels(images["base"], uv)
    mr = texels(images["mr"], uv)
    near_step = np.abs(points[:, 0]) < 2.0 / RES                # metallic steps at x = 0
    near_cap = np.abs(points[:, 2] - CAP) < 2.0 / RES
    for got, expect, where in [(rgba[:, 0], want[:, 0], None), (rgba[:, 1], want[:, 1], None),
                               (rgba[:, 2], want[:, 2], None), (mr[:, 1], want[:, 4], None),
                               (mr[:, 2], want[:, 3], ~near_step), (rgba[:, 3], want[:, 5], ~near_cap)]:
        err = np.abs(got - expect) if where is None else np.abs(got - expect)[where]
        assert np.median(err) < 1 / 255 and np.quantile(err, 0.98) < 3 / 255, (np.median(err), err.max())
    assert np.all(mr[:, 0] < 1 / 255)                         # R unused: 0


def test_z_up_points_end_up_y_up_with_their_attributes(exported):
    _, _, path, _ = exported
    loaded = trimesh.load(path, force="mesh")
    top = loaded.vertices[:, 1].argmax()
    assert loaded.vertices[top, 1] == pytest.approx(RADIUS, abs=1.5 / RES)
    # the top of the file is the internal +z pole: red high, blue low; the internal +y side is the file's -z
    red, _, blue = texels(loaded.visual.material.baseColorTexture, loaded.visual.uv[[top]])[0, :3]
    assert red > 0.8 and blue < 0.2
    back = loaded.vertices[:, 2].argmin()
    rough = texels(loaded.visual.material.metallicRoughnessTexture, loaded.visual.uv[[back]])[0, 1]
    assert rough > 0.8 and loaded.vertices[back, 2] == pytest.approx(-RADIUS, abs=1.5 / RES)


def test_alpha_mode_is_mask_for_a_cut_out_cap_blend_for_glass_and_opaque_without_either(exported):
    _, textured, path, _ = exported
    assert textured.info["pbr"]["alpha_mode"] == "MASK"
    assert glb_json(path)["materials"][0]["alphaCutoff"] == 0.5
    opaque = bake_ovoxel(voxel_sphere(32, cap=None), target_faces=400, texture_size=64, normal_map=False)
    assert opaque.info["pbr"]["alpha_mode"] == "OPAQUE" and opaque.pbr.alpha_mode == "OPAQUE"
    mesh = opaque.to_glb()
    assert mesh.visual.material.alphaMode == "OPAQUE" and mesh.visual.material.baseColorTexture.mode == "RGB"
    glass = bake_ovoxel(voxel_sphere(32, cap=-0.1, cap_alpha=0.5), target_faces=400, texture_size=64,
                        normal_map=False)
    assert glass.pbr.alpha_mode == "BLEND" and glass.to_glb().visual.material.baseColorTexture.mode == "RGBA"


def test_the_alpha_mode_rule():
    covered = np.ones((32, 32), dtype=bool)
    alpha = np.full((32, 32), 252, dtype=np.uint8)
    assert choose_alpha_mode(alpha, covered)[0] == "OPAQUE"
    alpha[:8] = 0                                                  # a cut-out with a thin soft edge
    alpha[8] = 128
    assert choose_alpha_mode(alpha, covered)[:2] == ("MASK", 0.5)
    alpha[:8] = 100                                                # a translucent part
    assert choose_alpha_mode(alpha, covered)[0] == "BLEND"
    assert choose_alpha_mode(alpha, np.arange(32)[:, None].repeat(32, 1) > 9)[0] == "OPAQUE"   # outside charts


def test_the_normal_map_shades_the_low_poly_as_the_dense_surface(exported):
    """Shaded as a viewer does (the written normals and tangents, the map applied), the decimated sphere's normals
    are those of the true sphere to a fraction of a degree, no worse than its own smooth normals (already that close
    on a sphere reduced by grid clustering; the bumps a map gives back: pbr/test_pbr_reduce.py)."""
    _, textured, _, _ = exported
    v = torch.as_tensor(textured.vertices)
    f = torch.as_tensor(textured.faces)
    extr, intr = orbit_cameras([0.3, 2.0], [0.4, -0.3])
    for e, k in zip(extr, intr):
        with_map, mask = shading_normals(v.numpy(), f.numpy(), textured.uvs, textured.normal_texture, e, k, 96)
        without, _ = shading_normals(v.numpy(), f.numpy(), textured.uvs, None, e, k, 96)
        face_id, bary, _ = rasterize(view_clip(torch.cat([v, torch.ones(len(v), 1)], 1), e, k), f, 96, 96)
        truth = torch.nn.functional.normalize(interpolate(v, face_id, bary, f), dim=-1)   # a sphere's: radial
        err = angular_error(with_map, truth, mask)
        assert err < 0.5 and err < 1.1 * angular_error(without, truth, mask)


def test_closest_points_equal_brute_force():
    g = torch.Generator().manual_seed(0)
    sphere = trimesh.creation.icosphere(2)
    v = torch.as_tensor(sphere.vertices, dtype=torch.float32) * 0.4
    f = torch.as_tensor(sphere.faces)
    n = 300
    q = torch.randn(n, 3, generator=g)
    q = q / q.norm(dim=1, keepdim=True) * (0.4 + 0.05 * torch.randn(n, 1, generator=g))
    q[:10] *= 0.1                                                  # far inside: found at a coarser level
    hit = SurfaceGrid(v, f).closest(q)
    chunked = SurfaceGrid(v, f, list_chunk=7).closest(q)          # levels listed 7 faces at a time: the same
    assert all(torch.equal(a, b) for a, b in zip(hit, chunked))
    tri = v[f]
    k = len(f)
    _, _, d = closest_on_triangles(q.repeat_interleave(k, 0), tri[:, 0].repeat(n, 1), tri[:, 1].repeat(n, 1),
                                   tri[:, 2].repeat(n, 1))
    best = d.reshape(n, k).min(1).values
    assert bool(hit.exact.all())
    assert float((((hit.point - q) ** 2).sum(1) - best).abs().max()) < 1e-6
    corners = v[f[hit.face]]
    assert float(((corners * hit.bary[:, :, None]).sum(1) - hit.point).abs().max()) < 1e-5


def test_a_randomly_wound_surface_is_wound_one_way_facing_out():
    sphere = trimesh.creation.icosphere(2)
    f = sphere.faces.copy()
    flip = np.random.default_rng(0).random(len(f)) < 0.5
    f[flip] = f[flip][:, [0, 2, 1]]
    assert orientation_agrees(f) < 0.7
    np.testing.assert_array_equal(unify_orientation(sphere.vertices, f), sphere.faces)


def test_holes_up_to_the_perimeter_are_closed_and_larger_ones_left():
    sphere = trimesh.creation.icosphere(5)
    v = sphere.vertices * 0.1                                      # edges ~0.004: one vertex's fan is a hole < 0.03
    centre = v[sphere.faces].mean(1)
    small = np.linalg.norm(centre - [0, 0, 0.1], axis=1) < 0.003
    large = np.linalg.norm(centre - [0, 0, -0.1], axis=1) < 0.02
    f = sphere.faces[~small & ~large]
    info = {}
    v2, f2 = fill_small_holes(torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(f), info=info)
    assert info["holes_filled"] == 1 and info["patch_faces"] == small.sum() - 2       # a hexagon: 4 triangles
    def open_edges(vertices, faces):
        return len(trimesh.grouping.group_rows(trimesh.Trimesh(vertices, faces, process=False).edges_sorted,
                                               require_count=1))
    assert open_edges(v2.numpy(), f2.numpy()) == open_edges(v, sphere.faces[~large]) > 0


def test_cancel_and_bad_input_write_nothing(tmp_path):
    mesh = voxel_sphere(32, cap=None)
    path = tmp_path / "x.glb"

    def cancel_at_unwrap():
        return "uv_unwrap" in seen
    seen = []
    with pytest.raises(Cancelled):
        ovoxel_to_glb(mesh, path, target_faces=300, texture_size=32, cancel=cancel_at_unwrap,
                      progress=lambda stage, d, t: seen.append(stage))
    bare = MeshWithVoxel(mesh.vertices, mesh.faces, mesh.coords, 32)
    with pytest.raises(ValueError, match="no attributes"):
        ovoxel_to_glb(bare, path, target_faces=300, texture_size=32)
    empty = MeshWithVoxel(mesh.vertices, mesh.faces[:0], mesh.coords, 32, mesh.attrs)
    with pytest.raises(ValueError, match="empty"):
        ovoxel_to_glb(empty, path, target_faces=300, texture_size=32)
    assert not path.exists()


def test_projection_of_no_texels_gives_empty_answers():
    """A mesh so small that no texel is covered (the tiny pipeline's) projects nothing instead of failing."""
    import torch

    from trellis.export.pbr import bake

    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    info = {}
    point, face, bary = bake._project(v, torch.tensor([[0, 1, 2]]), torch.zeros(0, 3), None, None, info)
    assert point.shape == (0, 3) and face.shape == (0,) and bary.shape == (0, 3)
    assert info["projection"]["found_share"] == 1.0
