"""Batch new looks (desktop/batch: items.py's `mesh` column, worker.item_job's look job): "texture the model I already
have" for many meshes at once. A list row with a `mesh` and an `image` is the app's new-look job of that mesh, its
`model_family` picking TRELLIS v1 (colour) or TRELLIS.2 (PBR materials). End to end on the tiny pipelines (CPU, a
32^3 grid for TRELLIS.2): one v1 look, one TRELLIS.2 look and a row whose mesh is missing; the two looks keep the
input's positions and faces bit for bit, the missing one fails in words and the others finish; a rerun skips them."""
import json
import os

import numpy as np
import pytest
import trimesh

from desktop.batch import command
from desktop.batch import items as batch_items
from desktop.batch import manifest as mf
from desktop.jobs.trellis2_looks import RESOLUTION_ENV
from tests.helpers.batch_runs import events
from tests.helpers.gltf import glb_json
from tests.helpers.images import rgba_blob
from tests.helpers.looks import glb_attribute, uv_sphere
from tests.helpers.model_folders import install_trellis2

# One flow step, a 64 px texture baked from 4 views, GLB only: seconds a look on a CPU.
CHEAP = ["--device", "cpu", "--workers", "1", "--preset", "fast", "--steps", "1", "--texture-size", "64",
         "--formats", "glb", "--set", "bake_views=4", "--set", "bake_resolution=64", "--set", "fill_holes=false", "-q"]


def write_sphere(path):
    v, f, uv = uv_sphere()
    trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv), process=False).export(path)
    return v, f


# ------------------------------------------------------------------------------------------ the list

def test_a_mesh_column_makes_look_items_relative_to_the_list(tmp_path):
    (tmp_path / "meshes").mkdir()
    for name in ("chair.glb", "table.obj"):
        (tmp_path / "meshes" / name).write_bytes(b"x")
    (tmp_path / "oak.png").write_bytes(b"x")
    (tmp_path / "a-folder.glb").mkdir()
    listing = tmp_path / "list.csv"
    listing.write_text("mesh,image,model_family,seed\n"
                       "meshes/chair.glb,oak.png,trellis2,3\n"
                       "meshes/table.obj,oak.png,,\n"
                       "meshes/chair.glb,oak.png,trellis,\n"
                       "meshes/ghost.ply,oak.png,,\n"
                       "a-folder.glb,oak.png,,\n"
                       "meshes/chair.glb,,,\n"
                       "meshes/chair.glb,oak.png,nope,\n"
                       ",oak.png,trellis2,\n")
    got = batch_items.read_items(str(listing))
    assert [(i.name, i.kind, i.family) for i in got] == [
        ("chair", "look", "trellis2"), ("table", "look", None), ("chair-2", "look", "trellis"),
        ("ghost", "look", None), ("a-folder", "look", None), ("chair-3", "look", None), ("chair-4", "look", None),
        ("oak", "image", "trellis2")]
    assert got[0].mesh == str(tmp_path / "meshes" / "chair.glb") and got[0].source == str(tmp_path / "oak.png")
    assert got[0].changes == {"seed": 3} and [i.problem for i in got[:3]] == [None, None, None]
    assert got[3].problem == f"bad input: {tmp_path / 'meshes' / 'ghost.ply'}: no such file (the 3-D model this " \
                             "item gives a new look)"
    assert got[4].problem.startswith("bad input: ") and "is a folder, not a 3-D model file" in got[4].problem
    assert "give its `image` column too" in got[5].problem
    assert got[6].problem == "bad item: model_family must be trellis (TRELLIS v1) or trellis2 (TRELLIS.2), not 'nope'"
    assert got[7].problem is None and got[7].mesh is None
    # a look's key is its mesh and its image: the same mesh with another image (or family row) is another item
    keys = {mf.source_key(i.kind, i.identity()) for i in got[:3]}
    assert len(keys) == 2 and mf.source_key("look", got[0].identity()) != mf.source_key("image", got[0].source)


def test_look_rows_in_jsonl_and_the_rows_that_are_mistakes(tmp_path):
    (tmp_path / "chair.glb").write_bytes(b"x")
    (tmp_path / "oak.png").write_bytes(b"x")
    listing = tmp_path / "list.jsonl"
    listing.write_text('{"mesh": "chair.glb", "image": "oak.png", "model-family": "trellis2"}\n'
                       '{"mesh": "chair.glb", "prompt": "made of gold"}\n'
                       '{"prompt": "a red chair", "model_family": "trellis2"}\n'
                       '{"mesh": 3, "image": "oak.png"}\n'
                       '"chair.glb"\n')
    got = batch_items.read_items(str(listing))
    assert (got[0].kind, got[0].family, got[0].problem) == ("look", "trellis2", None)
    assert "taken from an image, not a prompt" in got[1].problem                    # batch looks take an image
    assert got[2].kind == "prompt" and "leave model_family out of prompt items" in got[2].problem
    assert got[3].problem == "bad item: mesh: expected a file path, got 3"
    assert got[4].kind == "look" and "give its `image` column too" in got[4].problem  # a bare mesh has no image
    (tmp_path / "plain.csv").write_text("chair.glb,oak.png\n")
    with pytest.raises(batch_items.BatchInputError, match="no header row.*'mesh,image'"):
        batch_items.read_items(str(tmp_path / "plain.csv"))
    (tmp_path / "bad.csv").write_text("mesh,image,colour\nchair.glb,oak.png,red\n")
    with pytest.raises(batch_items.BatchInputError, match="unknown column.*mesh, name, preset, model_family"):
        batch_items.read_items(str(tmp_path / "bad.csv"))


def test_a_look_item_is_the_runners_new_look_job_and_a_family_not_installed_fails_it(tmp_path, monkeypatch):
    """worker.item_job: a look item is a variant job of its family with the mesh kept as given; one whose family is not
    installed here is an input error of that item (the batch goes on), not a model that cannot load (which stops
    it)."""
    from desktop.batch.worker import item_job
    from desktop.jobs.job import InputError
    from desktop.settings import GenerationSettings

    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "no_models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no_cache"))
    monkeypatch.delenv("TRELLIS_DESKTOP_MODEL", raising=False)
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {}}))
    image, mesh = rgba_blob(tmp_path / "oak.png"), tmp_path / "chair.glb"
    write_sphere(mesh)
    task = {"name": "chair", "kind": "look", "source": image, "mesh": str(mesh), "key": "k", "model": str(v1),
            "settings": GenerationSettings().to_dict()}
    job = item_job(task)
    assert (job.kind, job.family, job.mesh, job.inputs, job.prompt) == ("variant", "trellis", str(mesh), [image], None)
    sent = item_job({**task, "data": (b"image bytes", b"mesh bytes")})          # as a Ray worker is given them
    assert sent.mesh == (str(mesh), b"mesh bytes") and sent.inputs == [b"image bytes"]
    with pytest.raises(InputError, match="TRELLIS.2 new look \\(PBR materials\\) needs TRELLIS.2, which is not "
                                         "installed here"):
        item_job({**task, "family": "trellis2"})
    with pytest.raises(InputError, match="is a folder, not a 3-D model file"):
        item_job({**task, "mesh": str(tmp_path)})
    # an image item may name a family too; one not installed fails that item in the family's words
    with pytest.raises(InputError, match="TRELLIS.2"):
        item_job({**task, "kind": "image", "mesh": None, "family": "trellis2"})
    assert item_job({**task, "kind": "image", "mesh": None}).kind == "generate"
    # a family id no list would pass (items.py checks them) is still that item's input, not an internal error
    with pytest.raises(InputError, match="model_family must be .*, not 'trellis3'"):
        item_job({**task, "family": "trellis3"})
    # a look naming no family is made by the batch's model's (--model-family trellis2 makes --model that folder)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "pipeline.json").write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline", "args": {}}))
    job = item_job({**task, "model": str(v2)})
    assert (job.kind, job.family) == ("variant", "trellis2")


# ------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_a_batch_of_a_v1_look_a_trellis2_look_and_a_missing_mesh(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path / "models", tiny_trellis2_dir)))
    monkeypatch.setenv(RESOLUTION_ENV, "32")
    given = tmp_path / "given"
    given.mkdir()
    v, f = write_sphere(given / "sphere.glb")
    write_sphere(given / "vase.glb")
    rgba_blob(given / "look.png")
    listing = given / "looks.csv"
    listing.write_text("mesh,image,model_family\nsphere.glb,look.png,trellis\nvase.glb,look.png,trellis2\n"
                       "ghost.obj,look.png,trellis2\n")
    out = tmp_path / "out"
    code = command.main([str(listing), "-o", str(out), "--model", tiny_pipeline_dir, "--seed", "4", *CHEAP])
    err = capsys.readouterr().err
    assert code == command.EXIT_FAILED, err
    assert f"ghost: FAILED: bad input: {given / 'ghost.obj'}: no such file" in err
    summary = json.loads((out / mf.SUMMARY).read_text())
    assert (summary["done"], summary["failed"], summary["not_run"]) == (2, 1, 0), summary
    planned = {e["item"]: e for e in events(out, "planned")}
    assert {k: (e["kind"], e["mesh"], e["family"]) for k, e in planned.items()} == {
        "sphere": ("look", str(given / "sphere.glb"), "trellis"), "vase": ("look", str(given / "vase.glb"), "trellis2")}
    (failed,) = events(out, "failed")
    assert (failed["item"], failed["kind"]) == ("ghost", "input")

    for name, family in (("sphere", "trellis"), ("vase", "trellis2")):
        folder = out / name
        glb = folder / "model.glb"
        # the user's mesh kept: the file's float32 positions and its faces are the input's
        assert np.array_equal(glb_attribute(glb, "POSITION"), v.astype(np.float32)), name
        assert np.array_equal(glb_attribute(glb, "indices").reshape(-1, 3).astype(np.int64), f), name
        record = json.loads((folder / "settings.json").read_text())
        assert record[mf.ITEM_KEY] == {"name": name, "key": planned[name]["key"], "kind": "look"}
        assert record["mesh"] == str(given / f"{name}.glb") and record["inputs"] == [str(given / "look.png")]
        assert record.get("family", "trellis") == family and record["seed"] == 4
        made_by = tiny_pipeline_dir if family == "trellis" else str(tmp_path / "models" / "TRELLIS.2-4B")
        assert os.path.realpath(record["model"]) == os.path.realpath(made_by), record["model"]
        assert (folder / "input_mesh.glb").read_bytes() == (given / f"{name}.glb").read_bytes()
        assert mf.folder_problem(folder, planned[name]["key"]) is None
    pbr = glb_json(out / "vase" / "model.glb")["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    assert "baseColorTexture" in glb_json(out / "sphere" / "model.glb")["materials"][0]["pbrMetallicRoughness"]
    assert not (out / "ghost").exists() and not (out / mf.WORK_DIR).exists()

    # A rerun: the two looks are done (skipped, no worker started), the missing mesh fails again.
    code = command.main([str(listing), "-o", str(out), "--model", tiny_pipeline_dir, "--seed", "4", *CHEAP])
    err = capsys.readouterr().err
    assert code == command.EXIT_FAILED and "2 of 3 item(s) already done: skipped" in err, err
    assert os.path.getsize(out / "vase" / "model.glb") > 0


@pytest.mark.slow
def test_a_look_sent_as_bytes_as_ray_sends_it_returns_its_files(tiny_pipeline_dir, tmp_path):
    """A worker that does not see the driver's files (a Ray node) is given a look's image and mesh as bytes and returns
    the item's files: the mesh copied from those bytes, kept in the GLB, its path recorded as the driver named it."""
    from desktop.batch.worker import ItemWorker
    from desktop.settings import GenerationSettings

    v, f = write_sphere(tmp_path / "sphere.glb")
    rgba_blob(tmp_path / "look.png")
    settings = GenerationSettings.from_preset("fast", seed=2, slat_steps=1, texture_size=64, bake_views=4,
                                              bake_resolution=64, fill_holes=False, formats=("glb",))
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = "/driver/only/sphere.glb"                # a path this worker cannot read: only the bytes are used
    task = {"id": "sphere", "name": "sphere", "kind": "look", "source": "/driver/only/look.png", "mesh": elsewhere,
            "settings": settings.to_dict(), "key": mf.source_key("look", f"{elsewhere}\0/driver/only/look.png"),
            "model": tiny_pipeline_dir, "out": str(out), "return_files": True}
    answer = ItemWorker("cpu").process(task, ((tmp_path / "look.png").read_bytes(),
                                              (tmp_path / "sphere.glb").read_bytes()))
    assert answer["state"] == "done", answer.get("error")
    files = answer["files"]
    assert files["input_mesh.glb"] == (tmp_path / "sphere.glb").read_bytes() and os.listdir(out) == []
    record = json.loads(files["settings.json"])
    assert record["mesh"] == elsewhere and record[mf.ITEM_KEY]["kind"] == "look"
    assert record["inputs"] == ["/driver/only/look.png"]
    landed = mf.commit(mf.write_files(out, "sphere", files), out / "sphere")
    assert landed and mf.folder_problem(out / "sphere", task["key"]) is None
    assert np.array_equal(glb_attribute(out / "sphere" / "model.glb", "POSITION"), v.astype(np.float32))
    assert np.array_equal(glb_attribute(out / "sphere" / "model.glb", "indices").reshape(-1, 3).astype(np.int64), f)


@pytest.mark.slow
def test_a_look_on_a_ray_cluster_is_sent_its_mesh_and_lands_once(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    """`--ray local --ray-output driver`: the look's image and mesh go through Ray's object store to the actor, whose
    files come back to the driver, which lands the item's folder (the mesh kept)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")            # no token file written into the user's home
    v, f = write_sphere(tmp_path / "sphere.glb")
    rgba_blob(tmp_path / "look.png")
    (tmp_path / "looks.jsonl").write_text('{"mesh": "sphere.glb", "image": "look.png", "model_family": "trellis"}\n')
    out = tmp_path / "out"
    code = command.main([str(tmp_path / "looks.jsonl"), "-o", str(out), "--model", tiny_pipeline_dir, "--ray", "local",
                         "--ray-output", "driver", *CHEAP])
    err = capsys.readouterr().err
    assert code == command.EXIT_OK, err
    (done,) = events(out, "done")
    assert done["item"] == "sphere" and mf.folder_problem(out / "sphere", done["key"]) is None
    assert (out / "sphere" / "input_mesh.glb").read_bytes() == (tmp_path / "sphere.glb").read_bytes()
    assert np.array_equal(glb_attribute(out / "sphere" / "model.glb", "POSITION"), v.astype(np.float32))
    assert np.array_equal(glb_attribute(out / "sphere" / "model.glb", "indices").reshape(-1, 3).astype(np.int64), f)
