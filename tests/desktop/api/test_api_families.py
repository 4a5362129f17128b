"""REST v1 and the model family (desktop/api/families.py): a server started on the tiny TRELLIS v1 pipeline runs a
POST /v1/jobs that asks for TRELLIS.2 where TRELLIS.2 is installed in the app's models folder (the runner loads it in
place of v1), and GET /v1/health names the family loaded and the families it can run; where TRELLIS.2 is not
installed, the request is a 422 that says how to install it, and nothing is queued. StableProjectorz's /generate
passes the family on the same way."""
import base64
import json
import shutil
import time
from pathlib import Path

import httpx
from tests.helpers.images import rgba_blob
from tests.helpers.model_folders import install_trellis2
from tests.helpers.servers import LiveServer
from tests.helpers.spz_client import read_answer, send_request

from desktop.api import create_app
from desktop.jobs import JobRunner
from desktop.families.trellis2_availability import TRELLIS2_FOLDER, safetensors_header_ok

TRELLIS2 = {"model_family": "trellis2", "pipeline_type": "512", "formats": ["stl"], "ss_steps": 1, "slat_steps": 1,
            "seed": 1022908287, "randomize_seed": False, "target_faces": 100000}


def test_rest_runs_a_trellis2_job_on_a_v1_server_and_refuses_one_not_installed(tiny_pipeline_dir, tiny_trellis2_dir,
                                                                                tmp_path, monkeypatch):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path / "models", tiny_trellis2_dir)))
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    image = base64.b64encode(Path(rgba_blob(tmp_path / "in.png")).read_bytes()).decode()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            health = c.get("/v1/health").json()
            assert health["model_family"] == "trellis" and health["families"] == ["trellis", "trellis2"]
            # each family as the registry declares it, for clients that build their model choice from the server
            info = {f["id"]: f for f in health["family_info"]}
            assert list(info) == ["trellis", "trellis2"] and all(f["installed"] for f in info.values())
            assert info["trellis2"]["pipeline_types"] == ["512", "1024", "1024_cascade", "1536_cascade"]
            assert info["trellis"]["pipeline_types"] == [] and info["trellis"]["unused_settings"] == ["pipeline_type"]
            assert info["trellis2"]["words"] == "TRELLIS.2" and "bake_views" in info["trellis2"]["unused_settings"]
            made = c.post("/v1/jobs", json={"images": [image], **TRELLIS2})
            assert made.status_code == 202, made.text
            assert made.json()["model_family"] == "trellis2"
            job_id = made.json()["id"]
            deadline = time.time() + 120
            while (info := c.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
                assert time.time() < deadline, "the job did not end"
                time.sleep(0.1)
            assert info["state"] == "done", info["error"]
            kinds = {f["kind"] for f in info["files"]}
            assert "stl" in kinds and "ply" not in kinds
            assert c.get("/v1/health").json()["model_family"] == "trellis2"          # loaded now

            # StableProjectorz's /generate the same way: its job is TRELLIS.2's (stopped once it is queued).
            spz = {"single_multi_img_input": [image], "model_family": "trellis2", "pipeline_type": "512",
                   "ss_steps": 1, "slat_steps": 1}
            sock = send_request(server.url, "/generate", json.dumps(spz).encode(), "application/json")
            while len(runner.list()) < 2:
                assert time.time() < deadline, "no job was queued"
                time.sleep(0.02)
            assert runner.list()[-1].family == "trellis2"
            assert c.post("/interrupt", json={}).json()["status"] == "interrupt_requested"
            assert read_answer(sock)[0] == 499

            for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
                monkeypatch.delenv(var, raising=False)
            monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
            monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
            monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "empty"))     # TRELLIS.2 is gone
            health = c.get("/v1/health").json()
            assert health["families"] == ["trellis"]
            assert [f["installed"] for f in health["family_info"]] == [True, False]
            refused = c.post("/v1/jobs", json={"images": [image], **TRELLIS2})
            assert refused.status_code == 422
            detail = refused.json()["detail"][0]
            assert detail["loc"] == ["body", "model_family"]
            assert "TRELLIS.2 is not available" in detail["msg"] and "--trellis2" in detail["msg"]
            assert len(runner.list()) == 2
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)


def test_health_sees_trellis2_come_and_go_without_reading_an_unchanged_install_again(tiny_pipeline_dir,
                                                                                    tiny_trellis2_dir, tmp_path,
                                                                                    monkeypatch):
    """GET /v1/health's `families` follows TRELLIS.2's files from one call to the next: a network cut off halfway
    leaves it out, the same file completed brings it in, and it goes with the file; between changes, the install's
    safetensors headers are not read again."""
    models = tmp_path / "models"
    folder = Path(shutil.copytree(tiny_trellis2_dir, models / TRELLIS2_FOLDER))
    weights = folder / "ckpts" / "tex_dec_next_dc_f16c32_fp16.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:len(whole) // 2])                  # a download stopped halfway
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(models))
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            def families():
                return c.get("/v1/health").json()["families"]

            assert families() == ["trellis"]
            weights.write_bytes(whole)                            # the download finished
            assert families() == ["trellis", "trellis2"]
            read = safetensors_header_ok.cache_info()
            assert families() == ["trellis", "trellis2"]
            again = safetensors_header_ok.cache_info()
            assert again.misses == read.misses and again.hits > read.hits      # every header answered from memory
            weights.unlink()                                      # removed
            assert families() == ["trellis"]
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)
