"""A new look that keeps the user's mesh (keep_mesh, the default), end to end on the tiny pipeline through
`python -m desktop retexture`: a GLB with usable UVs comes back with the same vertices, faces and UVs (read by trimesh
without processing) and a texture, valid for the Khronos validator; an OBJ and an STL without UVs get a new atlas;
`--new-mesh` makes the shape again."""
import json
import os

import numpy as np
import pytest
import trimesh

from tests.helpers.cli import SMALL, desktop, job_folders
from tests.helpers.gltf import validate_gltf
from tests.helpers.images import rgba_blob


def unwrapped_sphere():
    """(vertices, faces, uvs) of a sphere placed off the origin, 40 units across, with a real UV atlas (our
    unwrap: charts without overlaps, inside [0, 1])."""
    from trellis.export.uv.unwrap import unwrap_uv

    sphere = trimesh.creation.icosphere(3)
    v, f, uv, _ = unwrap_uv(np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int64),
                            method="charts", texture_size=256)
    return np.asarray(v, np.float64) * 20 + [3.0, -2.0, 5.0], np.asarray(f, np.int64), np.asarray(uv, np.float64)


def loaded(path):
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values() if isinstance(scene, trimesh.Scene) else (scene,)
    return mesh


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keep_mesh")
    v, f, uv = unwrapped_sphere()
    glb = tmp / "sphere.glb"
    trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv), process=False).export(glb)
    trimesh.Trimesh(v, f, process=False).export(tmp / "sphere.stl")
    trimesh.Trimesh(v, f, process=False).export(tmp / "sphere.obj")
    return {"tmp": tmp, "glb": glb, "image": rgba_blob(tmp / "look.png")}


def retexture(inputs, model, name, *options):
    out = inputs["tmp"] / f"out-{name}{''.join(options)}"
    proc = desktop("retexture", inputs[name] if name in inputs else inputs["tmp"] / name, "--image", inputs["image"],
                   "-o", out, "--model", model, "--formats", "glb", "--quiet", *SMALL, *options, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    return folder


@pytest.fixture(scope="module")
def kept_glb(inputs, tiny_pipeline_dir):
    """The job folder of the GLB with UVs given a new look (a 64 px texture) that keeps its mesh: made once, each
    test checks what it reads of it."""
    return retexture(inputs, tiny_pipeline_dir, "glb")


def test_a_glb_with_uvs_keeps_its_vertices_faces_and_uvs(inputs, kept_glb):
    folder = kept_glb
    before, after = loaded(inputs["glb"]), loaded(os.path.join(folder, "model.glb"))
    assert np.array_equal(np.asarray(after.vertices), np.asarray(before.vertices))      # bit-equal, same order
    assert np.array_equal(np.asarray(after.faces), np.asarray(before.faces))
    # glTF stores 1 - v in float32 and trimesh turns it back: v may move by one float32 step, u not at all
    assert np.abs(np.asarray(after.visual.uv) - np.asarray(before.visual.uv)).max() <= 2.0 ** -23
    texture = np.asarray(after.visual.material.baseColorTexture)
    assert texture.shape[0] == texture.shape[1] == 64 and texture.std() > 0
    findings = validate_gltf(os.path.join(folder, "model.glb"))["issues"]
    assert findings["numErrors"] == 0, findings
    record = json.load(open(os.path.join(folder, "settings.json")))
    assert record["settings"]["keep_mesh"] is True
    timings = json.load(open(os.path.join(folder, "timings.json")))
    assert timings["export_bake_stages"]["uv"] == "kept"


def test_a_kept_mesh_look_exported_again_keeps_the_mesh(inputs, kept_glb, tiny_pipeline_dir):
    made = loaded(os.path.join(kept_glb, "model.glb")).visual.material.baseColorTexture
    assert np.asarray(made).shape[:2] == (64, 64)                  # exported again below at another size
    out = inputs["tmp"] / "again"
    proc = desktop("export", kept_glb, "-o", out, "--model", tiny_pipeline_dir, "--texture-size", "128", "--quiet",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    (again,) = job_folders(out)
    before, after = loaded(inputs["glb"]), loaded(os.path.join(again, "model.glb"))
    assert np.array_equal(np.asarray(after.vertices), np.asarray(before.vertices))
    assert np.array_equal(np.asarray(after.faces), np.asarray(before.faces))
    assert np.asarray(after.visual.material.baseColorTexture).shape[:2] == (128, 128)
    assert json.load(open(os.path.join(again, "timings.json")))["export_bake_stages"]["uv"] == "kept"


@pytest.mark.parametrize("name", ["sphere.stl", "sphere.obj"])
def test_a_model_without_uvs_gets_a_new_atlas_on_its_own_shape(inputs, tiny_pipeline_dir, name):
    folder = retexture(inputs, tiny_pipeline_dir, name)
    source = loaded(inputs["tmp"] / name)
    after = loaded(os.path.join(folder, "model.glb"))
    # the same surface where it was, as large as it was (UV seams may split vertices): every vertex is an old one
    old = {tuple(np.round(p, 4)) for p in np.asarray(source.vertices)}
    assert all(tuple(np.round(p, 4)) in old for p in (np.asarray(after.vertices) @ _to_file(name).T))
    assert after.visual.uv is not None and len(after.visual.uv) == len(after.vertices)
    timings = json.load(open(os.path.join(folder, "timings.json")))
    assert timings["export_bake_stages"]["uv"].startswith("new atlas")


def _to_file(name):
    """The matrix taking the GLB's y-up points to the file's own frame: STL is z up, OBJ y up like the GLB."""
    if name.endswith(".stl"):
        return np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
    return np.eye(3)


def test_new_mesh_makes_the_shape_again(inputs, tiny_pipeline_dir):
    folder = retexture(inputs, tiny_pipeline_dir, "glb", "--new-mesh")
    before, after = loaded(inputs["glb"]), loaded(os.path.join(folder, "model.glb"))
    assert len(after.vertices) != len(before.vertices)            # the decoder's mesh, not the user's
    record = json.load(open(os.path.join(folder, "settings.json")))
    assert record["settings"]["keep_mesh"] is False
