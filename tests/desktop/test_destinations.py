"""Destinations (settings_table.DESTINATION_LIST) end to end on the tiny pipeline, through the export command: one
`generate` job, then its result exported again for the web, a game engine and a 3D printer. Each file is read back by
a real reader (trimesh, the Khronos validator, Google's Draco decoder, usd-core) and export.json says the
destination's limits are met."""
import json
import os

import numpy as np
import pytest
import trimesh

from images import rgba_blob
from test_cli import SMALL, desktop, job_folders
from test_draco import draco_decode
from test_export import validate_gltf


@pytest.fixture(scope="module")
def made(tiny_pipeline_dir, tmp_path_factory):
    """One generate job (GLB) and its folder."""
    tmp = tmp_path_factory.mktemp("destinations")
    out = tmp / "made"
    proc = desktop("generate", rgba_blob(tmp / "a.png"), "-o", out, "--model", tiny_pipeline_dir,
                   "--formats", "glb", "--seed", "5", "--quiet", *SMALL)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    return {"folder": folder, "tmp": tmp, "model": tiny_pipeline_dir}


def export(made, name, *options):
    """The folder of an export of the made job with `options`, and its export.json."""
    out = made["tmp"] / name
    proc = desktop("export", made["folder"], "-o", out, "--model", made["model"], "--quiet", *options, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    return folder, json.load(open(os.path.join(folder, "export.json")))


def test_print_gives_a_watertight_shell_with_a_flat_base_in_millimetres(made):
    folder, report = export(made, "print", "--destination", "print", "--height", "0.05")
    assert report["destination"] == "print" and report["limits"]["met"], report["limits"]
    assert report["watertight"] and report["shells"] == 1 and report["flat_base"] and report["texture"] is None
    assert set(report["files"]) == {"stl", "3mf"}
    for name in ("model.stl", "model.3mf"):
        mesh = trimesh.load(os.path.join(folder, name), force="mesh")
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, name
        assert len(mesh.split(only_watertight=False)) == 1, name
        lo, hi = mesh.bounds
        # 3MF names its unit (trimesh reads it into mm), STL is plain numbers: mm either way, z up, base at 0
        assert hi[2] - lo[2] == pytest.approx(50.0, rel=1e-3) and lo[2] == pytest.approx(0, abs=1e-3), name
        base = mesh.vertices[:, 2] < lo[2] + 1e-3
        down = mesh.face_normals[:, 2] < -0.999
        on_base = base[mesh.faces].all(axis=1)
        # the faces on the base plane all face down and cover a real footprint
        assert down[on_base].all() and mesh.area_faces[on_base].sum() > 0.01 * (hi[0] - lo[0]) * (hi[1] - lo[1]), name
    assert not os.path.exists(os.path.join(folder, "model.png"))


def test_web_gives_a_small_draco_glb_with_jpeg_and_a_usdz(made):
    folder, report = export(made, "web", "--destination", "web")
    assert report["destination"] == "web" and report["limits"]["met"], report["limits"]
    assert report["draco"] and report["texture"]["format"] == "jpeg" and set(report["files"]) == {"glb", "usdz"}
    glb = os.path.join(folder, "model.glb")
    assert report["files"]["glb"]["bytes"] <= 15_000_000 and report["triangles"] <= 100_000
    findings = validate_gltf(glb)["issues"]
    assert findings["numErrors"] == 0, findings
    (primitive,) = draco_decode(glb)
    assert primitive["numFaces"] == report["triangles"]
    raw = open(glb, "rb").read()
    assert b"KHR_draco_mesh_compression" in raw and b"image/jpeg" in raw
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(os.path.join(folder, "model.usdz"))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    # standing on its base (pivot bottom): the base at 0 in the report and in the USD's points
    assert report["base_m"] == pytest.approx(0, abs=1e-6)


def test_game_gives_a_normal_map_and_levels_of_detail_sharing_one_texture(made):
    target = 2000
    folder, report = export(made, "game", "--destination", "game", "--target-faces", target)
    assert report["destination"] == "game" and report["limits"]["met"], report["limits"]
    assert report["texture"]["normal_map"] and abs(report["triangles"] - target) <= 0.05 * target
    lods = report["lods"]
    assert [lod["file"] for lod in lods] == ["model_lod1.glb", "model_lod2.glb"]
    images = []
    for name, want in (("model.glb", report["triangles"]), *[(lod["file"], lod["triangles"]) for lod in lods]):
        path = os.path.join(folder, name)
        findings = validate_gltf(path)["issues"]
        assert findings["numErrors"] == 0, (name, findings)
        mesh = trimesh.load(path, force="mesh")
        assert len(mesh.faces) == want, name
        material = mesh.visual.material
        assert material.normalTexture is not None, name
        images.append((np.asarray(material.baseColorTexture), np.asarray(material.normalTexture)))
        lo, hi = mesh.bounds
        assert lo[1] == pytest.approx(0, abs=1e-4), name                # standing on its base (y up)
    # each level aims at a quarter of the one before (the random-weight blob's many small UV charts stop them above:
    # every chart keeps its corners, trellis.export.lods; tests/trellis/export/test_lods.py checks the targets are
    # reached on real shapes), all with the one texture and normal map
    assert [lod["target"] for lod in lods] == [round(report["triangles"] * s) for s in (0.25, 0.0625)]
    assert report["triangles"] > lods[0]["triangles"] >= lods[1]["triangles"] >= lods[1]["target"]
    for colour, normal in images[1:]:
        assert np.array_equal(colour, images[0][0]) and np.array_equal(normal, images[0][1])


def test_settings_given_beside_a_destination_win(made):
    folder, report = export(made, "web_png", "--destination", "web", "--texture-format", "png", "--no-draco")
    assert report["texture"]["format"] == "png" and not report["draco"]
    raw = open(os.path.join(folder, "model.glb"), "rb").read()
    assert b"KHR_draco_mesh_compression" not in raw and b"image/png" in raw
    record = json.load(open(os.path.join(folder, "settings.json")))["settings"]
    assert record["destination"] == "web" and record["pivot"] == "bottom" and record["texture_format"] == "png"
