"""A job stopped after its sampling, while its preview video is written (kill -9 or SIGTERM of a real `python -m
desktop api` on the tiny pipeline, CPU), keeps its whole result.npz: after a restart its answer says so and names the
export call, and POST /v1/jobs/{id}/export makes its files without sampling; `python -m desktop export FOLDER` does
the same. A job stopped before its sampling ended (still queued) is refused with why, and its rerun refusal names
its gone input inside the outputs folder, never by this computer's path."""
import json
import os
import signal
import time

import pytest

from desktop import export_command
from tests.helpers.api_process import ApiProcess
from tests.helpers.images import rgba_blob

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals"), pytest.mark.slow]

TIMEOUT = 120
# Quick to sample, then a preview long enough that the stop always lands while it renders.
SAMPLED_THEN_SLOW = dict(seed=4, ss_steps=2, slat_steps=2, formats=["ply", "mp4"], video_frames=3000)
QUEUED = dict(seed=5, ss_steps=2, slat_steps=2, formats=["ply"])
EXPORT = dict(formats=["glb"], texture_size=64, bake_views=4, bake_resolution=64, fill_holes=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()


def folder_of(out, job_id):
    return next(p for p in out.iterdir() if p.is_dir() and p.name.endswith(job_id[:8]))


def stop_while_previewing(api, out, job_id, sig):
    """`sig` to the server once the job's result.npz is whole and its preview renders."""
    deadline = time.time() + TIMEOUT
    while True:
        info = api.client.get(f"/v1/jobs/{job_id}").json()
        folders = [p for p in out.iterdir() if p.is_dir() and p.name.endswith(job_id[:8])]
        if info["progress"]["stage"] in ("video", "encode") and folders and (folders[0] / "result.npz").is_file():
            break
        assert info["state"] in ("queued", "running") and time.time() < deadline, info
        time.sleep(0.05)
    if sig == signal.SIGKILL:
        api.client.close()
        api.proc.kill()
        api.proc.communicate(timeout=TIMEOUT)
        return
    code, err = api.stop(sig)
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_job_stopped_after_its_sampling_is_exported_after_a_restart(tiny_pipeline_dir, tmp_path, image, sig,
                                                                       capsys):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        sampled = api.submit(image, **SAMPLED_THEN_SLOW)
        waiting = api.submit(image, **QUEUED)
    finally:
        stop_while_previewing(api, out, sampled, sig)
    folder = folder_of(out, sampled)
    assert (folder / "result.npz").is_file() and not (folder / "preview.mp4").exists()
    assert not (folder / "timings.json").exists()

    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        info = api.client.get(f"/v1/jobs/{sampled}").json()
        assert info["state"] == "cancelled" and info["error_kind"] == "interrupted", info
        assert "Its sampling finished" in info["error"] and f"POST /v1/jobs/{sampled}/export" in info["error"], info
        r = api.client.post(f"/v1/jobs/{sampled}/export", json=EXPORT)
        assert r.status_code == 202, r.text
        done = api.wait_done(r.json()["id"])
        assert done["state"] == "done" and done["source_id"] == sampled, done
        assert {"model.glb"} <= {f["name"] for f in done["files"]}
        glb = api.client.get(f"/v1/jobs/{done['id']}/files/model.glb")
        assert glb.status_code == 200 and glb.content[:4] == b"glTF"
        record = json.loads((folder_of(out, done["id"]) / "settings.json").read_text())
        assert record["kind"] == "export" and record["settings"]["seed"] == 4

        # still queued when the server stopped: nothing was sampled, so nothing can be exported; it says so
        info = api.client.get(f"/v1/jobs/{waiting}").json()
        assert info["error_kind"] == "interrupted" and "Its sampling finished" not in info["error"], info
        r = api.client.post(f"/v1/jobs/{waiting}/export", json=EXPORT)
        assert r.status_code == 409, r.text
        assert "before its sampling finished" in r.text and "run the job again" in r.text, r.text

        # its input gone: the rerun refusal names it inside the outputs folder, not by this computer's path
        os.remove(folder_of(out, waiting) / "input.png")
        r = api.client.post(f"/v1/jobs/{waiting}/rerun")
        assert r.status_code == 409, r.text
        detail = json.dumps(r.json())
        assert f"{folder_of(out, waiting).name}/input.png" in detail and str(out) not in detail, detail
    finally:
        code, err = api.stop()
    assert code == 0, err
    if sig == signal.SIGTERM:
        return

    # The CLI exports the same folder, in another process's runner; the folder sampled nothing is refused
    exported = tmp_path / "exported"
    code = export_command.main([str(folder), "-o", str(exported), "--formats", "ply", "--device", "cpu", "-q"])
    assert code == 0
    (made,) = [p for p in exported.iterdir() if p.is_dir()]
    assert (made / "model.ply").is_file() and (made / "timings.json").is_file()
    with pytest.raises(SystemExit) as stop:
        export_command.main([str(folder_of(out, waiting)), "-o", str(exported), "--device", "cpu", "-q"])
    assert stop.value.code == 2
    assert "before its sampling finished" in capsys.readouterr().err
