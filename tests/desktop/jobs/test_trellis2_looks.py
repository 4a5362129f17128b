"""TRELLIS.2's new look (PBR materials on the user's own mesh) through the app, on the tiny random-weight TRELLIS.2
folder: `python -m desktop retexture MESH --image IMG --model-family trellis2` (in-process) writes a GLB whose
positions, faces and UVs equal the input's, with base-colour and metallic-roughness textures, that the Khronos
validator passes and Blender imports with the maps wired to its Principled BSDF; the runner refuses what a family
cannot make (a prompt with TRELLIS.2, a family not installed) in words; the OBJ and USDZ files carry the PBR maps
too; an OBJ input keeps its mesh; --new-mesh asks for a new atlas; cancel stops the texture flow."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from desktop import retexture
from desktop.families import FAMILIES, FamilyRefusal, look_family
from desktop.jobs import JobRequest, JobRunner
from desktop.jobs.trellis2_looks import RESOLUTION_ENV
from tests.helpers.gltf import glb_json, validate_gltf
from tests.helpers.images import rgba_blob
from tests.helpers.looks import glb_attribute, uv_sphere
from tests.helpers.usd import usd_problems
from tests.helpers.blender import inspected

# A 32^3 grid, one flow step and a 64 px texture: seconds on a CPU.
CHEAP = ["--device", "cpu", "--steps", "1", "--texture-size", "64", "--formats", "glb,obj,usdz", "-q"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("looks")
    v, f, uv = uv_sphere()
    mesh = trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv), process=False)
    mesh.export(tmp / "sphere.glb")
    mesh.export(tmp / "sphere.obj")
    return {"tmp": tmp, "v": v, "f": f, "uv": uv, "glb": tmp / "sphere.glb", "obj": tmp / "sphere.obj",
            "image": rgba_blob(tmp / "look.png")}


@pytest.fixture(scope="module")
def looked(inputs, tiny_trellis2_dir):
    """The job folder of `retexture sphere.glb --image look.png --model-family trellis2` (the tiny folder as
    --model): made once, each test reads what it checks."""
    mp = pytest.MonkeyPatch()
    mp.setenv(RESOLUTION_ENV, "32")
    try:
        out = inputs["tmp"] / "out"
        code = retexture.main([str(inputs["glb"]), "--image", str(inputs["image"]), "--model-family", "trellis2",
                               "--model", tiny_trellis2_dir, "-o", str(out), *CHEAP])
    finally:
        mp.undo()
    assert code == 0
    (folder,) = out.iterdir()
    return folder


def test_the_look_keeps_the_positions_faces_and_uvs_and_has_pbr_textures(looked, inputs):
    glb = looked / "model.glb"
    # the file's float32 values are the input's: positions as written, UVs with glTF's v flip undone
    assert np.array_equal(glb_attribute(glb, "POSITION"), inputs["v"].astype(np.float32))
    assert np.array_equal(glb_attribute(glb, "indices").reshape(-1, 3).astype(np.int64), inputs["f"])
    uv = glb_attribute(glb, "TEXCOORD_0")
    assert np.array_equal(uv, np.stack([inputs["uv"][:, 0], 1 - inputs["uv"][:, 1]], -1).astype(np.float32))
    back = trimesh.load(glb, process=False, force="mesh")
    assert np.array_equal(back.vertices, inputs["v"].astype(np.float32)) and np.array_equal(back.faces, inputs["f"])
    pbr = glb_json(glb)["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    report = validate_gltf(glb)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]


def test_the_job_folder_says_its_family_and_keeps_its_inputs(looked):
    record = json.loads((looked / "settings.json").read_text())
    assert record["family"] == "trellis2" and record["mesh"].endswith("sphere.glb") and record["resolution"] == 32
    assert (looked / "input_mesh.glb").is_file() and (looked / "model.obj").is_file()
    assert any(p.name.startswith("input") and p.suffix == ".png" for p in looked.iterdir())
    timings = json.loads((looked / "timings.json").read_text())
    assert timings["look"]["resolution"] == 32 and "bake" in timings["export"]
    assert not (looked / "result.npz").exists()
    mtl = (looked / "model.mtl").read_text()                 # the OBJ carries the PBR maps too
    assert "map_Pm model_metallic.png" in mtl and "map_Pr model_roughness.png" in mtl and "map_Kd" in mtl


def test_the_registry_says_which_family_makes_which_look():
    assert look_family() is FAMILIES["trellis"] and look_family(None, from_prompt=True) is FAMILIES["trellis"]
    assert look_family("trellis2") is FAMILIES["trellis2"]
    with pytest.raises(FamilyRefusal, match="takes an image, not a prompt"):
        look_family("trellis2", from_prompt=True)
    with pytest.raises(ValueError, match="model_family must be"):
        look_family("nope")


def test_the_runner_refuses_a_prompt_with_trellis2_and_trellis2_not_installed(inputs, tiny_pipeline_dir, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "no_models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no_cache"))
    with JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu", recover=False) as runner:
        with pytest.raises(FamilyRefusal, match="takes an image, not a prompt"):
            runner.submit_request(JobRequest(mesh=str(inputs["glb"]), prompt="a red chair", family="trellis2"))
        with pytest.raises(FamilyRefusal, match="not installed here"):
            runner.submit_request(JobRequest(mesh=str(inputs["glb"]), images=str(inputs["image"]), family="trellis2"))
        assert runner.list() == []


def test_the_cli_refuses_a_prompt_with_trellis2_as_a_usage_error(inputs, tiny_trellis2_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        retexture.main([str(inputs["glb"]), "--prompt", "a red chair", "--model-family", "trellis2", "--model",
                        tiny_trellis2_dir, "-o", str(inputs["tmp"] / "never")])
    assert stop.value.code == 2 and "takes an image, not a prompt" in capsys.readouterr().err
    assert not (inputs["tmp"] / "never").exists()


def test_blender_imports_the_look_with_its_maps_wired_to_the_principled_bsdf(looked, inputs):
    seen = inspected(looked / "model.glb")
    assert seen["meshes"][0]["faces"] == len(inputs["f"]) and seen["meshes"][0]["uv_maps"]
    wired = seen["materials"][0]["inputs"]
    assert wired["Base Color"] is not None and wired["Base Color"]["output"] == "Color"
    assert seen["materials"][0]["base_color_image"] == [64, 64]
    # glTF's metallic-roughness texture: blue channel -> Metallic, green -> Roughness, through a channel split
    assert wired["Metallic"]["through"] == ["SEPARATE_COLOR.Blue"] and wired["Metallic"]["colorspace"] == "Non-Color"
    assert wired["Roughness"]["through"] == ["SEPARATE_COLOR.Green"]
    assert wired["Roughness"]["colorspace"] == "Non-Color" and wired["Base Color"]["colorspace"] == "sRGB"


def look_of(inputs, model, name, *options):
    """The job folder of a TRELLIS.2 look of inputs[name] made by the CLI (in-process) with `options`."""
    out = inputs["tmp"] / f"out-{name}{''.join(options)}"
    mp = pytest.MonkeyPatch()
    mp.setenv(RESOLUTION_ENV, "32")
    try:
        code = retexture.main([str(inputs[name]), "--image", str(inputs["image"]), "--model-family", "trellis2",
                               "--model", model, "-o", str(out), *CHEAP, *options])
    finally:
        mp.undo()
    assert code == 0
    (folder,) = out.iterdir()
    return folder


def test_an_obj_keeps_its_mesh_and_new_mesh_asks_for_a_new_atlas(inputs, tiny_trellis2_dir):
    kept = look_of(inputs, tiny_trellis2_dir, "obj")
    glb = kept / "model.glb"
    given = trimesh.load(inputs["obj"], process=False, force="mesh")        # the OBJ's text values, as read
    assert np.array_equal(glb_attribute(glb, "POSITION"), given.vertices.astype(np.float32))
    assert np.array_equal(glb_attribute(glb, "indices").reshape(-1, 3).astype(np.int64), given.faces)
    assert json.loads((kept / "timings.json").read_text())["look_bake"]["uv"] == "kept"
    # --new-mesh (keep_mesh off): a new UV atlas, asked for, so no warning; the same surface, split at its seams
    atlas = look_of(inputs, tiny_trellis2_dir, "glb", "--new-mesh")
    timings = json.loads((atlas / "timings.json").read_text())
    assert timings["look_bake"]["uv"] == "new atlas: new UVs asked for" and not timings.get("warnings")
    back = trimesh.load(atlas / "model.glb", process=False, force="mesh")
    assert len(back.faces) == len(inputs["f"]) and len(back.vertices) >= len(inputs["v"])
    assert set(map(tuple, np.round(back.vertices, 5))) <= set(map(tuple, np.round(inputs["v"], 5)))


def test_a_look_from_a_photo_without_v1_names_the_family_that_can(inputs, tiny_trellis2_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TRELLIS_DESKTOP_MODEL", raising=False)
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "no_models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no_cache"))
    with JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu", recover=False) as runner:
        with pytest.raises(ValueError, match="needs a TRELLIS v1 image model.*model_family trellis2 makes one with "
                                             "PBR materials here"):
            runner.submit_request(JobRequest(mesh=str(inputs["glb"]), images=str(inputs["image"])))


def test_a_trellis2_look_is_cancelled_while_its_texture_flow_samples(inputs, tiny_trellis2_dir, tmp_path, monkeypatch):
    from desktop.jobs import JobState
    from desktop.settings import GenerationSettings

    monkeypatch.setenv(RESOLUTION_ENV, "32")
    settings = GenerationSettings(slat_steps=500, texture_size=64, formats=("glb",))
    with JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu", recover=False) as runner:
        job = runner.submit_request(JobRequest(mesh=str(inputs["glb"]), images=str(inputs["image"]), settings=settings,
                                            family="trellis2"))
        deadline = time.time() + 120
        while job.progress.stage != "tex_slat" and job.state not in JobState.FINISHED and time.time() < deadline:
            time.sleep(0.01)
        assert job.progress.stage == "tex_slat", (job.state, job.progress, job.error)
        assert job.progress.label == "Sampling the texture"
        assert runner.cancel(job.id)
        job.wait(60)
        assert job.state == JobState.CANCELLED and job.error_kind == "cancelled", (job.state, job.error)
        assert not (Path(job.out_dir) / "model.glb").exists()


def test_the_usdz_has_the_models_faces_and_its_pbr_maps_wired(looked, inputs):
    from pxr import Usd, UsdGeom, UsdShade

    stage = Usd.Stage.Open(str(looked / "model.usdz"))
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/Model/Mesh"))
    assert len(mesh.GetFaceVertexCountsAttr().Get()) == len(inputs["f"])
    surface = next(UsdShade.Shader(p) for p in stage.Traverse()
                   if p.GetTypeName() == "Shader" and UsdShade.Shader(p).GetIdAttr().Get() == "UsdPreviewSurface")
    fed = {i.GetBaseName(): [str(c.source.GetPath()) for c in i.GetConnectedSources()[0]] for i in surface.GetInputs()}
    assert fed["diffuseColor"] and fed["metallic"] and fed["metallic"] == fed["roughness"] != fed["diffuseColor"]
    assert [p for p in usd_problems(stage) if p[0] == "Error"] == []
