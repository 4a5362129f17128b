"""A job that fails before it makes its folder, known after the server stops: a real `python -m desktop api`
subprocess on the tiny pipeline (CPU), a photo without transparency while background removal's model is missing and
cannot be downloaded (its URL a closed port), SIGTERM, a restart on the same outputs folder, then the API asked."""
import os
import signal

import pytest

from tests.helpers.api_process import ApiProcess
from tests.helpers.images import jpeg_bytes
from tests.helpers.servers import closed_port_url

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals"), pytest.mark.slow]

FAST = dict(seed=4, ss_steps=2, slat_steps=2, texture_size=64, bake_views=4, bake_resolution=64, fill_holes=False,
            formats=["ply"])


def test_a_job_failed_before_its_folder_is_listed_and_runs_again_after_a_restart(tiny_pipeline_dir, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))             # no background removal model...
    monkeypatch.setenv("TRELLIS_U2NET_URL", closed_port_url() + "/u2net.onnx")   # ...and no way to download it
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    photo = jpeg_bytes()
    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        job_id = api.submit(photo, **FAST)
        failed = api.wait_done(job_id)
        assert failed["state"] == "failed" and failed["error_kind"] == "background_removal", failed
        assert failed["out_dir"] and {f["name"] for f in failed["files"]} == {"input.jpg", "settings.json",
                                                                              "error.json"}
    finally:
        code, err = api.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err, err
    assert not [n for n in os.listdir(out) if n.startswith(".queue-")]

    api = ApiProcess(tiny_pipeline_dir, out, tmp)
    try:
        info = api.client.get(f"/v1/jobs/{job_id}").json()
        assert (info["state"], info["error_kind"], info["error"]) == ("failed", "background_removal",
                                                                      failed["error"]), info
        assert info["seed"] == 4 and info["settings"]["ss_steps"] == 2
        assert api.client.get(f"/v1/jobs/{job_id}/files/input.jpg").content == photo
        r = api.client.post(f"/v1/jobs/{job_id}/rerun")
        assert r.status_code == 202, r.text
        again = api.wait_done(r.json()["id"])                   # the same photo, still without the model
        assert again["state"] == "failed" and again["error_kind"] == "background_removal", again
        assert api.client.get(f"/v1/jobs/{again['id']}/files/input.jpg").content == photo
    finally:
        code, err = api.stop(signal.SIGTERM)
    assert code == 0, err
