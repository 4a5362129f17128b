"""An export makes only what its files use (desktop/jobs/export_reuse.py, mesh_files.start_export): files without a
texture (geometry-only, STL, 3MF) are written from the clean-up alone, no texture bake; an export whose preview
would be its source's video links that video instead of rendering it again. On the tiny pipeline (CPU), through the
real runner: the job's progress and timings, and the bake and render functions themselves, say what ran."""
import json
import os

import pytest
import trimesh

from desktop.jobs import JobRunner, JobState
from desktop.jobs.progress import textured_files
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob

TIMEOUT = 300
# A source with a short preview; its texture and bake settings are the preset's (lowered on the CPU).
SOURCE = dict(seed=2, ss_steps=2, slat_steps=2, fill_holes=False, video_frames=8, video_resolution=64,
              formats=("mp4",))


@pytest.fixture(scope="module")
def made(tiny_pipeline_dir, tmp_path_factory):
    """(runner, the finished source job, [(job id, stage)] of every progress report)."""
    tmp = tmp_path_factory.mktemp("export_reuse")
    seen = []
    runner = JobRunner(tiny_pipeline_dir, tmp / "out", device="cpu",
                       on_progress=lambda job, p: seen.append((job.id, p.stage)))
    try:
        source = runner.submit([rgba_blob(tmp / "a.png")], GenerationSettings.from_preset("balanced", **SOURCE),
                               keep_result=True)
        assert source.wait(TIMEOUT) and source.state == JobState.DONE, source.error
        yield runner, source, seen
    finally:
        runner.shutdown(cancel=True, wait=True, timeout=30)


def finished(job):
    assert job.wait(TIMEOUT) and job.state == JobState.DONE, (job.error, job.detail)
    return json.load(open(os.path.join(job.out_dir, "timings.json")))


def test_which_files_need_a_texture():
    def needs(formats, **kw):
        return textured_files(GenerationSettings(formats=formats, **kw))
    assert needs(("glb",)) and needs(("obj",)) and needs(("usdz", "stl"))
    assert not needs(("stl", "3mf")) and not needs(("ply", "mp4")) and not needs(("glb", "obj"), geometry_only=True)


def test_files_without_a_texture_are_written_without_a_bake(made, monkeypatch):
    from trellis.export import job as export_job

    runner, source, seen = made
    baked = []
    real = export_job.bake_textured_mesh
    monkeypatch.setattr(export_job, "bake_textured_mesh", lambda *a, **k: baked.append(1) or real(*a, **k))
    plain = runner.submit_export(source.id, formats=("glb", "stl"), geometry_only=True, target_faces=3000)
    printed = runner.submit_export(source.id, formats=("stl", "3mf"))          # geometry by nature, not by the flag
    for job in (plain, printed):
        timings = finished(job)
        stages = {stage for job_id, stage in seen if job_id == job.id}
        assert "shape" in stages and "bake" not in stages, stages
        assert "shape" in timings["export"] and "bake" not in timings["export"], timings["export"]
        assert "export_bake_stages" not in timings and "observations" not in timings["export_shape_stages"]
        report = json.load(open(job.files["report"]))
        assert report["texture"] is None and not any("texture" in w for w in job.warnings), job.warnings
    assert baked == []                                               # the library's bake was never entered
    report = json.load(open(plain.files["report"]))
    assert abs(report["triangles"] - 3000) <= 150, report["triangles"]
    glb = trimesh.load(plain.files["glb"], force="mesh")
    assert len(glb.faces) == report["triangles"] and getattr(glb.visual.material, "baseColorTexture", None) is None
    assert len(trimesh.load(plain.files["stl"]).faces) == report["triangles"]
    assert len(trimesh.load(printed.files["3mf"], force="mesh").faces) > 0


def test_an_export_with_the_same_preview_links_it(made, monkeypatch):
    from trellis.utils import render_utils

    runner, source, seen = made
    rendered = []
    real = render_utils.render_video
    monkeypatch.setattr(render_utils, "render_video", lambda *a, **k: rendered.append(k["num_frames"]) or real(*a, **k))
    same = runner.submit_export(source.id, formats=("mp4", "stl"))
    timings = finished(same)
    assert rendered == [] and "mp4_from_source" in timings["export"] and "video" not in timings["export"]
    assert not {"video", "encode"} & {stage for job_id, stage in seen if job_id == same.id}
    assert open(same.files["mp4"], "rb").read() == open(source.files["mp4"], "rb").read()
    assert "model.stl" in os.listdir(same.out_dir)
    # another length is another video: rendered
    longer = runner.submit_export(source.id, formats=("mp4",), video_frames=4)
    timings = finished(longer)
    assert rendered == [4] and "mp4_from_source" not in timings["export"]
    assert open(longer.files["mp4"], "rb").read() != open(source.files["mp4"], "rb").read()
