"""A job that cannot be written down (the outputs folder's disk is full) is refused on every endpoint that queues
one: 507 with error_kind disk and the folder named, nothing queued (a live API server over a real JobRunner; the
full disk is an ENOSPC where the job's record writes its settings.json, as the other disk tests fake it)."""
import errno

import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from desktop.jobs.folder import JobFolder
from tests.helpers.images import rgba_blob
from tests.helpers.rest import FAST, SPZ_FAST, TIMEOUT, b64, form, wait_job
from tests.helpers.servers import LiveServer


def disk_full(self, record):
    raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "settings.json"))


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full_out")
    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    server = LiveServer(create_app(runner))
    yield server, runner, out
    server.close()
    runner.shutdown(cancel=True, wait=True, timeout=30)


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    return open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()


def test_every_endpoint_that_queues_answers_507_and_queues_nothing(served, blob, monkeypatch):
    server, runner, out = served
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        done = wait_job(c, c.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["ply"]}).json()["id"])
        assert done["state"] == "done", done["error"]
        before = c.get("/v1/jobs").json()["total"]
        monkeypatch.setattr(JobFolder, "write_settings", disk_full)

        r = c.post("/v1/jobs", json={"images": [b64(blob)], **FAST})
        assert r.status_code == 507 and r.json()["error_kind"] == "disk", r.text
        detail = r.json()["detail"]
        assert f"the outputs folder is full ({out})" in detail and "nothing was kept" in detail.lower()
        assert "the outputs folder is full" in detail and "submit it again" in detail
        r = c.post("/v1/jobs", files=[("images", ("blob.png", blob, "image/png"))], data=form(**FAST))
        assert r.status_code == 507 and r.json()["error_kind"] == "disk", r.text
        r = c.post(f"/v1/jobs/{done['id']}/rerun")
        assert r.status_code == 507 and r.json()["error_kind"] == "disk", r.text
        r = c.post(f"/v1/jobs/{done['id']}/export", json={"formats": ["glb"]})
        assert r.status_code == 507 and r.json()["error_kind"] == "disk", r.text
        r = c.post("/v1/3d/generations", json={"image": b64(blob), "n": 2, **FAST})
        assert r.status_code == 507, r.text
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "disk") and "outputs folder is full" in error["message"]
        r = c.post("/generate_no_preview", data=form(image_base64=b64(blob), **SPZ_FAST))
        assert r.status_code == 507 and r.json()["error_kind"] == "disk", r.text

        assert c.get("/v1/jobs").json()["total"] == before                  # none of them was queued
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []   # no record left behind
        monkeypatch.undo()
        again = c.post(f"/v1/jobs/{done['id']}/rerun")
        assert again.status_code == 202 and wait_job(c, again.json()["id"])["state"] == "done"
