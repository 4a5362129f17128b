"""The queue records (desktop/jobs/queued.py): jobs ending on two threads at once, a job that fails before its
folder (kept as one) or is cancelled while it waits (dropped), and one that cannot be written down (refused)."""
import errno
import json
import os
import threading
import uuid

import pytest

from desktop.jobs import queued
from desktop.jobs.job import Job
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob


def test_two_jobs_ending_at_once_leave_no_outputs_folder(tmp_path, monkeypatch):
    """One job's record is still being removed when the other job ends: the last to finish drops the records'
    folder and the outputs folder it made, so a batch that failed before any job folder leaves nothing behind."""
    out = tmp_path / "out"
    records = queued.QueueRecords(out, "model")
    image = rgba_blob(tmp_path / "a.png")
    slow, fast = (Job(id=uuid.uuid4().hex, inputs=[image], settings=GenerationSettings()) for _ in range(2))
    records.add(slow)
    records.add(fast)
    [slow_record] = out.glob(f"*/{queued.record_name(slow)}")
    slow_removing, fast_ended = threading.Event(), threading.Event()
    real_rmtree = queued.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if str(path) == str(slow_record):          # the slow job's removal waits until the other job has ended
            slow_removing.set()
            assert fast_ended.wait(30)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(queued.shutil, "rmtree", rmtree)
    ender = threading.Thread(target=records.ended, args=(slow,))
    ender.start()
    assert slow_removing.wait(30)
    records.ended(fast)
    fast_ended.set()
    ender.join(30)
    assert not ender.is_alive()
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_one_maker_of_settings_json_for_a_queued_and_a_started_job(tmp_path):
    """queued.settings_record makes every settings.json: a queued job's (no device, no seed drawn yet), a started
    one's (the seed used, the device, what the device lowered, versions) and the caller's own entries (a batch item's),
    which win."""
    from desktop.jobs.steps import settings_record

    job = Job(id=uuid.uuid4().hex, inputs=[rgba_blob(tmp_path / "a.png")], settings=GenerationSettings())
    waiting = queued.settings_record(job, "model")
    assert waiting["queued"] is True and waiting["device"] is None and "seed" not in waiting
    used = job.settings.with_seed().for_device("cpu")
    started = settings_record(job, used, "model", "cpu", {"batch_item": {"name": "a"}, "seed_was_random": False})
    assert "queued" not in started and (started["device"], started["seed"]) == ("cpu", used.seed)
    assert started["changed_for_device"]["bake_resolution"] == [1024, 512] and "torch" in started["versions"]
    assert started["batch_item"] == {"name": "a"} and started["seed_was_random"] is False
    assert {k: v for k, v in started.items() if k in waiting and k not in ("seed_was_random", "device", "settings")} \
        == {k: v for k, v in waiting.items() if k in started and k not in ("seed_was_random", "device", "settings")}


SMALL = GenerationSettings(seed=3, randomize_seed=False, ss_steps=2, slat_steps=2, texture_size=64, bake_views=4,
                           bake_resolution=64, fill_holes=False, formats=("ply",))


def test_a_job_that_fails_before_its_folder_is_kept_and_runs_again_after_a_restart(tiny_pipeline_dir, tmp_path):
    """A job whose model cannot be loaded fails before it makes its folder: its record becomes that folder (failed,
    error_kind model, its uploaded image and settings), a new runner on the outputs folder lists it the same, and
    once the model is there it runs again from that folder with the same seed."""
    from desktop.jobs import JobRunner, JobState

    out = tmp_path / "out"
    image = open(rgba_blob(tmp_path / "a.png"), "rb").read()
    runner = JobRunner(str(tmp_path / "no-model"), out, device="cpu")
    try:
        failed = runner.submit([image], SMALL)
        assert failed.wait(60) and failed.state == JobState.FAILED and failed.error_kind == "model", failed.error
    finally:
        runner.shutdown(timeout=30)
    assert failed.out_dir and sorted(os.listdir(failed.out_dir)) == ["error.json", "input.png", "settings.json"]
    record = json.loads(open(failed.files["error"]).read())
    assert (record["state"], record["kind"], record["error"]) == ("failed", "model", failed.error)
    assert sorted(os.listdir(out)) == [os.path.basename(failed.out_dir)]      # no .queue-* folder left

    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    try:
        known = runner.get(failed.id)
        assert (known.state, known.error_kind, known.error) == (JobState.FAILED, "model", failed.error)
        again = runner.rerun(failed.id)
        assert again.wait(120) and again.state == JobState.DONE, again.error
        assert again.seed == 3 and open(again.files["input"], "rb").read() == image
    finally:
        runner.shutdown(timeout=30)


def test_a_job_cancelled_while_it_waits_leaves_nothing(tiny_pipeline_dir, tmp_path):
    """Cancelled by the user before it started, a job is dropped with its record: no folder, not listed after."""
    from desktop.jobs import JobRunner

    out = tmp_path / "out"
    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    try:
        first = runner.submit([rgba_blob(tmp_path / "a.png")], SMALL.replace(ss_steps=50, slat_steps=50))
        waiting = runner.submit([rgba_blob(tmp_path / "b.png")], SMALL)
        assert runner.cancel(waiting.id) and waiting.out_dir is None
        runner.cancel(first.id)
        assert first.wait(120)
    finally:
        runner.shutdown(timeout=30)
    assert not any(name.endswith(waiting.id[:8]) for name in (os.listdir(out) if out.exists() else []))
    again = JobRunner(tiny_pipeline_dir, out, device="cpu")
    try:
        assert again.get(waiting.id) is None
    finally:
        again.shutdown(timeout=30)


def test_a_job_that_cannot_be_written_down_is_refused_and_leaves_nothing(tiny_pipeline_dir, tmp_path, monkeypatch):
    """The outputs folder's disk is full as the job is written down (ENOSPC where its settings.json is written):
    submit raises NotRecordedError (error_kind disk, the folder named), nothing is queued or left on disk, and the
    runner takes the next job once there is room."""
    from desktop.jobs import JobRunner, JobState
    from desktop.jobs.folder import JobFolder

    def disk_full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "settings.json"))

    out = tmp_path / "out"
    image = rgba_blob(tmp_path / "a.png")
    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    try:
        monkeypatch.setattr(JobFolder, "write_settings", disk_full)
        with pytest.raises(queued.NotRecordedError) as refused:
            runner.submit([image], SMALL)
        assert refused.value.error_kind == "disk" and refused.value.folder == str(out)
        assert f"the outputs folder is full ({out}): free some disk space there" in str(refused.value)
        assert "submit it again" in str(refused.value)
        assert runner.list() == [] and (not out.exists() or os.listdir(out) == [])
        monkeypatch.undo()
        job = runner.submit([image], SMALL)
        assert job.wait(120) and job.state == JobState.DONE, job.error
    finally:
        runner.shutdown(timeout=30)
