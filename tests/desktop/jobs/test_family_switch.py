"""One runner, both image families (desktop/jobs/models.py DevicePipelines, runner.py submit's `family`): a runner
started on the tiny TRELLIS v1 pipeline runs a TRELLIS.2 job where TRELLIS.2 is installed in the app's models folder
($TRELLIS_MODEL_DIR/TRELLIS.2-4B, where trellis2_availability finds it), saying so in the job's progress, then a v1
job again, one pipeline held at a time; a family that is not installed fails its job with how to install it and
leaves the loaded pipeline as it was."""
import gc
import json
import time
import weakref
from pathlib import Path

import pytest
from tests.helpers.images import rgba_blob
from tests.helpers.model_folders import install_trellis2

from desktop.jobs import JobRunner, JobState, recovery
from desktop.settings import GenerationSettings

TIMEOUT = 120
V1 = dict(seed=1, randomize_seed=False, ss_steps=1, slat_steps=1, formats=("ply",))
# TRELLIS.2 on a CPU: one step per flow, its smallest type, an STL (no texture to bake).
TRELLIS2 = dict(seed=1022908287, randomize_seed=False, ss_steps=1, slat_steps=1, pipeline_type="512",
                formats=("stl",), target_faces=100000)


@pytest.fixture(scope="module")
def switching(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path_factory):
    """(a runner on tiny v1 with TRELLIS.2 installed, the progress messages of its "load" stage, its models folder)."""
    tmp = tmp_path_factory.mktemp("family_switch")
    install_trellis2(tmp / "models", tiny_trellis2_dir)
    loads = []

    def heard(job, progress):
        if progress.stage == "load":
            loads.append((job.id, progress.message))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRELLIS_MODEL_DIR", str(tmp / "models"))
        runner = JobRunner(tiny_pipeline_dir, tmp / "out", device="cpu", on_progress=heard)
        try:
            yield runner, loads, tmp / "models"
        finally:
            runner.shutdown(cancel=True, wait=True, timeout=60)


def finished(job):
    assert job.wait(TIMEOUT), "the job did not end"
    return job


def record(job) -> dict:
    return json.loads(Path(job.files["settings"]).read_text())


def test_a_v1_runner_runs_a_trellis2_job_then_v1_again(switching, tmp_path):
    runner, loads, models = switching
    image = rgba_blob(tmp_path / "in.png")
    assert runner.families() == ["trellis", "trellis2"] and runner.loaded_family == "trellis"
    worker = runner._workers[0]
    runner.start_warmup(forward=False)                      # the server's start: its own model loaded first
    deadline = time.time() + TIMEOUT
    while runner.warming_up or not runner.model_loaded:
        assert time.time() < deadline, "the warm-up did not load the model"
        time.sleep(0.02)
    v1_pipeline = weakref.ref(worker.pipeline)

    t2 = finished(runner.submit([image], GenerationSettings(**TRELLIS2), family="trellis2"))
    assert t2.state == JobState.DONE, t2.error
    assert "stl" in t2.files and "ply" not in t2.files
    assert record(t2)["family"] == "trellis2" and record(t2)["model"] == str(models / "TRELLIS.2-4B")
    assert (t2.id, "loading TRELLIS.2 …") in loads                 # the user sees why this job waits
    assert runner.loaded_family == "trellis2" and worker.pipelines.image_family == "trellis2"
    assert type(worker.pipeline).__name__ == "Trellis2ImageTo3DPipeline"
    gc.collect()
    assert v1_pipeline() is None                            # unloaded: nothing holds the v1 pipeline any more

    v1 = finished(runner.submit([image], GenerationSettings(**V1)))     # no family: the model folder's
    assert v1.state == JobState.DONE, v1.error
    assert "ply" in v1.files and record(v1)["family"] == "trellis"
    assert (v1.id, "loading TRELLIS v1 …") in loads
    assert runner.loaded_family == "trellis" and type(worker.pipeline).__name__ == "TrellisImageTo3DPipeline"

    # Known again from its folder (a later run's history), and run again as the family that made it.
    assert recovery.job_from_folder(Path(t2.out_dir)).family == "trellis2"
    again = runner.rerun(t2.id)
    runner.cancel(again.id)
    assert again.family == "trellis2" and finished(again).state == JobState.CANCELLED


def test_a_family_that_is_not_installed_fails_its_job_and_keeps_the_loaded_pipeline(switching, tmp_path,
                                                                                      monkeypatch):
    runner, _, _ = switching
    image = rgba_blob(tmp_path / "in.png")
    worker = runner._workers[0]
    loaded, family = worker.pipeline, runner.loaded_family
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "empty"))        # TRELLIS.2 is not there
    assert runner.families() == ["trellis"]
    failed = finished(runner.submit([image], GenerationSettings(**TRELLIS2), family="trellis2"))
    assert failed.state == JobState.FAILED and failed.error_kind == "model"
    assert "TRELLIS.2 is not available" in failed.error and "--trellis2" in failed.error
    assert not [w for w in failed.warnings if "pipeline_type" in w]    # TRELLIS.2's job: the pipeline type is its own
    assert worker.pipeline is loaded and runner.loaded_family == family
    with pytest.raises(ValueError, match=r"model_family must be trellis \(TRELLIS v1\) or trellis2 \(TRELLIS.2\)"):
        runner.submit([image], GenerationSettings(**V1), family="trellis3")
