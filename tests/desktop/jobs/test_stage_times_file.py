"""The learned stage times kept between the app's starts (desktop/jobs/stage_times_file.py): what one worker saved,
the next one's first job plans from; a damaged file or a folder that cannot be written never costs a job."""
import json
import math
import os
import threading
from pathlib import Path

import pytest

from desktop.jobs import JobRunner, JobState
from desktop.jobs.job import Job
from desktop.jobs.progress import ProgressTracker
from desktop.jobs.stage_times import StageTimes
from desktop.jobs.stage_times_file import FILE_NAME, FORMAT, MAX_DEVICES, VERSION, StageTimesFile, device_key
from desktop.settings import GenerationSettings
from desktop.state_dir import state_dir
from tests.helpers.images import rgba_blob

STAGES = ["preprocess", "sparse_structure", "slat", "glb"]
SECONDS = {"preprocess": 2.0, "sparse_structure": 30.0, "slat": 60.0, "glb": 3.0}
TIMEOUT = 120


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run_job(times, clock, seconds, steps=10):
    """One job's reports on the moved clock, each stage taking `seconds[stage]`. Returns (tracker, {stage: (eta at
    the stage's start, seconds truly left)})."""
    job = Job(id="j", inputs=[], settings=GenerationSettings())
    tracker = ProgressTracker(job, STAGES, threading.Lock(), times=times, clock=clock)
    start, total, seen = clock.now, sum(seconds.values()), {}
    for stage in STAGES:
        n = steps if stage in ("sparse_structure", "slat") else 1
        tracker(stage, 0, n)
        seen[stage] = (job.progress.eta_s, total - (clock.now - start), job.progress.measured)
        for i in range(n):
            clock.now += seconds[stage] / n
            tracker(stage, i + 1, n)
    return tracker, seen


def reloaded(path, key="cpu"):
    """A new process's table: what the file at `path` holds for `key`."""
    times = StageTimes()
    assert StageTimesFile(path, key).load(times)
    return times


def test_the_first_job_after_a_restart_plans_from_the_saved_times(tmp_path, capfd):
    path, clock = tmp_path / "state" / FILE_NAME, Clock()
    times = StageTimes()
    run_job(times, clock, SECONDS)
    times.of("512").record("shape_slat", 1.2, 12)         # a TRELLIS.2 pipeline type's own table
    assert StageTimesFile(path, "cpu").save(times)
    # the first job of the new process: a learned ETA, from its first report on
    fresh = reloaded(path)
    assert set(fresh.snapshot()["stages"]) == set(STAGES) and set(fresh.kinds()) == {"512"}
    assert fresh.of("512").expected("shape_slat") == pytest.approx(1.2)
    tracker, seen = run_job(fresh, clock, SECONDS)
    assert tracker.learned
    for stage, (eta, left, measured) in seen.items():
        assert measured and eta == pytest.approx(left, rel=1e-6), stage
    # times saved after one job are a first use's: not the pace's reference, as in the process that measured them
    assert tracker.warm == set()
    assert capfd.readouterr().err == ""
    # saved after two jobs, they are: a machine now 1.5x slower (a stale file) is caught up by the pace, as today
    assert StageTimesFile(path, "cpu").save(fresh)
    slow = {k: v * 1.5 for k, v in SECONDS.items()}
    tracker, seen = run_job(reloaded(path), clock, slow)
    assert tracker.warm == set(STAGES)
    for stage in ("slat", "glb"):
        eta, left, _ = seen[stage]
        assert eta == pytest.approx(left, rel=0.05), stage


def test_each_device_keeps_its_own_times_in_one_small_file(tmp_path):
    path = tmp_path / FILE_NAME
    cpu, gpu = StageTimes(), StageTimes()
    cpu.record("slat", 60.0, 10)
    gpu.record("slat", 0.5, 10)
    assert StageTimesFile(path, device_key("cpu")).save(cpu)
    assert StageTimesFile(path, device_key("cuda:1", "NVIDIA H200")).save(gpu)
    assert device_key("cuda", None) == "cuda" and device_key("cuda:0", "NVIDIA H200") == "cuda:NVIDIA H200"
    assert reloaded(path, "cpu").expected("slat") == pytest.approx(60.0)
    assert reloaded(path, "cuda:NVIDIA H200").expected("slat") == pytest.approx(0.5)
    assert not StageTimesFile(path, "cuda:NVIDIA H100").load(StageTimes())     # another card: none yet
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == (FORMAT, VERSION)
    # many cards over the years: the most recently saved are kept, and the file stays small
    for i in range(MAX_DEVICES + 2):
        assert StageTimesFile(path, f"cuda:GPU {i}").save(gpu)
    devices = json.loads(path.read_text())["devices"]
    assert len(devices) == MAX_DEVICES and f"cuda:GPU {MAX_DEVICES + 1}" in devices and "cpu" not in devices
    assert path.stat().st_size < 4096
    assert [p.name for p in path.parent.iterdir()] == [FILE_NAME]           # no temp file left behind


@pytest.mark.parametrize("damage", ["garbage", "not utf-8", "truncated", "other version", "not ours", "nan",
                                    "negative", "bool steps", "short row", "huge", "a folder"])
def test_a_damaged_file_is_ignored_with_one_line_and_written_anew(tmp_path, capfd, damage):
    path = tmp_path / FILE_NAME
    good = StageTimes()
    good.record("slat", 6.0, 10)
    StageTimesFile(path, "other").save(good)               # another device's entry, valid
    record = json.loads(path.read_text())
    record["devices"]["cpu"] = {"saved": 1.0, "stages": {"slat": [0.6, 10, 2]}, "kinds": {}}
    row = {"nan": [math.nan, 10, 2], "negative": [-1.0, 10, 2], "bool steps": [0.6, True, 2],
           "short row": [0.6, 10]}.get(damage)
    if row:
        record["devices"]["cpu"]["stages"]["slat"] = row
    if damage == "other version":
        record["version"] = VERSION + 1
    if damage == "not ours":
        record["format"] = "something else"
    text = json.dumps(record)
    blob = {"garbage": b"\x00\x01garbage", "not utf-8": b"\xff\xfe{}", "truncated": text[:len(text) // 2].encode(),
            "huge": b" " * (300 * 1024) + text.encode()}.get(damage, text.encode())
    if damage == "a folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(blob)
    times = StageTimes()
    assert not StageTimesFile(path, "cpu").load(times)
    assert times.snapshot() == {"stages": {}, "kinds": {}}
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and f"stage times in {path} are not used" in err, err
    if damage == "a folder":
        return
    # the next job's end writes it anew; a damaged device's entry is dropped, a valid one kept
    times.record("slat", 1.0, 1)
    assert StageTimesFile(path, "cpu").save(times)
    assert reloaded(path).expected("slat") == pytest.approx(1.0)
    keeps_other = damage in ("nan", "negative", "bool steps", "short row")
    assert (json.loads(path.read_text())["devices"].get("other") is not None) == keeps_other


# ------------------------------------------------------------------------------------------ the app's workers

@pytest.fixture
def runners(tiny_pipeline_dir, tmp_path):
    from trellis.pipelines import TrellisImageTo3DPipeline

    pipe, made = TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir), []

    def make(outputs, reports=None):
        runner = JobRunner("unused-model", outputs, device="cpu", pipeline_factory=lambda device: pipe.to(device),
                           on_progress=(lambda job, progress: reports.append(progress)) if reports is not None
                           else None)
        made.append(runner)
        return runner
    yield make
    for runner in made:
        runner.shutdown(cancel=True, wait=True, timeout=30)


def one_job(runner, image):
    job = runner.submit([image], GenerationSettings(seed=1, randomize_seed=False, ss_steps=2, slat_steps=2,
                                                    formats=("ply",), fill_holes=False))
    assert job.wait(TIMEOUT) and job.state == JobState.DONE, job.error
    return job


def test_a_restarted_app_gives_its_first_job_an_eta(runners, tmp_path, state_folder):
    image, outputs = rgba_blob(tmp_path / "blob.png"), tmp_path / "out"
    assert state_dir() == Path(state_folder) and not os.path.exists(state_folder)
    cold = []
    one_job(runners(outputs, cold), image)
    assert not any(p.measured for p in cold)                   # nothing learned yet: the rough shares
    saved = json.loads((Path(state_folder) / FILE_NAME).read_text())["devices"]["cpu"]["stages"]
    assert {"preprocess", "sparse_structure", "slat", "decode", "ply"} <= set(saved)
    # the next start: its first job's reports come from the saved times, from its first stage on
    warm = []
    one_job(runners(outputs, warm), image)
    planned = [p for p in warm if p.stage not in ("queued", "done", "load")]
    assert planned and all(p.measured and p.eta_s is not None for p in planned), planned[:3]
    assert not [n for n in os.listdir(outputs) if n.startswith(".")]          # nothing of it in the outputs


def test_a_state_folder_that_cannot_be_written_never_fails_a_job(runners, tmp_path, monkeypatch, capfd):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the state folder should be")        # stops root too, unlike chmod
    monkeypatch.setenv("TRELLIS_STATE_DIR", str(blocked))
    image = rgba_blob(tmp_path / "blob.png")
    runner = runners(tmp_path / "out")
    one_job(runner, image)
    one_job(runner, image)
    err = capfd.readouterr().err
    assert err.count("could not save the learned stage times") == 1, err      # said once, not after every job
    assert blocked.read_text() == "a file where the state folder should be"
