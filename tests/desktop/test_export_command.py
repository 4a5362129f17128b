"""`python -m desktop export JOB_FOLDER -o OUT [export options]` (desktop/export_command.py), end to end on the tiny
pipeline: a job made by `generate` exported again from its folder's result.npz in another process, with the same
GLB for the same settings, and with the export studio's options — a face count, height and pivot, up axis, a
normal map, STL / 3MF / USDZ / OBJ — each file read back by a real reader and described in export.json."""
import json
import os

import numpy as np
import pytest
import trimesh

from images import rgba_blob
from test_cli import SMALL, desktop, job_folders


@pytest.fixture(scope="module")
def made(tiny_pipeline_dir, tmp_path_factory):
    """One generate job (GLB + PLY) and its folder."""
    tmp = tmp_path_factory.mktemp("export_cmd")
    out = tmp / "made"
    proc = desktop("generate", rgba_blob(tmp / "a.png"), "-o", out, "--model", tiny_pipeline_dir,
                   "--formats", "glb,ply", "--seed", "3", "--quiet", *SMALL)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    assert os.path.isfile(os.path.join(folder, "result.npz"))
    return {"folder": folder, "tmp": tmp, "model": tiny_pipeline_dir}


def test_a_job_folder_exported_again_gives_the_same_glb(made):
    out = made["tmp"] / "same"
    proc = desktop("export", made["folder"], "-o", out, "--model", made["model"], "--formats", "glb", "--quiet")
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    assert open(os.path.join(folder, "model.glb"), "rb").read() == \
        open(os.path.join(made["folder"], "model.glb"), "rb").read()
    record = json.load(open(os.path.join(folder, "settings.json")))
    assert record["kind"] == "export" and record["seed"] == 3
    timings = json.load(open(os.path.join(folder, "timings.json")))
    assert "pipeline" not in timings                                     # nothing sampled


def test_the_export_options_shape_every_file(made):
    target = 5000                  # the tiny decoder's mesh has ~40 k faces (thin sheets: see cleanup.chain.refit)
    out = made["tmp"] / "studio"
    proc = desktop("export", made["folder"], "-o", out, "--model", made["model"],
                   "--formats", "glb,obj,stl,3mf,usdz", "--target-faces", target, "--height", "1.8",
                   "--pivot", "bottom", "--up", "z", "--normal-map", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    path = lambda name: os.path.join(folder, name)                      # noqa: E731
    report = json.load(open(path("export.json")))
    assert abs(report["triangles"] - target) <= 0.05 * target, (report["triangles"], target)
    assert report["size_m"]["height"] == pytest.approx(1.8, abs=1e-5) and report["base_m"] == pytest.approx(0, abs=1e-6)
    assert report["texture"]["normal_map"] and set(report["files"]) == {"glb", "obj", "stl", "3mf", "usdz"}
    assert all(entry["bytes"] > 0 for entry in report["files"].values())
    # GLB: y up whatever --up says, 1.8 m tall, base at 0, the normal map and its tangents
    glb = trimesh.load(path("model.glb"), force="mesh")
    lo, hi = glb.bounds
    assert hi[1] - lo[1] == pytest.approx(1.8, abs=1e-4) and lo[1] == pytest.approx(0, abs=1e-5)
    assert glb.visual.material.normalTexture is not None
    assert abs(len(glb.faces) - target) <= 0.05 * target
    # OBJ, STL, 3MF: z up as asked
    for name in ("model.obj", "model.stl", "model.3mf"):
        mesh = trimesh.load(path(name), force="mesh")
        lo, hi = mesh.bounds
        assert hi[2] - lo[2] == pytest.approx(1.8, abs=1e-3) and lo[2] == pytest.approx(0, abs=1e-4), name
    # USDZ: opens in usd-core, y up, metres
    from pxr import Usd, UsdGeom
    stage = Usd.Stage.Open(path("model.usdz"))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y and UsdGeom.GetStageMetersPerUnit(stage) == 1.0


def test_geometry_only_and_bad_folders(made, tmp_path):
    out = tmp_path / "plain"
    proc = desktop("export", made["folder"], "-o", out, "--model", made["model"], "--formats", "glb",
                   "--geometry-only", "--quiet")
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    glb = trimesh.load(os.path.join(folder, "model.glb"), force="mesh")
    assert getattr(glb.visual.material, "baseColorTexture", None) is None
    not_a_job = tmp_path / "empty"
    not_a_job.mkdir()
    proc = desktop("export", not_a_job, "-o", tmp_path / "x", "--model", made["model"])
    assert proc.returncode == 2 and "not a job folder" in proc.stderr
    proc = desktop("export", made["folder"], "-o", tmp_path / "y", "--model", made["model"], "--set", "ss_steps=3")
    assert proc.returncode == 2 and "ss_steps" in proc.stderr
