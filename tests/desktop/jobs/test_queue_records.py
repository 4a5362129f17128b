"""The queue records' folder (desktop/jobs/queued.py) when jobs end on two threads at once."""
import threading
import uuid

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
