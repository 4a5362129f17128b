"""The topology setting on every surface that makes a job, each with one real job on the tiny pipelines (CPU) whose
OBJ is read back: REST (`POST /v1/jobs`, TRELLIS v1 and TRELLIS.2), MCP (`generate_3d` over /mcp), a batch list's
topology column, and Export again (`POST /v1/jobs/{id}/export`) of a finished triangle job, which leaves that job's
files as they were; each job's export.json says the remesh's quad share, faces made vs asked, non-manifold edges
and holes. The page: tests/desktop/ui/test_ui_topology.py.

The v1 jobs are geometry-only: the tiny v1 decoder's mesh is a scatter of thin pieces whose many small UV charts
cut a good share of the quads along their diagonals (two triangles each in a textured file); the TRELLIS.2 job is
textured, its OBJ's quads as the export counted them."""
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import anyio
import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.model_folders import install_trellis2
from tests.helpers.repo import ROOT_DIR
from tests.helpers.rest import FAST, b64, wait_job
from tests.helpers.servers import LiveServer

TIMEOUT = 300
# Quads asked of the tiny v1 mesh (seed 1): fewer leave too little of its thin pieces for the remesher.
V1_QUADS = 400
V1 = {**FAST, "formats": ["obj"], "topology": "quads", "target_faces": V1_QUADS, "geometry_only": True}
# One tiny TRELLIS.2 job: its lowest pipeline type, one step a stage, a 64² texture.
T2 = {"model_family": "trellis2", "pipeline_type": "512", "ss_steps": 1, "slat_steps": 1, "seed": 1022908287,
      "texture_size": 64, "formats": ["obj"], "topology": "quads", "target_faces": 1000}
REPORT_KEYS = {"quad_share", "faces_made", "faces_asked", "non_manifold_edges", "boundary_edges", "holes"}


def face_sizes(obj_text: str) -> list:
    return [len(line.split()) - 1 for line in obj_text.splitlines() if line.startswith("f ")]


def assert_quads(obj_text: str) -> int:
    """The OBJ's faces are at least 95 % quads; their count."""
    sizes = face_sizes(obj_text)
    quads = sum(n == 4 for n in sizes)
    assert sizes and quads >= 0.95 * len(sizes), (quads, len(sizes))
    return len(sizes)


def assert_report(report: dict, asked: int, faces: int, textured: bool = False):
    """export.json's "quads": the remesh's measure, its faces as the OBJ holds them."""
    quads = report["quads"]
    assert REPORT_KEYS <= set(quads) and quads["faces_asked"] == asked and quads["quad_share"] >= 0.95, quads
    assert quads["non_manifold_edges"] == 0 and quads["holes"] >= 0, quads
    if textured:            # a UV seam through a quad's diagonal leaves it two triangles in the textured OBJ
        assert faces == 2 * quads["quads"] + quads["triangles"] - quads["textured_quads"], quads
    else:
        assert faces == quads["faces_made"] and "textured_quads" not in quads, quads


@pytest.fixture(scope="module")
def served(tiny_pipeline_dir, tmp_path_factory):
    """The REST server (with /mcp) on a runner over the tiny v1 pipeline, and an input image."""
    tmp = tmp_path_factory.mktemp("topology_surfaces")
    runner = JobRunner(tiny_pipeline_dir, tmp / "out", device="cpu")
    server = LiveServer(create_app(runner))
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            yield SimpleNamespace(url=server.url, client=client, runner=runner, tmp=tmp,
                                  image=Path(rgba_blob(tmp / "blob.png")).read_bytes())
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)


def rest_job(served, body: dict, path: str = "/v1/jobs") -> dict:
    r = served.client.post(path, json=body)
    assert r.status_code == 202, r.text
    info = wait_job(served.client, r.json()["id"], timeout=TIMEOUT)
    assert info["state"] == "done", info
    return info


def job_file(served, job_id: str, name: str):
    r = served.client.get(f"/v1/jobs/{job_id}/files/{name}")
    assert r.status_code == 200, (name, r.status_code)
    return r


def test_rest_v1(served):
    info = rest_job(served, {"images": [b64(served.image)], **V1})
    assert info["settings"]["topology"] == "quads"
    faces = assert_quads(job_file(served, info["id"], "model.obj").text)
    assert_report(job_file(served, info["id"], "export.json").json(), V1_QUADS, faces)


def test_rest_trellis2_textured(served, tiny_trellis2_dir, monkeypatch):
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(served.tmp / "models", tiny_trellis2_dir)))
    info = rest_job(served, {"images": [b64(served.image)], **T2})
    assert info["model_family"] == "trellis2" and info["settings"]["topology"] == "quads", info
    faces = assert_quads(job_file(served, info["id"], "model.obj").text)
    job_file(served, info["id"], "model.mtl")
    assert_report(job_file(served, info["id"], "export.json").json(), T2["target_faces"], faces, textured=True)


def test_mcp_generate(served):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session():
        async with httpx2.AsyncClient(timeout=TIMEOUT) as http, \
                Client(streamable_http_client(served.url + "/mcp", http_client=http)) as mcp:
            done = await mcp.call_tool("generate_3d", {"image_base64": [base64.b64encode(served.image).decode()],
                                                       "settings": V1})
            assert not done.is_error and done.structured_content["state"] == "done", done.content
            [link] = [c for c in done.content if c.type == "resource_link" and c.name == "model.obj"]
            [contents] = (await mcp.read_resource(str(link.uri))).contents
            text = getattr(contents, "text", None)
            return done.structured_content, text if text is not None else base64.b64decode(contents.blob).decode()
    info, obj = anyio.run(session)
    faces = assert_quads(obj)
    assert served.runner.get(info["job_id"]).settings.topology == "quads"
    assert_report(json.loads((Path(info["out_dir"]) / "export.json").read_text()), V1_QUADS, faces)


def test_export_again_of_a_triangle_job_as_quads(served):
    source = rest_job(served, {"images": [b64(served.image)], **FAST, "formats": ["obj"]})
    assert set(face_sizes(job_file(served, source["id"], "model.obj").text)) == {3}
    folder = Path(served.runner.get(source["id"]).out_dir)

    def files():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    before = files()
    again = rest_job(served, {key: V1[key] for key in ("formats", "topology", "target_faces", "geometry_only")},
                     f"/v1/jobs/{source['id']}/export")
    assert again["source_id"] == source["id"] and again["settings"]["topology"] == "quads", again
    faces = assert_quads(job_file(served, again["id"], "model.obj").text)
    assert_report(job_file(served, again["id"], "export.json").json(), V1_QUADS, faces)
    assert files() == before                                           # the first job's files untouched


@pytest.mark.slow
def test_batch_list_row(tiny_pipeline_dir, tmp_path):
    rgba_blob(tmp_path / "blob.png")
    (tmp_path / "list.csv").write_text("image,topology,target_faces,geometry_only\n"
                                       f"blob.png,quads,{V1_QUADS},true\n", encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT_DIR + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "desktop", "batch", str(tmp_path / "list.csv"), "-o", str(out),
                           "--model", tiny_pipeline_dir, "--device", "cpu", "--workers", "1", "--quiet",
                           "--seed", "1", "--steps", "2", "--texture-size", "64", "--formats", "obj",
                           "--set", "fill_holes=false"],
                          cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (obj,) = out.glob("*/model.obj")
    faces = assert_quads(obj.read_text())
    assert json.loads((obj.parent / "settings.json").read_text())["settings"]["topology"] == "quads"
    assert_report(json.loads((obj.parent / "export.json").read_text()), V1_QUADS, faces)
