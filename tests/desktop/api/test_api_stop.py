"""Stopping and restarting the API server mid-job: a real `python -m desktop api` subprocess on the tiny
pipeline (CPU), a real job, real signals (SIGINT, SIGTERM, SIGHUP, SIGKILL), then a restart on the same
outputs folder and the API asked about the earlier jobs."""
import json
import os
import signal
import time

import pytest

from tests.helpers.api_process import ApiProcess
from tests.helpers.images import rgba_blob

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals"), pytest.mark.slow]

TIMEOUT = 120
FAST = dict(seed=1, ss_steps=2, slat_steps=2, texture_size=64, bake_views=4, bake_resolution=64, fill_holes=False,
            formats=["glb", "ply"])
# Long enough that the signal always lands while it samples (it is cancelled at the next step).
SLOW = dict(seed=2, ss_steps=500, slat_steps=500, formats=["ply", "mp4"])


def read_until(proc, *texts: str) -> str:
    """The server's stderr up to and including the first line that holds one of `texts`."""
    seen = ""
    for line in proc.stderr:
        seen += line
        if any(text in line for text in texts):
            return seen
    raise AssertionError(f"the server ended before saying any of {texts!r}: {seen}")


def read_to_exit(proc) -> str:
    """The rest of the server's stderr, once it has exited. Through the same reader as read_until: its buffer may
    hold lines already (communicate() would read past them)."""
    rest = proc.stderr.read()
    proc.wait(TIMEOUT)
    return rest


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()


def hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_job_stops_cleanly_and_the_job_is_known_after_restart(tiny_pipeline_dir, tmp_path, image, sig):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        done_id = api.submit(image, **FAST)
        assert api.wait_done(done_id)["state"] == "done"
        job_id = api.submit(image, **SLOW)
        queued_id = api.submit(image, **SLOW)
        api.wait_stage(job_id, ("sparse_structure", "slat"))
    finally:
        code, err = api.stop(sig)
    assert code == 0, err
    assert "terminate called" not in err and "Traceback" not in err, err
    assert "Stopped." in err

    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == 3                          # the queued job's record became its folder
    folder = next(p for p in folders if p.name.endswith(job_id[:8]))
    waited = next(p for p in folders if p.name.endswith(queued_id[:8]))
    record = json.loads((waited / "error.json").read_text())
    assert record["state"] == "interrupted" and signal.Signals(sig).name in record["error"], record
    assert sorted(os.listdir(waited)) == ["error.json", "input.png", "settings.json"]
    assert json.loads((waited / "settings.json").read_text())["job_id"] == queued_id
    record = json.loads((folder / "error.json").read_text())
    assert record["state"] == "interrupted" and record["kind"] == "interrupted"
    assert signal.Signals(sig).name in record["error"] and "again" in record["error"]
    assert not (folder / "timings.json").exists() and not (folder / "model.ply").exists()
    assert (folder / "settings.json").is_file() and (folder / "input.png").is_file()
    assert hidden(folder) == [] and hidden(out) == []            # no partial file, no lock left
    assert os.listdir(tmp) == []                                 # no temp folder left

    # The next start knows both jobs again, from their folders (checked above for every signal: what the next start
    # reads of them is the same, so one signal's restart stands for all three).
    if sig != signal.SIGINT:
        return
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        listed = {j["id"]: j for j in api.client.get("/v1/jobs").json()["jobs"]}
        assert set(listed) == {done_id, job_id, queued_id}
        info = api.client.get(f"/v1/jobs/{job_id}").json()
        assert info["state"] == "cancelled" and info["error_kind"] == "interrupted", info
        assert info["seed"] == 2 and info["settings"]["ss_steps"] == 500
        done = api.client.get(f"/v1/jobs/{done_id}").json()
        assert done["state"] == "done" and done["progress"]["fraction"] == 1.0
        names = {f["name"] for f in done["files"]}
        assert {"model.glb", "model.ply", "settings.json", "timings.json", "input.png"} <= names
        glb = api.client.get(f"/v1/jobs/{done_id}/files/model.glb")
        assert glb.status_code == 200 and glb.content[:4] == b"glTF"
        waiting = api.client.get(f"/v1/jobs/{queued_id}").json()
        assert waiting["state"] == "cancelled" and waiting["error_kind"] == "interrupted", waiting
        assert waiting["seed"] == 2 and "again" in waiting["error"]
        assert api.client.post(f"/v1/jobs/{done_id}/cancel").status_code == 409
        # And it still works.
        new_id = api.submit(image, **FAST)
        assert api.wait_done(new_id)["state"] == "done"
    finally:
        code, err = api.stop(signal.SIGTERM)
    assert code == 0, err


def test_second_ctrl_c_stops_at_once_with_130(tiny_pipeline_dir, tmp_path, image):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    job_id = api.submit(image, **SLOW)
    api.wait_stage(job_id, ("sparse_structure", "slat"))
    api.client.close()
    api.proc.send_signal(signal.SIGINT)
    # The first Ctrl-C is being handled ("Stopping"), or the job already stopped at its next step ("Stopped.").
    err = read_until(api.proc, "Stopping", "Stopped.")
    api.proc.send_signal(signal.SIGINT)
    err += read_to_exit(api.proc)
    assert api.proc.returncode in (0, 130), err        # 0 when the job had stopped before the second one
    assert "terminate called" not in err, err
    # Whichever: the next start finds the folder marked.
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        assert api.client.get(f"/v1/jobs/{job_id}").json()["error_kind"] == "interrupted"
    finally:
        api.stop()
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert json.loads((folder / "error.json").read_text())["state"] == "interrupted"


def test_signals_while_python_exits_after_the_stop_keep_the_exit_status(tiny_pipeline_dir, tmp_path):
    """Once the stop is done, Ctrl-C pressed again while the interpreter exits gives 130 (it stops at once) or 0 (it
    came too late to matter), never a death by the signal: Python gives the signals their default action back
    near its end."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, tmp_path / "out", tmp)
    api.client.close()
    api.proc.send_signal(signal.SIGINT)
    err = read_until(api.proc, "Stopped.")
    sent = 0
    while api.proc.poll() is None and sent < 2000:     # one every few milliseconds, until the process is gone
        api.proc.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.002)
    err += read_to_exit(api.proc)
    assert sent > 0 and api.proc.returncode in (0, 130), (sent, api.proc.returncode, err)
    assert "Traceback" not in err, err


def test_kill_9_then_restart_marks_cleans_and_lists(tiny_pipeline_dir, tmp_path, image):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    done_id = api.submit(image, **FAST)
    assert api.wait_done(done_id)["state"] == "done"
    job_id = api.submit(image, **SLOW)
    api.wait_stage(job_id, ("sparse_structure", "slat"))
    api.client.close()
    api.proc.kill()
    api.proc.communicate(timeout=TIMEOUT)
    assert api.proc.returncode == -signal.SIGKILL

    folder = next(p for p in out.iterdir() if p.is_dir() and p.name.endswith(job_id[:8]))
    assert not (folder / "error.json").exists()
    assert (out / f".{folder.name}.lock").exists()            # the dead process's lock file stays
    # What a kill during the exports leaves (written as the atomic writers name them).
    (folder / ".preview.partial-1a2b3c4d.mp4").write_bytes(b"\0" * 1000)
    (folder / ".obj-partial-5e6f7a8b").mkdir()
    (folder / ".obj-partial-5e6f7a8b" / "model.obj").write_text("v 0 0 0\n")
    stale = tmp / "trellis_simplify_abc123"
    stale.mkdir()
    (stale / "in.npz").write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp / "trellis_simplify_def456"           # a decimation just starting in another process
    fresh.mkdir()
    other = tmp / "someone_elses_folder"
    other.mkdir()
    os.utime(other, (old, old))
    # A folder whose job runs in another process (it holds the lock): left alone.
    from desktop.jobs.folder import lock_path, release_lock, try_lock

    busy = out / "20990101-000000-0123abcd"
    busy.mkdir()
    (busy / ".model.partial-00000000.ply").write_bytes(b"x")
    held = try_lock(lock_path(out, busy.name))
    assert held is not None
    try:
        api = ApiProcess(tiny_pipeline_dir, out, tmp)
        try:
            info = api.client.get(f"/v1/jobs/{job_id}").json()
            assert info["state"] == "cancelled" and info["error_kind"] == "interrupted", info
            assert "killed" in info["error"]
            assert api.client.get(f"/v1/jobs/{done_id}").json()["state"] == "done"
            assert len(api.client.get("/v1/jobs").json()["jobs"]) == 2
        finally:
            code, err = api.stop()
        assert code == 0, err
        assert "1 unfinished marked interrupted" in err, err
    finally:
        release_lock(held, lock_path(out, busy.name))
    record = json.loads((folder / "error.json").read_text())
    assert record["state"] == "interrupted"
    assert hidden(folder) == [] and not (out / f".{folder.name}.lock").exists()
    assert (folder / "settings.json").is_file() and (folder / "input.png").is_file()    # nothing else lost
    assert not stale.exists() and fresh.exists() and other.exists()
    assert hidden(busy) == [".model.partial-00000000.ply"] and not (busy / "error.json").exists()


def queue_folders(out):
    return [n for n in os.listdir(out) if n.startswith(".queue-")]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_queued_jobs_are_known_after_a_stop_and_run_again_in_one_call(tiny_pipeline_dir, tmp_path, image, sig):
    """Jobs accepted (202) but still waiting when the server stops, by kill -9 or SIGTERM: after a restart each is
    known (interrupted, its inputs and settings in its folder) and POST /v1/jobs/{id}/rerun runs it again."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        running = api.submit(image, **SLOW)
        waiting = [api.submit(image, **{**FAST, "seed": 10 + i, "formats": ["ply"]}) for i in range(3)]
        api.wait_stage(running, ("sparse_structure", "slat"))
        assert api.client.get(f"/v1/jobs/{waiting[-1]}").json()["queue_position"] == 2
    finally:
        if sig == signal.SIGKILL:
            api.client.close()
            api.proc.kill()
            api.proc.communicate(timeout=TIMEOUT)
        else:
            code, err = api.stop(sig)
            assert code == 0, err
    if sig == signal.SIGKILL:
        (queue,) = queue_folders(out)                   # the dead process's records, none of them lost
        names = os.listdir(out / queue)                 # (the running job's folder names it: no record)
        assert sorted(n[-8:] for n in names if n != ".owner") == sorted(j[:8] for j in waiting)
    else:
        assert queue_folders(out) == []                 # a clean stop made them job folders at once

    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        listed = {j["id"]: j for j in api.client.get("/v1/jobs").json()["jobs"]}
        assert set(listed) == {running, *waiting}
        for i, job_id in enumerate(waiting):
            info = api.client.get(f"/v1/jobs/{job_id}").json()
            assert info["state"] == "cancelled" and info["error_kind"] == "interrupted", info
            assert "again" in info["error"] and info["seed"] == 10 + i and info["settings"]["ss_steps"] == 2
            assert {f["name"] for f in info["files"]} == {"input.png", "settings.json", "error.json"}
            assert api.client.get(f"/v1/jobs/{job_id}/files/input.png").content == image
        assert queue_folders(out) == []
        # Run again in one call: the same inputs, settings and seed, as a new job.
        r = api.client.post(f"/v1/jobs/{waiting[0]}/rerun")
        assert r.status_code == 202, r.text
        again = r.json()
        assert again["id"] not in listed and r.headers["location"] == f"/v1/jobs/{again['id']}"
        assert again["state"] in ("queued", "running")
        assert api.client.post(f"/v1/jobs/{again['id']}/rerun").status_code == 409      # it has not ended
        done = api.wait_done(again["id"])
        assert done["state"] == "done" and done["seed"] == 10, done
        assert done["settings"]["ss_steps"] == 2 and done["settings"]["formats"] == ["ply"]
        assert {"model.ply", "input.png"} <= {f["name"] for f in done["files"]}
        assert api.client.get(f"/v1/jobs/{done['id']}/files/input.png").content == image
        # The job that was running when the server stopped runs again the same way.
        r = api.client.post(f"/v1/jobs/{running}/rerun")
        assert r.status_code == 202 and r.json()["seed"] in (None, 2), r.text
        assert api.client.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 200
        assert api.client.post("/v1/jobs/0123456789abcdef/rerun").status_code == 404
    finally:
        code, err = api.stop(signal.SIGTERM)
    assert code == 0, err


def test_kill_9_in_the_encode_stage_leaves_nothing_after_the_next_start(tiny_pipeline_dir, tmp_path, image):
    """kill -9 while the preview is being encoded (the decimation for the GLB meanwhile in its temp folder): the
    partial video and the decimation's folder stay until the next start, which removes both at once."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        job_id = api.submit(image, **{**FAST, "formats": ["glb", "mp4"], "video_frames": 60,
                                      "video_resolution": 256})
        # The encoder writes the hidden partial file from its first frame to its last: kill -9 the moment it is there.
        deadline = time.time() + TIMEOUT * 2
        partial = []
        while not partial:
            assert time.time() < deadline and api.proc.poll() is None
            folder = next((p for p in out.iterdir() if p.is_dir() and p.name.endswith(job_id[:8])), None) \
                if out.is_dir() else None
            partial = [n for n in os.listdir(folder) if n.startswith(".preview.partial-")] if folder else []
            time.sleep(0.002)
        api.proc.kill()
    finally:
        api.client.close()
        if api.proc.poll() is None:
            api.proc.kill()
        api.proc.communicate(timeout=TIMEOUT)
    assert not (folder / "preview.mp4").exists()
    assert [n for n in os.listdir(folder) if n.startswith(".preview.partial-") and n.endswith(".mp4")], \
        os.listdir(folder)
    assert [n for n in os.listdir(tmp) if n.startswith("trellis_simplify_")], os.listdir(tmp)
    api = ApiProcess(tiny_pipeline_dir, out, tmp)         # seconds later: no grace period for a dead process's folder
    try:
        info = api.client.get(f"/v1/jobs/{job_id}").json()
        assert info["state"] == "cancelled" and info["error_kind"] == "interrupted", info
    finally:
        code, err = api.stop()
    assert code == 0, err
    assert hidden(folder) == [] and hidden(out) == []
    assert [n for n in os.listdir(tmp) if n.startswith("trellis_")] == []
