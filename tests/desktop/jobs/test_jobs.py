"""The app's job runner and settings on the tiny random-weight pipeline (CPU)."""
import errno
import json
import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from desktop import jobs as jobs_mod
from desktop import settings as settings_mod
from desktop.jobs import JobRunner, JobState, classify_failure
from desktop.settings import PRESETS, GenerationSettings
from trellis.pipelines import TrellisImageTo3DPipeline
from trellis.representations.gaussian import Gaussian
from tests.helpers.images import rgba_blob

TIMEOUT = 120


def fast(**kw):
    """Tiny-pipeline settings: 2 + 2 steps, PLY only unless asked, small renders and bake."""
    base = dict(seed=1, randomize_seed=False, ss_steps=2, slat_steps=2, formats=("ply",), video_frames=8,
                video_resolution=64, fill_holes=False, texture_size=64, bake_views=4, bake_resolution=64)
    base.update(kw)
    return GenerationSettings(**base)


@pytest.fixture(scope="module")
def shared_pipe(tiny_pipeline_dir):
    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


@pytest.fixture
def image(tmp_path):
    return rgba_blob(tmp_path / "blob.png")


@pytest.fixture
def make_runner(tmp_path, shared_pipe):
    runners = []

    def make(factory=None, **kw):
        calls = []

        def default_factory(device):
            calls.append(device)
            return shared_pipe.to(device)
        r = JobRunner("unused-model", tmp_path / "out", device="cpu", pipeline_factory=factory or default_factory,
                      **kw)
        r.factory_calls = calls
        runners.append(r)
        return r
    yield make
    for r in runners:
        r.shutdown(cancel=True, wait=True, timeout=30)


def all_files(folder):
    return sorted(os.listdir(folder))


def no_partials(folder):
    return not [f for f in os.listdir(folder) if ".partial-" in f or f.startswith(".")]


# ------------------------------------------------------------------------------------------ settings

def test_presets_validation_and_json():
    bal = GenerationSettings.from_preset("balanced")
    assert (bal.ss_steps, bal.slat_steps, bal.ss_cfg, bal.slat_cfg) == (12, 12, 7.5, 3.0)
    assert (bal.texture_size, bal.simplify) == (1024, 0.975)
    assert GenerationSettings() == bal
    high = GenerationSettings.from_preset("high")
    assert (high.ss_steps, high.slat_steps, high.texture_size) == (25, 25, 2048)
    low = GenerationSettings.from_preset("low-vram")
    assert (low.offload, low.precision) == ("model", "fp16")
    assert GenerationSettings.from_preset("fast").ss_steps < bal.ss_steps
    assert set(PRESETS) == {"fast", "balanced", "high", "low-vram"}

    s = GenerationSettings.from_preset("high", seed=9, randomize_seed=False, formats="ply, GLB,ply")
    assert s.formats == ("glb", "ply")
    assert GenerationSettings.from_json(s.to_json()) == s
    assert GenerationSettings.from_json({"settings": s.to_dict(), "seed": 9}) == s   # a job's settings.json

    for bad, match in [(dict(ss_steps=0), "ss_steps"), (dict(slat_cfg=-1), "slat_cfg"),
                       (dict(formats="glb,fbx"), "fbx"), (dict(formats=""), "at least one"),
                       (dict(precision="fp8"), "precision"), (dict(offload="disk"), "offload"),
                       (dict(texture_size=10), "texture_size"), (dict(simplify=1.0), "simplify"),
                       (dict(seed=-1), "seed"), (dict(seed=2 ** 40), "seed"), (dict(preprocess="yes"), "preprocess"),
                       (dict(bake_mode="slow"), "bake_mode"), (dict(ss_steps=2.5), "ss_steps")]:
        with pytest.raises(ValueError, match=match):
            GenerationSettings(**bad)
    with pytest.raises(ValueError, match="unknown setting"):
        GenerationSettings.from_json('{"steps": 3}')
    with pytest.raises(ValueError, match="not valid JSON"):
        GenerationSettings.from_json("{oops")
    with pytest.raises(ValueError, match="unknown preset"):
        GenerationSettings.from_preset("ultra")
    with pytest.raises(ValueError, match="ss_steps"):
        bal.replace(ss_steps=-3)

    # The torch-free copies of the memory-policy choices stay in step with the library.
    from trellis.pipelines import memory
    assert settings_mod.PRECISIONS == memory.PRECISIONS and settings_mod.OFFLOADS == memory.OFFLOADS

    # Every field has a rule (what the API's schema is built from) and a help line.
    assert set(settings_mod.RULES) | {"preset", "formats"} == set(settings_mod.field_names()) == set(settings_mod.HELP)
    assert set(settings_mod.EXPORT_FIELDS) < set(settings_mod.field_names())

    drawn = GenerationSettings(randomize_seed=True).with_seed()
    assert not drawn.randomize_seed and 0 <= drawn.seed <= settings_mod.MAX_SEED
    fixed = GenerationSettings(seed=5, randomize_seed=False)
    assert fixed.with_seed() is fixed


# ------------------------------------------------------------------------------------------ runner

def test_job_folder_contents_and_lazy_single_load(make_runner, image, tmp_path, monkeypatch):
    seen = []                                            # (planned stage order, reported stage)
    original = jobs_mod.ProgressTracker.__call__

    def spy(self, stage, step, total, message=""):
        seen.append((tuple(self.order), stage))
        return original(self, stage, step, total, message)
    monkeypatch.setattr(jobs_mod.ProgressTracker, "__call__", spy)
    runner = make_runner()
    assert runner.factory_calls == []                   # nothing loaded before the first job
    a = runner.submit([image], fast(formats=("ply", "mp4"), seed=3))
    b = runner.submit(image, fast(randomize_seed=True))
    assert a.wait(TIMEOUT) and b.wait(TIMEOUT)
    assert a.state == JobState.DONE, a.error
    assert b.state == JobState.DONE, b.error
    assert runner.factory_calls == ["cpu"]              # loaded once, lazily

    folder = a.out_dir
    assert os.path.dirname(folder) == str((tmp_path / "out").resolve())
    name = os.path.basename(folder)
    assert name.endswith("-" + a.id[:8]) and len(name.split("-")[0]) == 8
    assert all_files(folder) == ["input.png", "model.ply", "preprocessed.png", "preview.mp4", "result.npz",
                                 "settings.json", "timings.json"]
    record = json.load(open(os.path.join(folder, "settings.json")))
    assert record["seed"] == 3 and record["settings"]["seed"] == 3 and record["settings"]["ss_steps"] == 2
    assert GenerationSettings.from_json(json.dumps(record)) == a.used_settings
    assert Image.open(os.path.join(folder, "preprocessed.png")).size == (518, 518)
    timings = json.load(open(os.path.join(folder, "timings.json")))
    assert {"preprocess", "ready", "folder", "preprocessed_png", "pipeline", "export", "total"} <= set(timings)
    assert [s["stage"] for s in timings["pipeline"]["stages"]][2:4] == ["sparse_structure", "slat"]
    assert set(timings["export"]) == {"ply", "mp4", "video", "encode", "result", "files_wall", "overlapped"}
    assert timings["export"]["overlapped"] is False            # a CPU job writes its files in turn
    assert a.progress.fraction == 1.0 and a.progress.stage == "done"
    summary = json.loads(json.dumps(a.to_dict()))                    # what a UI / API would send
    assert summary["state"] == "done" and summary["seed"] == 3 and summary["files"]["ply"] == a.files["ply"]
    # Stages are reported in the planned order (so the overall fraction and the ETA make sense).
    order = seen[0][0]
    assert order == ("preprocess", "condition", "sparse_structure", "slat", "decode", "ply", "video", "encode")
    ranks = [order.index(stage) for plan, stage in seen if plan == order and stage in order]
    assert ranks == sorted(ranks) and set(ranks) == set(range(len(order)))
    g = Gaussian(aabb=[-0.5, -0.5, -0.5, 1, 1, 1])
    g.load_ply(a.files["ply"])
    assert len(g) > 0

    # A random seed is drawn per job and recorded.
    rec_b = json.load(open(os.path.join(b.out_dir, "settings.json")))
    assert rec_b["seed"] == b.seed and rec_b["seed_was_random"] is True and rec_b["settings"]["randomize_seed"] is False


def test_queue_order_and_cancel_queued(make_runner, image, shared_pipe):
    gate = threading.Event()

    def slow_factory(device):
        assert gate.wait(60)
        return shared_pipe.to(device)
    runner = make_runner(factory=slow_factory)
    jobs = [runner.submit([image], fast(seed=i)) for i in range(4)]
    deadline = time.time() + 30
    while jobs[0].state != JobState.RUNNING and time.time() < deadline:
        time.sleep(0.01)
    assert jobs[0].state == JobState.RUNNING            # held in model loading by the gate
    assert [j.state for j in jobs[1:]] == [JobState.QUEUED] * 3
    assert runner.queue_position(jobs[1].id) == 0 and runner.queue_position(jobs[3].id) == 2
    assert runner.cancel(jobs[2].id)
    assert jobs[2].state == JobState.CANCELLED and jobs[2].wait(0)
    assert runner.queue_position(jobs[3].id) == 1
    assert [j.id for j in runner.list()] == [j.id for j in jobs]

    fractions = []
    gate.set()
    while not jobs[3].wait(0.005):
        if jobs[0].state == JobState.RUNNING:
            fractions.append(jobs[0].progress.fraction)
    for j in (jobs[0], jobs[1], jobs[3]):
        assert j.state == JobState.DONE, j.error
    assert jobs[0].started < jobs[1].started < jobs[3].started        # FIFO
    assert jobs[2].started is None and jobs[2].out_dir is None       # never ran
    assert not runner.cancel(jobs[2].id) and not runner.cancel(jobs[0].id)   # already finished
    assert fractions == sorted(fractions)                            # progress never goes backwards


def test_cancel_running_job_mid_sampling(make_runner, image):
    runner = make_runner()
    slow = runner.submit([image], fast(ss_steps=300, slat_steps=2))
    after = runner.submit([image], fast())
    deadline = time.time() + 60
    while not (slow.progress.stage == "sparse_structure" and slow.progress.step >= 2):
        assert time.time() < deadline and slow.state != JobState.DONE
        time.sleep(0.002)
    assert slow.progress.eta_s is not None and slow.progress.total == 300
    assert runner.cancel(slow.id)
    assert slow.wait(TIMEOUT)
    assert slow.state == JobState.CANCELLED and slow.error == "cancelled" and slow.error_kind == "cancelled"
    assert slow.progress.stage == "sparse_structure" and slow.progress.step < 300
    files = all_files(slow.out_dir)
    assert "model.ply" not in files and "error.json" in files and no_partials(slow.out_dir)
    assert json.load(open(os.path.join(slow.out_dir, "error.json")))["state"] == "cancelled"
    assert after.wait(TIMEOUT) and after.state == JobState.DONE, after.error   # the worker goes on


def test_failures_keep_the_worker_alive(make_runner, image, shared_pipe, monkeypatch, tmp_path):
    runner = make_runner()
    decoder_bias = shared_pipe.models["sparse_structure_decoder"].out_layer[2].bias
    saved = decoder_bias.detach().clone()
    with torch.no_grad():
        decoder_bias.fill_(-1e4)                         # stage 1 finds no voxel
    try:
        empty = runner.submit([image], fast())
        assert empty.wait(TIMEOUT)
    finally:
        with torch.no_grad():
            decoder_bias.copy_(saved)
    assert empty.state == JobState.FAILED and "no occupied voxel" in empty.error and empty.error_kind == "empty"
    assert "error.json" in all_files(empty.out_dir) and "model.ply" not in all_files(empty.out_dir)

    # Out of memory: a clear message that points at the low-vram preset.
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(shared_pipe, "run", oom)
    no_mem = runner.submit([image], fast())
    assert no_mem.wait(TIMEOUT) and no_mem.state == JobState.FAILED
    assert no_mem.error.startswith("out of memory") and no_mem.error_kind == "oom"
    kind, message = classify_failure(torch.OutOfMemoryError("CUDA out of memory"), "out", "cuda:0")
    assert kind == "oom" and message.startswith("out of GPU memory: try the low-vram preset")
    monkeypatch.undo()

    # A text file: bad input, before its job made its folder (its queue record becomes that folder).
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    bad = runner.submit([str(text)], fast())
    assert bad.wait(TIMEOUT) and bad.state == JobState.FAILED
    assert bad.error.startswith("bad input:") and "not an image file" in bad.error
    assert all_files(bad.out_dir) == ["error.json", "input.txt", "settings.json"]
    assert bad.error_kind == "input"

    # A fully transparent image.
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    clear = runner.submit([str(tmp_path / "clear.png")], fast())
    assert clear.wait(TIMEOUT) and clear.state == JobState.FAILED and "No foreground" in clear.error

    # A giant image (the decode budget lowered so that the small test image counts as giant).
    monkeypatch.setattr("trellis.pipelines.preprocess.MAX_PIXELS", 50 * 50)
    giant = runner.submit([image], fast())
    assert giant.wait(TIMEOUT) and giant.state == JobState.FAILED
    assert giant.error.startswith("bad input:") and "megapixels" in giant.error
    monkeypatch.undo()

    ok = runner.submit([image], fast())
    assert ok.wait(TIMEOUT) and ok.state == JobState.DONE, ok.error


def test_unavailable_devices_are_refused(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            JobRunner("unused", tmp_path / "out", device="cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            JobRunner("unused", tmp_path / "out", gpus=[0, 1])


def test_disk_full_leaves_no_partial_file(make_runner, image, monkeypatch):
    def half_then_full(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"ply\nformat binary_little_endian 1.0\n")      # a truncated file...
        raise OSError(errno.ENOSPC, "No space left on device", str(path))   # ...then the disk is full
    monkeypatch.setattr(Gaussian, "save_ply", half_then_full)
    runner = make_runner()
    job = runner.submit([image], fast(formats=("ply", "mp4")))
    assert job.wait(TIMEOUT) and job.state == JobState.FAILED
    assert job.error.startswith("the outputs folder is full") and job.error_kind == "disk"
    files = all_files(job.out_dir)
    assert "model.ply" not in files and "preview.mp4" not in files and no_partials(job.out_dir)
    assert {"input.png", "settings.json", "preprocessed.png", "error.json"} <= set(files)
    monkeypatch.undo()
    ok = runner.submit([image], fast())
    assert ok.wait(TIMEOUT) and ok.state == JobState.DONE, ok.error


def test_multi_view_job_and_precision_switch(make_runner, tmp_path, shared_pipe):
    runner = make_runner()
    views = [rgba_blob(tmp_path / "a.png"), rgba_blob(tmp_path / "b.png", color=(40, 200, 90))]
    job = runner.submit(views, fast(precision="fp16"))
    assert job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
    assert {"input.png", "input_2.png", "preprocessed.png", "preprocessed_2.png"} <= set(all_files(job.out_dir))
    assert job.timings["memory_policy"]["precision"] == "fp16"
    back = runner.submit(views[:1], fast(precision="auto"))
    assert back.wait(TIMEOUT) and back.state == JobState.DONE
    assert back.timings["memory_policy"]["precision"] == "fp32"       # switched back, no reload
    assert runner.factory_calls == ["cpu"]

    # Background removal off: an opaque JPEG is used as it is (nothing is downloaded).
    Image.open(views[0]).convert("RGB").save(tmp_path / "photo.jpg")
    raw = runner.submit([str(tmp_path / "photo.jpg")], fast(preprocess=False))
    assert raw.wait(TIMEOUT) and raw.state == JobState.DONE, raw.error
    assert "input.jpg" in all_files(raw.out_dir)
    assert Image.open(raw.files["preprocessed"]).size == (96, 96)


def test_one_worker_per_gpu(tmp_path):
    runner = JobRunner("unused", tmp_path / "out", gpus=[0, 1], pipeline_factory=lambda d: None)
    try:
        assert runner.devices == ["cuda:0", "cuda:1"]
        assert sum(w.thread.is_alive() for w in runner._workers) == 2
    finally:
        runner.shutdown(timeout=10)
    assert not any(w.thread.is_alive() for w in runner._workers)
    with pytest.raises(RuntimeError, match="shut down"):
        runner.submit(["x.png"])


def test_kept_result_is_exported_without_sampling_again(make_runner, image, tmp_path):
    import trimesh

    from desktop.jobs import InputError, NoResultError, UnknownJobError, check_image

    runner = make_runner(keep_results=1)
    preview = runner.submit([image], fast(formats=("mp4",), seed=5), keep_result=True)
    assert preview.wait(TIMEOUT) and preview.state == JobState.DONE, preview.error
    assert preview.result_kept and preview.to_dict()["result_kept"] is True
    assert "glb" not in preview.files and "mp4" in preview.files

    glb = runner.submit_export(preview.id, formats=("glb",), texture_size=128)
    assert glb.kind == "export" and glb.source_id == preview.id
    assert glb.wait(TIMEOUT) and glb.state == JobState.DONE, glb.error
    assert glb.out_dir != preview.out_dir
    assert all_files(glb.out_dir) == ["export.json", "input.png", "model.glb", "preprocessed.png", "settings.json",
                                      "timings.json"]
    assert "result" in preview.files                       # the source's folder keeps its result for later
    assert len(trimesh.load(glb.files["glb"], force="mesh").faces) > 0
    record = json.load(open(os.path.join(glb.out_dir, "settings.json")))
    assert record["source_job"] == preview.id and record["seed"] == 5
    assert record["settings"]["texture_size"] == 128 and record["settings"]["ss_steps"] == 2
    assert "pipeline" not in glb.timings                                                    # nothing sampled
    assert set(glb.timings["export"]) == {"bake_start", "bake", "glb", "report", "files_wall", "overlapped"}
    assert glb.progress.stage == "done" and runner.factory_calls == ["cpu"]

    again = runner.submit_export(preview.id, formats="ply,obj")           # the result can be used again
    assert again.wait(TIMEOUT) and again.state == JobState.DONE, again.error
    assert {"model.ply", "model.obj", "model.mtl", "model.png"} <= set(all_files(again.out_dir))

    with pytest.raises(ValueError, match="cannot change ss_steps"):
        runner.submit_export(preview.id, ss_steps=3)
    with pytest.raises(ValueError, match="texture_size"):
        runner.submit_export(preview.id, texture_size=3)
    with pytest.raises(UnknownJobError):
        runner.submit_export("no-such-job")
    plain = runner.submit([image], fast())
    assert plain.wait(TIMEOUT) and not plain.result_kept
    # not kept in memory: exported from its folder's result.npz; without that file, a clear refusal
    from_folder = runner.submit_export(plain.id, formats=("ply",))
    assert from_folder.wait(TIMEOUT) and from_folder.state == JobState.DONE, from_folder.error
    os.remove(plain.files["result"])
    with pytest.raises(NoResultError, match="no result.npz"):
        runner.submit_export(plain.id)
    newer = runner.submit([image], fast(), keep_result=True)               # keep_results=1: replaces it
    assert newer.wait(TIMEOUT) and newer.result_kept and not preview.result_kept
    assert runner.release_result(newer.id) and not newer.result_kept and not runner.release_result(newer.id)

    # Uploaded bytes are not held once the job folder has their copy.
    data = open(image, "rb").read()
    from_bytes = runner.submit([data], fast())
    assert from_bytes.wait(TIMEOUT) and from_bytes.inputs == [from_bytes.files["input"]]

    # The quick input check the API runs before queueing a job.
    check_image(image)
    check_image(data, remove_background=False)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "opaque.png")
    check_image(str(tmp_path / "opaque.png"))                # would need background removal: not run here
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    for bad, match in [(b"hello", "not an image"), (str(tmp_path / "clear.png"), "No foreground"),
                       (data[:200], "damaged or truncated")]:
        with pytest.raises(InputError, match=match):
            check_image(bad)


def test_glb_and_obj_share_one_bake(make_runner, image, monkeypatch):
    from desktop.jobs.progress import ProgressTracker
    from trellis.export import job as export_job

    calls = []
    real = export_job.bake_textured_mesh

    def counted(*args, **kwargs):                        # the real bake, counted
        calls.append(kwargs["options"].texture_size)
        return real(*args, **kwargs)
    monkeypatch.setattr(export_job, "bake_textured_mesh", counted)
    seen = []
    original = ProgressTracker.__call__

    def spy(self, stage, step, total, message=""):
        seen.append(stage)
        return original(self, stage, step, total, message)
    monkeypatch.setattr(ProgressTracker, "__call__", spy)
    started = []
    from trellis.export import processes
    from trellis.export.cleanup import decimate

    class Recorded(decimate.BackgroundSimplify):          # the real child process, recorded
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            started.append(self)
    monkeypatch.setattr(decimate, "BackgroundSimplify", Recorded)
    job = make_runner().submit([image], fast(formats=("glb", "obj", "ply")))
    assert job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
    assert calls == [64]                                  # one bake for both files
    # the decimation ran in a child process while the PLY was written, and was cleaned up: its folder removed,
    # its child ended or waiting idle in the pool for the next export (not left busy)
    assert len(started) == 1 and started[0].decimation.child_calls >= 1    # a child's result, not done here
    proc = started[0].process
    pooled = any(p is proc for p in processes.pooled_processes())
    assert (proc.poll() is not None or pooled) and not os.path.exists(started[0].folder)
    assert not started[0].decimation.children()
    import trimesh
    glb = trimesh.load(job.files["glb"], force="mesh")
    obj = trimesh.load(job.files["obj"], force="mesh")
    assert len(glb.faces) == len(obj.faces) > 0
    tex = np.asarray(glb.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(tex, np.asarray(Image.open(job.files["texture"]).convert("RGB")))
    timings = json.load(open(os.path.join(job.out_dir, "timings.json")))
    assert {"bake", "glb", "obj"} <= set(timings["export"]) and "uv_unwrap" in timings["export_bake_stages"]["seconds"]
    stages = [s for s in seen if s in ("bake", "glb", "obj")]
    assert stages.index("bake") < stages.index("glb") < stages.index("obj") and stages[-1] == "obj"


def test_cpu_settings_replace_only_preset_values():
    from desktop.settings import CPU_VALUES

    bal = GenerationSettings.from_preset("balanced")
    cpu = bal.for_device("cpu")
    assert {k: getattr(cpu, k) for k in CPU_VALUES} == CPU_VALUES
    assert cpu.ss_steps == bal.ss_steps and cpu.simplify == bal.simplify     # nothing else changes
    assert bal.for_device("cuda") is bal and bal.for_device("cuda:1") is bal
    # A value the user chose is kept; so is a preset value already below the CPU's.
    mine = GenerationSettings.from_preset("high", bake_views=80, video_frames=30)
    used = mine.for_device("cpu")
    assert (used.bake_views, used.video_frames) == (80, 30)
    assert (used.bake_resolution, used.video_resolution) == (CPU_VALUES["bake_resolution"],
                                                             CPU_VALUES["video_resolution"])
    small = GenerationSettings.from_preset("fast", video_resolution=256)
    assert small.for_device("cpu").video_resolution == 256
    # "custom" settings (the UI after a knob was moved): values some preset gives are the preset's.
    custom = GenerationSettings(preset="custom", texture_size=1536, bake_views=100, video_frames=77)
    used = custom.for_device("cpu")
    assert (used.bake_views, used.video_frames, used.texture_size) == (CPU_VALUES["bake_views"], 77, 1536)


def test_cpu_job_progress_moves_within_every_long_step(make_runner, image):
    """A real tiny job with every format and hole filling on the CPU: each step that grows with the
    work (visibility views, preview frames, encoded frames, observation views, solver iterations)
    reports as it goes, in advancing steps, and the overall fraction never goes back. The number of
    work units between two reports is bounded (speed itself is measured in benchmarks/cpu_job.py)."""
    events = []
    runner = make_runner(on_progress=lambda job, p: events.append(
        (p.stage, p.message, p.step, p.total, p.fraction)))
    settings = fast(formats=("glb", "ply", "obj", "mp4"), fill_holes=True, video_frames=12, bake_views=6,
                    texture_size=128, bake_resolution=96)
    job = runner.submit([image], settings)
    assert job.wait(TIMEOUT * 3) and job.state == JobState.DONE, job.error
    fractions = [e[4] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0

    steps = {}
    for stage, message, step, total, _ in events:
        steps.setdefault((stage, message), []).append((step, total))
    # bound on work units between two reports, per (stage, sub-stage)
    per_unit = {("video", ""): 1, ("encode", ""): 1, ("bake", "observe"): 1, ("bake", "bake"): 1,
                ("bake", "visibility"): 32, ("bake", "uv_unwrap"): 100, ("bake", "simplify"): 100,
                ("bake", "remove_invisible"): 4, ("bake", "fill_holes"): 3, ("bake", "final_simplify"): 1}     # short steps: may skip to the end
    for key, bound in per_unit.items():
        assert key in steps, f"no progress from {key}; got {sorted(steps)}"
        seq = [s for s, _ in steps[key]]
        total = steps[key][-1][1]
        assert seq == sorted(seq), (key, seq)
        assert seq[-1] == total, (key, seq, total)
        if key == ("bake", "bake") and seq == [total]:
            continue      # nothing observed (the random-weight Gaussians are nearly transparent): no solve
            # (the solver's per-iteration reports are checked on a real asset in tests/trellis/export/test_export.py)
        jumps = np.diff([0] + seq)
        assert jumps.max() <= bound, (key, seq)
    # the visibility pass ran in several calls, with the views the CPU gets by default
    record = json.load(open(os.path.join(job.out_dir, "timings.json")))["export_bake_stages"]["cleanup"]
    views = record["visibility"]["views"]
    assert views == steps[("bake", "visibility")][-1][1] and len(steps[("bake", "visibility")]) >= 3
    assert record["visibility"]["resolution"] <= 1024 and views <= 1000


def test_accepted_jobs_are_written_down_and_a_stop_keeps_them(make_runner, image, shared_pipe, tmp_path):
    """Every accepted job has a record on disk until it ends; a user's cancel removes it; a stop of the app turns
    the records of jobs that had made no folder into interrupted job folders, which a new runner lists and runs
    again in one call (same inputs, settings and seed)."""
    from desktop.jobs import RerunError, UnknownJobError

    gate = threading.Event()

    def slow_factory(device):
        assert gate.wait(60)
        return shared_pipe.to(device)
    out = tmp_path / "out"
    runner = make_runner(factory=slow_factory)
    jobs = [runner.submit([image], fast(seed=20 + i)) for i in range(4)]
    deadline = time.time() + 30
    while jobs[0].state != JobState.RUNNING and time.time() < deadline:
        time.sleep(0.01)
    (queue,) = [p for p in out.iterdir() if p.name.startswith(".queue-")]
    records = {p.name[-8:]: p for p in queue.iterdir() if not p.name.startswith(".")}
    assert sorted(records) == sorted(j.id[:8] for j in jobs)
    assert all_files(records[jobs[1].id[:8]]) == ["input.png", "settings.json"]
    record = json.load(open(records[jobs[1].id[:8]] / "settings.json"))
    assert record["job_id"] == jobs[1].id and record["settings"]["seed"] == 21 and record["queued"] is True

    assert runner.cancel(jobs[2].id)                       # the user's cancel: the record goes, nothing is kept
    assert not records[jobs[2].id[:8]].exists()
    runner.shutdown(cancel=True, wait=False, reason="the test stopped the app")
    gate.set()                                             # the running job (loading) stops at its next step
    assert all(j.wait(TIMEOUT) for j in jobs)
    runner.shutdown(wait=True, timeout=30)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    for job in (jobs[0], jobs[1], jobs[3]):
        assert job.state == JobState.CANCELLED and job.error_kind == "interrupted", job.error
        assert "the test stopped the app" in job.error and os.path.basename(job.out_dir).endswith(job.id[:8])
        assert all_files(job.out_dir) == ["error.json", "input.png", "settings.json"]
        assert json.load(open(os.path.join(job.out_dir, "error.json")))["state"] == "interrupted"
    assert jobs[2].out_dir is None and len([p for p in out.iterdir() if p.is_dir()]) == 3

    again = make_runner()
    known = {j.id: j for j in again.list()}
    assert set(known) == {jobs[0].id, jobs[1].id, jobs[3].id}
    assert known[jobs[1].id].error_kind == "interrupted" and known[jobs[1].id].files["input"].endswith("input.png")
    redo = again.rerun(jobs[1].id)
    assert redo.id != jobs[1].id and redo.wait(TIMEOUT) and redo.state == JobState.DONE, redo.error
    assert redo.seed == 21 and redo.used_settings.ss_steps == 2
    first = again.submit([image], fast(seed=21))         # the same job submitted anew: the same asset
    assert first.wait(TIMEOUT) and first.state == JobState.DONE
    assert open(first.files["ply"], "rb").read() == open(redo.files["ply"], "rb").read()
    with pytest.raises(UnknownJobError):
        again.rerun("0" * 32)
    waiting = again.submit([image], fast(ss_steps=300))
    with pytest.raises(RerunError):
        again.rerun(waiting.id)                         # not ended yet
    again.cancel(waiting.id)
    assert waiting.wait(TIMEOUT)


def test_a_past_job_is_exported_again_after_a_restart_with_the_same_glb(make_runner, image):
    first = make_runner()
    job = first.submit([image], fast(formats=("glb", "ply"), seed=7))
    assert job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
    glb = open(job.files["glb"], "rb").read()
    first.shutdown(wait=True, timeout=30)
    second = make_runner()                                  # a new process's runner on the same outputs folder
    assert second.get(job.id) is not None and not second.get(job.id).result_kept
    again = second.submit_export(job.id, formats=("glb",))
    assert again.wait(TIMEOUT) and again.state == JobState.DONE, again.error
    assert open(again.files["glb"], "rb").read() == glb                  # same settings: the same file
    other = second.submit_export(job.id, formats=("glb", "obj"), texture_size=128, simplify=0.9)
    assert other.wait(TIMEOUT) and other.state == JobState.DONE, other.error
    assert "pipeline" not in other.timings and second.factory_calls == []    # no model loaded, nothing sampled
    assert {"model.glb", "model.obj"} <= set(all_files(other.out_dir))
    # a damaged result.npz: that export fails with a message naming it, the runner goes on
    with open(job.files["result"], "r+b") as fh:
        fh.truncate(1000)
    broken = second.submit_export(job.id, formats=("glb",))
    assert broken.wait(TIMEOUT) and broken.state == JobState.FAILED
    assert "result.npz" in broken.error or "kept result" in broken.error, broken.error
