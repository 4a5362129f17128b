"""A job's files written with the preview video made beside the bake (steps.write_outputs(overlap=True), what a GPU
job does) are the files of the sequential order, byte for byte; a cancel while both run leaves no partial file and
no thread behind. On the tiny random-weight pipeline's result (CPU)."""
import threading
import uuid

import numpy as np
import pytest

from desktop.jobs import steps
from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob
from trellis.core.callbacks import Cancelled
from trellis.export import check_result
from trellis.pipelines import TrellisImageTo3DPipeline

SETTINGS = dict(seed=4, randomize_seed=False, formats=("glb", "ply", "obj", "mp4"), texture_size=256, bake_views=8,
                bake_resolution=256, video_resolution=64, video_frames=12)
# Where the bytes compared do not depend on the texture's size: a small bake, cheaper on a CPU.
SMALL_BAKE = dict(texture_size=64, bake_views=4, bake_resolution=64)
# Where the mesh files' writing is compared, not the cleanup: no hole filling, so no visibility renders (the bake's
# most CPU); the `overlapped` fixture's job keeps them, so that its preview still runs beside them.
NO_CLEANUP = dict(SMALL_BAKE, fill_holes=False)


@pytest.fixture(scope="module")
def result(tiny_pipeline_dir, tmp_path_factory):
    pipe = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)
    image = rgba_blob(tmp_path_factory.mktemp("input") / "a.png")
    out = pipe.run(image, seed=4, formats=["gaussian", "mesh"], sparse_structure_sampler_params={"steps": 2},
                   slat_sampler_params={"steps": 2})
    return out["gaussian"][0], out["mesh"][0]


def write(result, root, overlap: bool, cancel=lambda: False, progress=steps.quiet, **settings):
    job = Job(id=uuid.uuid4().hex, inputs=[], settings=GenerationSettings(**{**SETTINGS, **settings}))
    folder = JobFolder.create(root, job)
    job.out_dir = str(folder.path)
    try:
        steps.write_outputs(job, folder, job.settings, *result, progress, cancel, keep=True, overlap=overlap)
    finally:
        folder.release()
    return job, folder


def preview_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "trellis-preview"]


@pytest.fixture(scope="module")
def overlapped(result, tmp_path_factory):
    """The job written once with the preview made beside the bake (each test reads what it checks): the job and
    the stages its progress reported."""
    reports = []
    job, _ = write(result, tmp_path_factory.mktemp("ovl"), overlap=True,
                   progress=lambda stage, *a: reports.append(stage), **SMALL_BAKE)
    return job, reports


def test_overlapped_files_are_the_sequential_files(result, overlapped, tmp_path):
    seq, _ = write(result, tmp_path / "seq", overlap=False, **SMALL_BAKE)
    ovl, _ = overlapped
    assert set(seq.files) == set(ovl.files) >= {"glb", "ply", "obj", "mp4", "report", "result"}
    for kind in seq.files:
        if kind == "result":                   # a zip: its members' dates differ, so compare what it holds
            with np.load(seq.files[kind]) as a, np.load(ovl.files[kind]) as b:
                assert sorted(a.files) == sorted(b.files)
                assert all(np.array_equal(a[k], b[k]) for k in a.files)
        else:
            assert open(seq.files[kind], "rb").read() == open(ovl.files[kind], "rb").read(), kind
    assert seq.timings["export"]["overlapped"] is False and ovl.timings["export"]["overlapped"] is True
    for job in (seq, ovl):                     # each part's seconds and the whole, so that the overlap shows
        parts = job.timings["export"]
        assert {"ply", "mp4", "bake", "glb", "obj", "files_wall"} <= set(parts)
    parts = ovl.timings["export"]
    assert parts["files_wall"] >= max(parts["mp4"], parts["bake"])
    assert not preview_threads()


def test_the_preview_is_waited_for_last_and_reports_no_stage_of_its_own(overlapped):
    """Overlapped, the job's progress is the bake's; the video's stages are not reported from the other thread."""
    _, reports = overlapped
    assert "video" not in reports
    assert reports[-1] == "encode" and reports.index("bake") < reports.index("glb") < reports.index("encode")


def test_a_cancel_while_both_run_leaves_no_partial_file_and_no_thread(result, tmp_path):
    """Cancelled at the bake's first report, while the preview renders (a long one): the job raises Cancelled, the
    preview stops too, and the folder holds only finished files — no mp4, no partial file; the result.npz, whole, stays."""
    seen = {}

    def cancel():
        if seen.get("bake") and "preview_alive" not in seen:
            seen["preview_alive"] = bool(preview_threads())
        return bool(seen.get("bake"))

    def progress(stage, *a):
        if stage == "bake":
            seen["bake"] = True
    with pytest.raises(Cancelled):
        write(result, tmp_path, overlap=True, cancel=cancel, progress=progress, video_frames=400,
              video_resolution=128)
    assert seen["preview_alive"], "the cancel came while the preview was running"
    assert not preview_threads()
    folder, = [p for p in tmp_path.iterdir() if p.is_dir()]
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if "partial" in n], names
    assert "preview.mp4" not in names, names
    # the sampling's result, written whole before the stop, stays: an export makes the files without sampling again
    assert names.count("result.npz") == 1 and not [n for n in names if n.endswith(".npz") and n != "result.npz"]
    check_result(folder / "result.npz")


def test_mesh_files_written_side_by_side_are_the_sequential_files(result, overlapped, tmp_path):
    """Once this process has written a GLB and an OBJ (the fixture's job did), an overlapped job writes them side by
    side, a thread each, and export.json's print shape facts beside them: the same bytes as one after the other.
    Placed and made print-ready, so that the facts follow the placed mesh (the plain path writes the same way)."""
    placed = {"height": 1.5, "pivot": "bottom", "print_ready": True}
    seq, _ = write(result, tmp_path / "seq", overlap=False, formats=("glb", "obj"), **placed, **NO_CLEANUP)
    ovl, _ = write(result, tmp_path / "ovl", overlap=True, formats=("glb", "obj"), **placed, **NO_CLEANUP)
    assert ovl.timings["export"]["side_by_side"] == ["glb", "obj"]
    assert "side_by_side" not in seq.timings["export"]
    assert set(seq.files) == set(ovl.files) >= {"glb", "obj", "report"}
    for kind in seq.files:
        assert open(seq.files[kind], "rb").read() == open(ovl.files[kind], "rb").read(), kind
    assert {"glb", "obj", "bake_start", "report"} <= set(ovl.timings["export"])


def test_a_mesh_file_that_fails_beside_another_fails_the_job_and_leaves_the_other_whole(result, overlapped,
                                                                                        tmp_path):
    """The GLB cannot take its place (a folder holds its name) while the OBJ is written beside it: the job raises the
    GLB's error after the OBJ's writer has ended, the OBJ is complete and no partial file is left."""
    settings = GenerationSettings(**{**SETTINGS, **NO_CLEANUP, "formats": ("glb", "obj")})
    job = Job(id=uuid.uuid4().hex, inputs=[], settings=settings)
    folder = JobFolder.create(tmp_path, job)
    job.out_dir = str(folder.path)
    (folder.file("glb")).mkdir()
    try:
        with pytest.raises(OSError):
            steps.write_outputs(job, folder, job.settings, *result, steps.quiet, lambda: False, overlap=True)
    finally:
        folder.release()
    assert job.timings["export"]["side_by_side"] == ["glb", "obj"]
    names = sorted(p.name for p in folder.path.iterdir())
    assert not [n for n in names if "partial" in n or n.startswith(".")], names
    obj = folder.file("obj")
    assert obj.exists() and (obj.parent / "model.mtl").exists() and (obj.parent / "model.png").exists()
    text = obj.read_text()
    assert text.count("\nf ") > 100 and "mtllib model.mtl" in text


def test_the_preview_waits_while_the_bake_finds_visible_faces(result, tmp_path, monkeypatch):
    """A long preview beside the bake: no preview frame is rendered while the bake's visibility renders run but the
    one under way when they began (the export's gate, trellis.export.gate), and the job says how long the preview was
    held."""
    import time

    marks, frames = {}, []
    real = steps.render_preview

    def render_preview(gaussian, settings, progress, cancel):      # the real renders, each frame's end recorded
        return real(gaussian, settings, lambda *a: frames.append(time.perf_counter()), cancel)

    def progress(stage, done=0, total=0, sub=None):
        if stage == "bake" and sub == "visibility":
            marks.setdefault("start" if done < total else "end", time.perf_counter())
    monkeypatch.setattr(steps, "render_preview", render_preview)
    job, _ = write(result, tmp_path, overlap=True, progress=progress, video_frames=400, video_resolution=128)
    assert "start" in marks and "end" in marks
    assert frames[0] < marks["start"] < frames[-1], "the preview was rendering when the visibility began"
    inside = [t for t in frames if marks["start"] < t < marks["end"]]
    assert len(inside) <= 1, (len(inside), marks)
    assert job.timings["export"]["preview_held"] > 0
    assert "mp4" in job.files
