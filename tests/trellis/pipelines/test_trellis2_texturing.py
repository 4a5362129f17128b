"""TRELLIS.2's texturing pipeline on the tiny random-weight folder (TRELLIS2_TEXTURING_FACTS.md §2-§8, §12): a
UV-mapped sphere placed off the origin + an image -> a GLB with the sphere's very positions, faces and UVs and a
PBR material (Khronos validator: no error); the decoded voxels are the O-Voxel's, in its order; the noise is the
seeded CPU draw; the sampler's call counts; the keep-my-mesh choices (new UVs only when asked or unusable)."""
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from trellis.export.pbr.onto_mesh import KeptPbrMesh, bake_onto_user_mesh
from trellis.pipelines.trellis2_texturing import Trellis2TexturingPipeline
from trellis.representations.ovoxel import MeshFrame, TexturedVoxels, mesh_to_ovoxel, read_user_mesh

from tests.helpers.gltf import glb_json, validate_gltf
from tests.helpers.repo import JS_DIR

RES, TEX = 32, 64


def uv_sphere(n_lon=12, n_lat=7, radius=1.5, centre=(4.0, -1.0, 2.5)):
    """A y-up latitude-longitude sphere with its own UVs (seam and pole vertices split), float32 positions."""
    lon, lat = np.linspace(0, 2 * np.pi, n_lon + 1), np.linspace(0, np.pi, n_lat + 1)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([np.sin(la) * np.cos(lo), np.cos(la), -np.sin(la) * np.sin(lo)], -1).reshape(-1, 3)
    v = (v * radius + centre).astype(np.float32).astype(np.float64)
    # As trimesh reads a GLB: v = 1 - the file's float32 value, exact in float64.
    uv_file = np.stack([lo / (2 * np.pi), la / np.pi], -1).reshape(-1, 2).astype(np.float32).astype(np.float64)
    uv = np.stack([uv_file[:, 0], 1 - uv_file[:, 1]], -1)
    faces = []
    for i in range(n_lat):
        for j in range(n_lon):
            a = i * (n_lon + 1) + j
            b, c, d = a + 1, a + n_lon + 1, a + n_lon + 2
            if i > 0:
                faces.append([a, c, b])
            if i < n_lat - 1:
                faces.append([b, c, d])
    return v, np.array(faces, np.int64), uv


def glb_attribute(path, name) -> np.ndarray:
    """The float32 rows of the first primitive's attribute ``name`` as the GLB stores them."""
    data = open(path, "rb").read()
    doc = glb_json(path)
    json_len = struct.unpack_from("<I", data, 12)[0]
    bin_start = 20 + json_len + 8
    acc = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"][name]]
    view = doc["bufferViews"][acc["bufferView"]]
    start = bin_start + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    width = {"VEC2": 2, "VEC3": 3}[acc["type"]]
    return np.frombuffer(data, np.float32, acc["count"] * width, start).reshape(-1, width)


def uv_audit(path) -> dict:
    """The Khronos asset auditor's UV counts and checks (tests/js/audit.js), by check name."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the Khronos asset auditor runs on it")
    res = subprocess.run([node, str(JS_DIR / "audit.js"), str(path)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    return {"counts": report["counts"], **{item["name"]: item for item in report["items"]}}


@pytest.fixture(scope="module")
def texturing(tiny_trellis2_dir):
    return Trellis2TexturingPipeline.from_pretrained(tiny_trellis2_dir)


@pytest.fixture(scope="module")
def image():
    img = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    img.paste((220, 120, 40, 255), (16, 16, 80, 80))
    return img


def _flow_calls(pipeline, key):
    calls = []
    handle = pipeline.models[key].register_forward_hook(lambda m, args, kw, out: calls.append(args[0].feats.clone()),
                                                       with_kwargs=True)
    return calls, handle


@pytest.fixture(scope="module")
def sphere_result(texturing, image):
    v, f, uv = uv_sphere()
    calls, handle = _flow_calls(texturing, "tex_slat_flow_model_1024")
    try:
        result = texturing.run((v, f, uv), image, seed=7, resolution=RES, texture_size=TEX)
    finally:
        handle.remove()
    assert isinstance(result, TexturedVoxels)
    return (v, f, uv), bake_onto_user_mesh(result), result.voxels, calls, result


def test_the_user_mesh_comes_back_as_given_with_pbr_textures(sphere_result, tmp_path):
    (v, f, uv), out, _, _, _ = sphere_result
    assert isinstance(out, KeptPbrMesh) and out.info["uv"] == "kept"
    assert np.array_equal(out.faces, f) and np.array_equal(out.uvs, uv)
    assert out.texture.shape == (TEX, TEX, 3) and out.pbr.metallic_roughness.shape == (TEX, TEX, 3)
    assert (out.pbr.metallic_roughness[..., 0] == 0).all()
    path = out.save(str(tmp_path / "sphere.glb"))
    back = trimesh.load(path, process=False, force="mesh")
    assert np.array_equal(back.vertices, v.astype(np.float32))          # the user's positions, not normalised
    assert np.array_equal(back.faces, f)
    # trimesh's reader flips v in float32; the file holds the very float32 values a GLB of this mesh held
    assert np.array_equal(glb_attribute(path, "TEXCOORD_0"), np.stack([uv[:, 0], 1 - uv[:, 1]], -1).astype(np.float32))
    assert np.array_equal(glb_attribute(path, "POSITION"), v.astype(np.float32))
    material = glb_json(path)["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in material and "metallicRoughnessTexture" in material
    assert validate_gltf(path)["issues"]["numErrors"] == 0
    audit = uv_audit(path)
    assert audit["counts"]["invertedUvTriangles"] == 0 and audit["counts"]["overlappingUvs"] == 0


def test_decoded_voxels_are_the_ovoxel_in_its_order(sphere_result):
    (v, f, uv), out, voxels, _, _ = sphere_result
    frame = MeshFrame.of(read_user_mesh((v, f, uv)))
    grid = mesh_to_ovoxel(torch.as_tensor(frame.internal(v)), torch.as_tensor(f), RES)
    assert torch.equal(voxels.coords, grid.coords)
    assert voxels.attrs.shape == (grid.coords.shape[0], 6) and torch.isfinite(voxels.attrs).all()
    assert out.info["tokens"] == torch.unique(grid.coords.long() // 16, dim=0).shape[0]
    assert out.info["voxels"] == grid.coords.shape[0]


def test_noise_is_the_seeded_cpu_draw_and_the_default_sampler_calls_the_flow_12_times(sphere_result):
    _, out, _, calls, _ = sphere_result
    assert len(calls) == 12
    torch.manual_seed(7)
    noise = torch.randn(out.info["tokens"], 32)
    assert torch.equal(calls[0][:, :32].float(), noise.to(calls[0].dtype).float())


def test_guidance_strength_2_runs_18_flow_calls(texturing, image):
    v, f, uv = uv_sphere()
    calls, handle = _flow_calls(texturing, "tex_slat_flow_model_1024")
    try:
        texturing.run((v, f, uv), image, seed=1, resolution=RES, texture_size=TEX,
                      tex_slat_sampler_params={"guidance_strength": 2.0})
    finally:
        handle.remove()
    assert len(calls) == 18


def test_resolution_512_uses_the_512_flow_and_condition(texturing):
    assert texturing.flow_key(512) == "tex_slat_flow_model_512"
    assert texturing.flow_key(1024) == texturing.flow_key(1536) == "tex_slat_flow_model_1024"


def test_same_seed_same_textures(texturing, image, sphere_result):
    (v, f, uv), first, _, _, _ = sphere_result
    again = bake_onto_user_mesh(texturing.run((v, f, uv), image, seed=7, resolution=RES, texture_size=TEX))
    assert np.array_equal(first.texture, again.texture)
    assert np.array_equal(first.pbr.metallic_roughness, again.pbr.metallic_roughness)


def test_new_uvs_when_asked_or_when_there_are_none(sphere_result, tmp_path):
    (v, f, uv), _, _, _, result = sphere_result
    asked = bake_onto_user_mesh(result, new_uvs=True)
    assert asked.info["uv"].startswith("new atlas")
    bare = read_user_mesh(trimesh.Trimesh(v, f, process=False))
    assert bare.uvs is None and np.array_equal(bare.vertices, v)
    none = bake_onto_user_mesh(result._replace(mesh=bare))
    assert none.info["uv"] == "new atlas: the mesh has no UVs"
    for out in (asked, none):
        path = out.save(str(tmp_path / "new.glb"))
        back = trimesh.load(path, process=False, force="mesh")
        assert back.faces.shape == f.shape                              # same triangles, vertices split at seams
        lo, hi = back.vertices.min(0), back.vertices.max(0)
        assert np.allclose(lo, v.min(0), atol=1e-6) and np.allclose(hi, v.max(0), atol=1e-6)
        audit = uv_audit(path)
        assert audit["counts"]["invertedUvTriangles"] == 0 and audit["counts"]["overlappingUvs"] == 0
        assert audit["UVs in 0 to 1 Range"]["pass"] and audit["glTF Validator"]["pass"]
