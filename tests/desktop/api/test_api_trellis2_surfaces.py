"""TRELLIS.2 chosen from the OpenAI-style endpoint and from MCP over /mcp, on a live REST server started on the tiny
TRELLIS v1 pipeline with the tiny TRELLIS.2 installed where the app looks for it (the runner loads it in place of
v1): LocalAI's `"model": "trellis2-4b"`, `model_family`, MCP's `settings: {"model_family": "trellis2"}` and its
`model_family` argument each make a TRELLIS.2 job; `quality` is told TRELLIS.2's pipeline types."""
import base64
from pathlib import Path

import anyio
import httpx

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.model_folders import install_trellis2
from tests.helpers.servers import LiveServer

# One tiny TRELLIS.2 job: its lowest pipeline type, one step a stage, an STL (no texture bake).
T2 = {"pipeline_type": "512", "formats": ["stl"], "ss_steps": 1, "slat_steps": 1, "seed": 1022908287,
      "target_faces": 100000}
TIMEOUT = 300


def test_openai_style_and_mcp_over_http_run_trellis2(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path, monkeypatch):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(install_trellis2(tmp_path / "models", tiny_trellis2_dir)))
    runner = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu")
    server = LiveServer(create_app(runner))
    image = base64.b64encode(Path(rgba_blob(tmp_path / "in.png")).read_bytes()).decode()
    try:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
            r = c.post("/v1/3d/generations", json={"model": "trellis2-4b", "image": image, "output_format": "stl",
                                                   "timeout": TIMEOUT, **T2})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "trellis2-4b"        # the job's family's, on a server of TRELLIS v1
            [item] = r.json()["data"]
            stl = c.get(item["url"]).content
            assert item["status"] == "completed" and len(stl) == item["size_bytes"] > 84, item
            assert c.get(f"/v1/jobs/{item['job_id']}").json()["model_family"] == "trellis2"
            quality = c.post("/v1/3d/generations", json={"image": image, "quality": "512"})
            message = quality.json()["error"]["message"]
            assert quality.status_code == 400 and "pipeline_type" in message and "1536_cascade" in message, message
            assert "this server samples at one resolution;" not in message

        async def session():
            async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
                async with Client(streamable_http_client(server.url + "/mcp", http_client=http)) as mcp:
                    done = await mcp.call_tool("generate_3d", {"image_base64": [image],
                                                               "settings": {"model_family": "trellis2", **T2}})
                    assert not done.is_error and done.structured_content["state"] == "done", done.content
                    again = await mcp.call_tool("generate_3d", {"image_base64": [image], "model_family": "trellis2",
                                                                "settings": T2})
                    assert not again.is_error, again.content
                    return done.structured_content["job_id"], again.structured_content["job_id"]
        ids = anyio.run(session)
        assert [runner.get(i).family for i in ids] == ["trellis2", "trellis2"]
        assert any(f.endswith(".stl") for f in runner.get(ids[0]).files.values())
    finally:
        server.close()
        runner.shutdown(cancel=True, wait=True, timeout=60)
