"""`python -m desktop export JOB_FOLDER -o OUT [export options]` (desktop/export_command.py), end to end on the tiny
pipeline: a job made by `generate` exported again from its folder's result.npz in another process, with the same
GLB for the same settings, and with the export studio's options — a face count, height and pivot, up axis, a
normal map, STL / 3MF / USDZ / OBJ — each file read back by a real reader and described in export.json; and bad
options, unfinished jobs and missing, piped or damaged result.npz refused (exit 2, one line) before any job."""
import io
import json
import os

import numpy as np
import pytest
import trimesh

from tests.helpers.cli import SMALL, desktop, job_folders
from tests.helpers.images import rgba_blob


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
    # For the web but geometry only: written without a texture or a bake, and the destination's verdict said.
    out = tmp_path / "plain"
    proc = desktop("export", made["folder"], "-o", out, "--model", made["model"], "--formats", "glb",
                   "--geometry-only", "--destination", "web")
    assert proc.returncode == 0, proc.stderr
    (folder,) = job_folders(out)
    glb = trimesh.load(os.path.join(folder, "model.glb"), force="mesh")
    assert getattr(glb.visual.material, "baseColorTexture", None) is None
    assert "bake" not in json.load(open(os.path.join(folder, "timings.json")))["export"]
    limits = json.load(open(os.path.join(folder, "export.json")))["limits"]
    said = "web limits met" if limits["met"] else f"web limits NOT met: {len(limits['reasons'])} of " \
        f"{len(limits['checks'])} missed"
    assert [line.split(": ", 1)[1] for line in proc.stderr.splitlines() if "limits" in line] == [said], proc.stderr
    not_a_job = tmp_path / "empty"
    not_a_job.mkdir()
    proc = desktop("export", not_a_job, "-o", tmp_path / "x", "--model", made["model"])
    assert proc.returncode == 2 and "not a job folder" in proc.stderr
    proc = desktop("export", made["folder"], "-o", tmp_path / "y", "--model", made["model"], "--set", "ss_steps=3")
    assert proc.returncode == 2 and "ss_steps" in proc.stderr


def test_the_output_folder_defaults_as_generates_does():
    from desktop import cli, export_command

    exported = export_command.build_parser().parse_args(["outputs/20261125-101500-1a2b3c4d"])
    assert exported.output == cli.build_parser().parse_args(["a.png"]).output == "outputs"
    assert "[-o OUT_DIR]" in export_command.build_parser().format_usage()


# ------------------------------------------------------------------------------------------ refusals (in process)

def refused(capsys, *argv) -> str:
    """`export` with `argv` exits 2 before any job, with one error line and no traceback; that line."""
    from desktop import export_command

    with pytest.raises(SystemExit) as stop:
        export_command.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and len(err.splitlines()) == 2 and "Traceback" not in err, err
    return errors[0].split(": error: ", 1)[1]


BAD_OPTIONS = [["--height", "0"], ["--height", "-1"], ["--height", "1e30"], ["--height", "nan"], ["--height", "inf"],
               ["--target-faces", "-1"], ["--target-faces", "0"], ["--lods", "0"], ["--lods", "9"],
               ["--texture-size", "3"], ["--simplify", "1.5"], ["--simplify", "-0.1"], ["--formats", "fbx"],
               ["--formats", ""], ["--formats", ",".join(f"f{i}" for i in range(1000))]]


def test_bad_export_options_are_refused_as_generate_refuses_them(made, tmp_path, capsys):
    from desktop import cli

    for option in BAD_OPTIONS:
        message = refused(capsys, made["folder"], "-o", tmp_path / "out", *option)
        with pytest.raises(SystemExit) as stop:                          # the same values given to generate
            cli.main(["a.png", "-o", str(tmp_path / "gen"), *option])
        generate = capsys.readouterr().err.splitlines()[-1].split(": error: ", 1)[1]
        assert stop.value.code == 2 and message == generate, option
    assert not os.path.exists(tmp_path / "out")


def test_folders_that_cannot_be_exported_are_refused_before_any_job(made, tmp_path, capsys):
    import shutil
    import zipfile

    from desktop import export_command

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(made["folder"], folder)
        return folder
    out = tmp_path / "out"
    no_result = copy("no_result")
    os.remove(no_result / "result.npz")
    assert "result.npz is not a usable kept result: there is no such file" in refused(capsys, no_result, "-o", out)
    fifo = copy("fifo")
    os.remove(fifo / "result.npz")
    os.mkfifo(fifo / "result.npz")                       # never opened: the command would wait for a writer
    assert "not a regular file" in refused(capsys, fifo, "-o", out)
    nan = copy("nan")
    with zipfile.ZipFile(nan / "result.npz") as z:
        parts = {name: z.read(name) for name in z.namelist()}
    vertices = np.load(io.BytesIO(parts["vertices.npy"]))
    with zipfile.ZipFile(nan / "result.npz", "w") as z:
        for name, data in parts.items():
            if name == "vertices.npy":
                with z.open(name, "w") as fh:
                    np.save(fh, np.full_like(vertices, np.nan))
            else:
                z.writestr(name, data)
    message = refused(capsys, nan, "-o", out)
    assert str(nan / "result.npz") in message and "vertices.npy holds NaN" in message and "run its job again" in message
    cut = copy("cut")
    data = (cut / "result.npz").read_bytes()
    (cut / "result.npz").write_bytes(data[: len(data) // 2])
    assert "not a readable zip" in refused(capsys, cut, "-o", out)
    running = copy("running")                            # no timings.json nor error.json yet
    os.remove(running / "timings.json")
    assert "has not finished" in refused(capsys, running, "-o", out)
    failed = copy("failed")
    os.remove(failed / "timings.json")
    (failed / "error.json").write_text(json.dumps({"state": "failed", "kind": "oom", "error": "out of memory"}))
    # failed after its sampling (out of memory in the bake): its result.npz exports; without it, refused with why
    assert export_command.source_problem(str(failed), {}) is None
    os.remove(failed / "result.npz")
    message = refused(capsys, failed, "-o", out)
    assert "before its sampling finished" in message and "(failed: out of memory)" in message, message
    assert not os.path.exists(out)
