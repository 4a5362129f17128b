"""POST /v1/jobs/{id}/export after the app restarted: the job, made by an earlier server, is exported again from its
folder's result.npz by a new server on the same outputs folder — the same GLB bytes for the same settings, other
files for other export settings, nothing sampled. A result.npz that is not a regular file is refused as the export
command refuses it; a TRELLIS.2 result short of a member is read as TRELLIS.2's, which names it; a failed export's
answers name its files relative to the outputs folder."""
import io
import json
import os
import zipfile
from pathlib import Path

import httpx
import numpy as np
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


def rewritten(path, change) -> None:
    """The zip `path` written again with `change(members)`: {name: bytes} -> {name: bytes}."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in change(members).items():
            z.writestr(name, data)


def test_a_failed_export_names_its_files_relative_to_the_outputs_folder(tiny_pipeline_dir, first_job):
    runner = JobRunner(tiny_pipeline_dir, first_job["out"], device="cpu")
    server = LiveServer(create_app(runner))
    try:
        source = Path(runner.get(first_job["id"]).out_dir) / "result.npz"

        def flat(members):
            # every vertex on one point: the export finds no faces and fails as an unexpected error
            vertices = np.load(io.BytesIO(members["vertices.npy"]))
            out = io.BytesIO()
            np.save(out, np.zeros_like(vertices))
            return {**members, "vertices.npy": out.getvalue()}
        rewritten(source, flat)
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            r = c.post(f"/v1/jobs/{first_job['id']}/export", json={"formats": ["glb"]})
            assert r.status_code == 202, r.text
            failed = wait_job(c, r.json()["id"])
            assert failed["state"] == "failed" and failed["error_kind"] == "internal", failed
            job = runner.get(failed["id"])
            details = os.path.join(os.path.basename(job.out_dir), "error.json")
            assert os.path.join(job.out_dir, "error.json") in job.error            # the CLI's own: the whole path
            generation = c.get(f"/v1/3d/generations/{failed['id']}")
            assert generation.status_code == 500 and generation.headers["x-should-retry"] == "false"
            for message in (failed["error"], generation.json()["error"]["message"]):
                assert f"The details are in {details}." in message and str(runner.outputs_dir) not in message
            assert c.get(f"/v1/jobs/{failed['id']}/files/error.json").status_code == 200
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_result_npz_that_is_not_a_regular_file_is_refused_in_the_export_commands_words(tiny_pipeline_dir,
                                                                                         first_job):
    runner = JobRunner(tiny_pipeline_dir, first_job["out"], device="cpu")
    server = LiveServer(create_app(runner))
    try:
        source = Path(runner.get(first_job["id"]).out_dir) / "result.npz"
        os.remove(source)
        os.mkfifo(source)                      # never opened: a reader would wait for a writer
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            r = c.post(f"/v1/jobs/{first_job['id']}/export", json={"formats": ["glb"]})
            detail = r.json()["detail"]
            assert r.status_code == 409 and "is not a usable kept result: it is not a regular file" in detail, r.text
            assert "keeps no result.npz" not in detail and str(source) not in detail
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=30)


# One tiny TRELLIS.2 job: its lowest pipeline type, one step a stage, an STL (no texture bake).
T2 = {"pipeline_type": "512", "formats": ["stl"], "ss_steps": 1, "slat_steps": 1, "seed": 1022908287,
      "target_faces": 100000}


def test_a_trellis2_result_without_its_coordinates_names_that_member(tiny_trellis2_dir, tmp_path):
    runner = JobRunner(tiny_trellis2_dir, tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            blob = open(rgba_blob(tmp_path / "a.png"), "rb").read()
            r = c.post("/v1/jobs", json={"images": [b64(blob)], **T2})
            assert r.status_code == 202, r.text
            made = wait_job(c, r.json()["id"], timeout=300)
            assert made["state"] == "done" and made["model_family"] == "trellis2", made
            folder = Path(runner.get(made["id"]).out_dir)
            rewritten(folder / "result.npz", lambda members: {k: v for k, v in members.items() if k != "coords.npy"})
            record = json.loads((folder / "settings.json").read_text())
            assert record["family"] == "trellis2"
            # settings.json names the family; then, without it, the members only TRELLIS.2 results have
            for named in (True, False):
                if not named:
                    (folder / "settings.json").write_text(json.dumps({k: v for k, v in record.items()
                                                                      if k != "family"}))
                r = c.post(f"/v1/jobs/{made['id']}/export", json={"formats": ["stl"]})
                assert r.status_code == 202 and r.json()["model_family"] == "trellis2", r.text
                failed = wait_job(c, r.json()["id"])
                assert failed["state"] == "failed" and failed["error_kind"] == "input", failed
                error = failed["error"]
                assert "coords.npy missing" in error and "gaussian" not in error, error
                assert os.path.join(folder.name, "result.npz") in error and str(folder) not in error
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)
