"""TRELLIS.2's files are written by the library's scheduler (trellis.export.ExportJob with PbrOptions, result.npz
and the lit preview as its SideWork), as v1's are: the scheduled order (the preview beside the mesh files, written
side by side, what a GPU job does) gives the serial order's files byte for byte; a failed file stops the preview and
keeps the whole result.npz (an export makes the files from it); and `python -m desktop export JOB --simplify 0` of a tiny TRELLIS.2 job, through the real CLI
process, writes a GLB that has faces."""
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from desktop import cli
from desktop.jobs import steps, trellis2_steps
from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job
from desktop.settings import GenerationSettings
from trellis.export import check_ovoxel_result
from tests.helpers.ovoxel_blobs import random_blob

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = dict(seed=4, randomize_seed=False, formats=("glb", "obj", "ply", "mp4"), texture_size=64,
                target_faces=2000, normal_map=True, video_resolution=32, video_frames=3)


@pytest.fixture(scope="module")
def ovoxel():
    return random_blob(40, latent=32, seed=3)


def write(ovoxel, root, overlap: bool, progress=steps.quiet, early: bool = False, **settings):
    job = Job(id=uuid.uuid4().hex, inputs=[], settings=GenerationSettings(**{**SETTINGS, **settings}))
    folder = JobFolder.create(root, job)
    job.out_dir = str(folder.path)
    shape = trellis2_steps.EarlyShape(job.settings, lambda: False)
    if early:
        shape.start([ovoxel])               # what the pipeline's on_shape does once the shape is decoded
    try:
        trellis2_steps.write_ovoxel_outputs(job, folder, job.settings, ovoxel, progress, lambda: False, device="cpu",
                                            keep=True, overlap=overlap, prepared=shape.prepared)
    finally:
        shape.close()
        folder.release()
    return job, folder


def side_threads() -> list:
    return [t for t in threading.enumerate() if t.name in ("trellis-preview", "trellis-kept-result")]


def test_the_scheduled_order_writes_the_serial_orders_files(ovoxel, tmp_path):
    reports = []
    seq, _ = write(ovoxel, tmp_path / "seq", overlap=False)
    ovl, _ = write(ovoxel, tmp_path / "ovl", overlap=True, progress=lambda stage, *a: reports.append(stage))
    assert set(seq.files) == set(ovl.files) >= {"glb", "obj", "ply", "mp4", "report", "result"}
    for kind in seq.files:
        if kind == "result":                   # a zip: its members' dates differ, so compare what it holds
            with np.load(seq.files[kind]) as a, np.load(ovl.files[kind]) as b:
                assert sorted(a.files) == sorted(b.files)
                assert all(np.array_equal(a[k], b[k]) for k in a.files)
        else:
            assert Path(seq.files[kind]).read_bytes() == Path(ovl.files[kind]).read_bytes(), kind
    assert seq.timings["export"]["overlapped"] is False and ovl.timings["export"]["overlapped"] is True
    assert ovl.timings["export"]["side_by_side"] == ["glb", "obj"]      # the first job above wrote both alone
    for job in (seq, ovl):
        assert {"bake", "glb", "obj", "ply", "mp4", "result", "files_wall"} <= set(job.timings["export"])
    # the preview is silent beside the files and waited for last
    assert reports[-1] == "encode" and reports.index("bake") < reports.index("glb") < reports.index("encode")
    assert not side_threads()


def test_the_mesh_prepared_while_the_texture_samples_writes_the_serial_orders_files(ovoxel, tmp_path):
    seq, _ = write(ovoxel, tmp_path / "seq", overlap=True)
    early, _ = write(ovoxel, tmp_path / "early", overlap=True, early=True)
    assert "prepare_early" in early.timings["export_bake_stages"]["seconds"]
    assert "prepare_early" not in seq.timings["export_bake_stages"]["seconds"]
    for kind in ("glb", "obj", "ply", "mp4"):
        assert Path(seq.files[kind]).read_bytes() == Path(early.files[kind]).read_bytes(), kind
    assert not [t for t in threading.enumerate() if t.name == "trellis-pbr-prepare"]
    # the app's job does it on a GPU only (a CPU's texture flow wants every core)
    assert not trellis2_steps.prepares_early(GenerationSettings(**SETTINGS), None, "cpu")


def test_a_failed_mesh_file_stops_the_preview_and_keeps_the_whole_result(ovoxel, tmp_path, monkeypatch):
    def broken(self, kind, textured, **options):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(JobFolder, "write_mesh", broken)
    with pytest.raises(OSError, match="No space"):
        write(ovoxel, tmp_path, overlap=True, video_frames=200)
    assert not side_threads()
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.endswith((".glb", ".mp4")) or "partial" in n], names
    # the sampling's result stays, whole: an export makes the files again without sampling
    assert "result.npz" in names
    check_ovoxel_result(folder / "result.npz")


def test_the_trellis2_steps_start_no_thread_of_their_own():
    source = (ROOT / "desktop/jobs/trellis2_steps.py").read_text(encoding="utf-8")
    for word in ("threading", "Background(", "Thread(", "Stream("):
        assert word not in source, word


def square(path) -> str:
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (200, 80, 40, 255)
    Image.fromarray(a, "RGBA").save(path)
    return str(path)


def test_export_with_simplify_0_of_a_trellis2_job_keeps_every_face(tiny_trellis2_dir, tmp_path):
    """A job made with the default Simplify, exported with --simplify 0 ("no simplification": the target is the
    decoder mesh's own face count): the tiny model's quads, once their holes are closed, used to collapse whole in
    the trim back to that count, and the export failed with no faces left."""
    code = cli.main([square(tmp_path / "in.png"), "--model", tiny_trellis2_dir, "-o", str(tmp_path / "jobs"),
                     "--formats", "glb", "--device", "cpu", "--seed", "1022908287", "--steps", "1",
                     "--pipeline-type", "512", "--texture-size", "64", "-q"])
    assert code == 0
    (job,) = (tmp_path / "jobs").iterdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "desktop", "export", str(job), "-o", str(tmp_path / "out"),
                           "--simplify", "0", "--formats", "glb", "--device", "cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    (folder,) = (tmp_path / "out").iterdir()
    glb = trimesh.load(folder / "model.glb", force="mesh", process=False)
    dense = json.loads((folder / "timings.json").read_text())["export_bake_stages"]["input_faces"]
    assert 0 < len(glb.faces) and len(glb.faces) >= dense * 0.95, (len(glb.faces), dense)
