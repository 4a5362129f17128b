"""POST /v1/jobs/{id}/export after the app restarted: the job, made by an earlier server, is exported again from its
folder's result.npz by a new server on the same outputs folder — the same GLB bytes for the same settings, other
files for other export settings, nothing sampled."""
import json

import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.rest import FAST, TIMEOUT, b64, wait_job
from tests.helpers.servers import LiveServer


@pytest.fixture
def first_job(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    runner = JobRunner(tiny_pipeline_dir, out, device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            blob = open(rgba_blob(tmp_path / "a.png"), "rb").read()
            r = c.post("/v1/jobs", json={"images": [b64(blob)], **FAST, "formats": ["glb"]})
            assert r.status_code == 202, r.text
            info = wait_job(c, r.json()["id"])
            assert info["state"] == "done", info
            glb = c.get(f"/v1/jobs/{info['id']}/files/model.glb").content
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)
    return {"id": info["id"], "glb": glb, "out": out}


def test_a_job_of_an_earlier_server_is_exported_again(tiny_pipeline_dir, first_job):
    runner = JobRunner(tiny_pipeline_dir, first_job["out"], device="cpu")        # the app started again
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            job_id = first_job["id"]
            r = c.post(f"/v1/jobs/{job_id}/export", json={"formats": ["glb"]})
            assert r.status_code == 202, r.text
            again = wait_job(c, r.json()["id"])
            assert again["state"] == "done" and again["source_id"] == job_id, again
            assert c.get(f"/v1/jobs/{again['id']}/files/model.glb").content == first_job["glb"]
            r = c.post(f"/v1/jobs/{job_id}/export", json={"formats": ["glb", "stl"], "target_faces": 2000,
                                                          "height": 0.5, "pivot": "bottom"})
            assert r.status_code == 202, r.text
            other = wait_job(c, r.json()["id"])
            assert other["state"] == "done", other
            report = json.loads(c.get(f"/v1/jobs/{other['id']}/files/export.json").content)
            assert report["size_m"]["height"] == pytest.approx(0.5, abs=1e-6) and abs(report["triangles"] - 2000) <= 100
            assert c.get(f"/v1/jobs/{other['id']}/files/model.stl").status_code == 200
            assert runner.get(other["id"]).timings.get("pipeline") is None          # nothing sampled
            # a destination sets its settings (the request's own win) and the report checks its limits
            r = c.post(f"/v1/jobs/{job_id}/export", json={"destination": "print", "units": "m"})
            assert r.status_code == 202, r.text
            printed = wait_job(c, r.json()["id"])
            assert printed["state"] == "done", printed
            report = json.loads(c.get(f"/v1/jobs/{printed['id']}/files/export.json").content)
            # (this source is a random-weight scatter of ~140 pieces: made one closed body, the repair says how much
            # of the surface it left out, and the job's `limits` say each limit with its verdict, as export.json)
            assert report["destination"] == "print" and set(report["files"]) == {"stl", "3mf"}, json.dumps(report)
            assert report["watertight"] and report["outward"] and report["shells"] == 1, json.dumps(report)
            assert report["print_repair"]["parts_dropped"] > 0
            facts = report["flat_base"] and report["print_repair"]["area_dropped_share"] <= 0.05
            assert report["limits"]["met"] == facts and bool(report["limits"]["reasons"]) != facts, json.dumps(report)
            limits = printed["limits"]
            assert limits["destination"] == "print" and limits["met"] == report["limits"]["met"]
            assert limits["checks"] == report["limits"]["checks"] and limits["reasons"] == report["limits"]["reasons"]
            assert c.get(f"/v1/jobs/{again['id']}").json()["limits"] is None          # no destination, no limits
            assert c.get(f"/v1/jobs/{printed['id']}/files/model_lod1.glb").status_code == 404
            r = c.post(f"/v1/jobs/{job_id}/export", json={"destination": "moon"})
            assert r.status_code == 422 and "destination" in r.text and "print" in r.text
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)
