"""The JSON files the app reads by itself — a job folder's settings / timings / error records (jsonio.load_json) and
the per-user stage times (stage_times_file) — when they are a FIFO or a symlink to /dev/zero: refused at once as not
a regular file (the stage times ignored with one warning, then written anew), never waited on or read into memory."""
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from desktop.jobs.jsonio import load_json
from desktop.jobs.stage_times import StageTimes
from desktop.jobs.stage_times_file import FILE_NAME, StageTimesFile
from tests.helpers.repo import ROOT_DIR

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX's")


def special(folder, name, kind):
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def in_thread(seconds, fn, *args):
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", fn(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__} still waiting after {seconds} s"
    return out["value"]


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_job_folders_json_that_is_a_special_file_is_refused_at_once(tmp_path, kind):
    path = special(tmp_path, "timings.json", kind)
    if kind == "fifo":
        assert in_thread(5, load_json, path) == (None, "is not a regular file (it is a pipe (FIFO))")
        return
    # In a child whose memory is capped: a reader that trusts getsize (0 for a device) would read until it runs out.
    code = f"""
        import resource, time
        resource.setrlimit(resource.RLIMIT_AS, (1500 << 20, 1500 << 20))
        from desktop.jobs.jsonio import load_json
        start = time.monotonic()
        print(load_json({str(path)!r}), round(time.monotonic() - start, 3))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=60)
    said, took = done.stdout.rsplit(" ", 1)
    assert said == "(None, 'is not a regular file (it is a device)')", done.stdout + done.stderr
    assert float(took) < 2


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_stage_times_file_that_is_a_special_file_is_ignored_with_a_warning(tmp_path, kind, capfd):
    path = special(tmp_path, FILE_NAME, kind)
    kept = StageTimesFile(path, "cpu")
    assert in_thread(5, kept.load, StageTimes()) is False
    err = capfd.readouterr().err
    what = "a pipe (FIFO)" if kind == "fifo" else "a device"
    assert f"learned stage times in {path} are not used: it is not a regular file (it is {what})" in err, err
    times = StageTimes()
    times.record("slat", 10.0, 5)
    assert in_thread(5, kept.save, times) is True          # written anew, as a regular file in the link's place
    assert path.is_file() and not path.is_symlink()
    assert in_thread(5, StageTimesFile(path, "cpu").load, StageTimes()) is True


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_an_export_json_that_is_a_special_file_gives_no_limits(tmp_path, kind):
    from desktop.jobs.job import Job
    from desktop.jobs.limits import job_limits
    from desktop.settings import GenerationSettings

    report = special(tmp_path, "export.json", kind)
    job = Job(id="j", inputs=[], settings=GenerationSettings(), files={"report": str(report)})
    assert in_thread(5, job_limits, job) is None
