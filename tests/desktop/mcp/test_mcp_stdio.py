"""`python -m desktop mcp` over stdio, driven by the `mcp` SDK's own client: a real subprocess with its own job runner
over the tiny random-weight pipeline on the CPU (list the tools, generate with progress, read the GLB, cancel)."""
import base64
import json
import os
import sys
from pathlib import Path

import anyio

from tests.helpers.images import rgba_blob
from tests.helpers.repo import ROOT_DIR
from tests.helpers.rest import FAST, TIMEOUT, load_glb

GLB_FAST = {**FAST, "formats": ["glb"]}
LONG = {**GLB_FAST, "ss_steps": 400, "slat_steps": 400}       # runs for seconds: cancelled while it runs


def test_stdio_server_generates_reports_progress_and_cancels(tiny_pipeline_dir, tmp_path):
    from mcp import Client, StdioServerParameters

    image = rgba_blob(tmp_path / "blob.png")
    outputs = tmp_path / "outputs"
    params = StdioServerParameters(command=sys.executable, cwd=ROOT_DIR, env=dict(os.environ), args=[
        "-m", "desktop", "mcp", "--model", tiny_pipeline_dir, "--outputs", str(outputs), "--device", "cpu"])
    progress, ids = [], {}

    async def note(value, total, message):
        progress.append((value, message))

    async def session():
        async with Client(params, read_timeout_seconds=TIMEOUT) as mcp:
            names = {t.name for t in (await mcp.list_tools()).tools}
            assert names == {"generate_3d", "new_look", "export_job", "job_status", "list_jobs", "cancel_job"}
            result = await mcp.call_tool("generate_3d", {"image_path": [image], "settings": GLB_FAST},
                                         progress_callback=note)
            info = result.structured_content
            assert not result.is_error and info["state"] == "done" and info["kind"] == "generate", result.content
            assert progress and progress[-1][0] == 100 and any("Sampling" in m for _, m in progress), progress
            [link] = [c for c in result.content if c.type == "resource_link" and c.name == "model.glb"]
            [contents] = (await mcp.read_resource(str(link.uri))).contents
            glb = base64.b64decode(contents.blob)
            load_glb(glb)
            path = next(f["path"] for f in info["files"] if f["name"] == "model.glb")
            assert Path(path).read_bytes() == glb and Path(path).parent.parent == outputs.resolve()
            ids["done"] = info["job_id"]

            progress.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: mcp.call_tool("generate_3d", {"image_path": [image], "settings": LONG},
                                                    progress_callback=note))
                with anyio.fail_after(TIMEOUT):
                    while not any("Sampling" in (m or "") for _, m in progress):
                        await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
            newest = (await mcp.call_tool("list_jobs", {"limit": 1})).structured_content["jobs"][0]
            ids["cancelled"] = newest["job_id"]
            with anyio.fail_after(30):
                while newest["state"] not in ("cancelled", "done", "failed"):
                    await anyio.sleep(0.05)
                    newest = (await mcp.call_tool("job_status", {"job_id": newest["job_id"]})).structured_content
            assert newest["state"] == "cancelled", newest
    anyio.run(session)
    # The client closed the connection: the server stopped, its job folders in order.
    folders = {json.loads((d / "settings.json").read_text())["job_id"] if (d / "settings.json").is_file() else d.name: d
               for d in outputs.iterdir() if d.is_dir()}
    assert (folders[ids["done"]] / "model.glb").is_file()
    assert json.loads((folders[ids["cancelled"]] / "error.json").read_text())["state"] == "cancelled"


def test_stdio_server_runs_trellis2_when_asked(tiny_pipeline_dir, tiny_trellis2_dir, tmp_path):
    """A stdio server on the TRELLIS v1 model makes a TRELLIS.2 asset for `settings: {"model_family": "trellis2"}`
    (TRELLIS.2 installed where the app looks); special files as image_path are refused with the reason."""
    from mcp import Client, StdioServerParameters

    from tests.helpers.model_folders import install_trellis2

    image = rgba_blob(tmp_path / "blob.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    env = {**os.environ, "TRELLIS_MODEL_DIR": str(install_trellis2(tmp_path / "models", tiny_trellis2_dir))}
    params = StdioServerParameters(command=sys.executable, cwd=ROOT_DIR, env=env, args=[
        "-m", "desktop", "mcp", "--model", tiny_pipeline_dir, "--outputs", str(tmp_path / "outputs"),
        "--device", "cpu"])
    t2 = {"model_family": "trellis2", "pipeline_type": "512", "formats": ["stl"], "ss_steps": 1, "slat_steps": 1,
          "seed": 1022908287, "target_faces": 100000}

    async def session():
        async with Client(params, read_timeout_seconds=TIMEOUT) as mcp:
            for path, words in [(str(fifo), "not a regular file"), ("/dev/zero", "not a regular file"),
                                (str(tmp_path), "is a folder"), (str(tmp_path / "none.png"), "no such file")]:
                bad = await mcp.call_tool("generate_3d", {"image_path": [path]})
                assert bad.is_error and words in bad.content[0].text, (path, bad.content)
            result = await mcp.call_tool("generate_3d", {"image_path": [image], "settings": t2})
            info = result.structured_content
            assert not result.is_error and info["state"] == "done", result.content
            assert [f["url"] for f in info["files"]] == [None] * len(info["files"])      # stdio: no URL to give
            settings = json.loads(Path(next(f["path"] for f in info["files"] if f["name"] == "settings.json"))
                                  .read_text())
            assert settings["family"] == "trellis2", settings
            [stl] = [c for c in result.content if c.type == "resource_link" and c.name.endswith(".stl")]
            [contents] = (await mcp.read_resource(str(stl.uri))).contents
            assert contents.mime_type == "model/stl" and len(base64.b64decode(contents.blob)) > 84
    anyio.run(session)
