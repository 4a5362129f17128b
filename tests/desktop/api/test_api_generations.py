"""POST /v1/3d/generations (OpenAI-style) and /mcp (MCP over streamable HTTP) on a live REST server with a token, over
the tiny random-weight pipeline on the CPU: plain HTTP as LocalAI's and Lemonade's clients send it, and the `mcp`
SDK's own client with its own HTTP transport."""
import base64
import time

import anyio
import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.rest import FAST, TIMEOUT, b64, form, load_glb, wait_job
from tests.helpers.servers import LiveServer

TOKEN = "generations-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GLB_FAST = {**FAST, "formats": ["glb"]}
# A job that runs for seconds (hundreds of tiny steps): long enough to be cancelled while it runs.
LONG = {**GLB_FAST, "ss_steps": 400, "slat_steps": 400}
TOOLS = {"generate_3d", "new_look", "export_job", "job_status", "list_jobs", "cancel_job"}


@pytest.fixture(scope="module")
def live(runner):
    server = LiveServer(create_app(runner, token=TOKEN))
    yield server
    server.close()


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=TIMEOUT, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    return open(rgba_blob(tmp_path_factory.mktemp("img") / "blob.png"), "rb").read()


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"], error
    return error


# ------------------------------------------------------------------------------------------ /v1/3d/generations

def test_sync_json_answers_the_glb_as_b64_json(client, blob):
    r = client.post("/v1/3d/generations", json={"model": "trellis", "image": b64(blob, prefix=True),
                                                "response_format": "b64_json", **GLB_FAST})
    assert r.status_code == 200, r.text
    gen = r.json()
    assert gen["object"] == "3d.generation" and gen["status"] == "completed" and gen["output_format"] == "glb"
    assert gen["model"] == "trellis-image-large"             # the family's public name, not the server's folder
    [item] = gen["data"]
    assert item["status"] == "completed" and item["seed"] == 1 and item["content_type"] == "model/gltf-binary"
    glb = base64.b64decode(item["b64_json"])
    assert len(glb) == item["size_bytes"] and "url" not in item
    load_glb(glb)
    assert client.get(f"/v1/jobs/{item['job_id']}").json()["state"] == "done"      # a /v1 job like any other


def test_an_obj_as_b64_json_brings_its_material_and_texture(client, blob):
    r = client.post("/v1/3d/generations", json={"image": b64(blob), "response_format": "b64_json",
                                                "output_format": "obj", **GLB_FAST, "formats": ["obj"]})
    assert r.status_code == 200, r.text
    [item] = r.json()["data"]
    obj = base64.b64decode(item["b64_json"]).decode()
    files = {c["name"]: base64.b64decode(c["b64_json"]) for c in item["companions"]}
    [library] = [line.split()[1] for line in obj.splitlines() if line.startswith("mtllib")]
    textures = [line.split()[-1] for line in files[library].decode().splitlines() if line.startswith("map_")]
    assert textures and set(textures) <= set(files), (textures, sorted(files))
    assert all(files[t][:8] == b"\x89PNG\r\n\x1a\n" for t in textures)
    assert {c["content_type"] for c in item["companions"]} == {"model/mtl", "image/png"}


def test_lemonade_request_answers_the_glb_itself(client, blob):
    # Lemonade's request: JSON, the file format as response_format, the mesh itself as the answer.
    r = client.post("/v1/3d/generations", json={"model": "trellis-image-large", "image": b64(blob),
                                                "response_format": "glb", **GLB_FAST, "seed": 42})
    assert r.status_code == 200 and r.headers["content-type"] == "model/gltf-binary", r.text[:300]
    assert client.get(f"/v1/jobs/{r.headers['x-job-id']}").json()["seed"] == 42
    load_glb(r.content)


def test_multipart_past_its_timeout_answers_the_job_ids_then_urls(live, client, blob):
    r = client.post("/v1/3d/generations", files=[("image", ("blob.png", blob, "image/png"))],
                    data=form(**GLB_FAST, n=2, timeout=0))              # waits for nothing: 202 at once
    assert r.status_code == 202, r.text
    gen = r.json()
    assert r.headers["location"] == f"/v1/3d/generations/{gen['id']}" and len(gen["data"]) == 2
    assert gen["status"] in ("queued", "in_progress") and gen["id"] == "-".join(d["job_id"] for d in gen["data"])
    deadline = time.time() + TIMEOUT
    while gen["status"] != "completed":
        assert gen["status"] in ("queued", "in_progress") and time.time() < deadline, gen
        time.sleep(0.1)
        gen = client.get(r.headers["location"]).json()
    assert [d["seed"] for d in gen["data"]] == [1, 2]
    url = gen["data"][1]["url"]
    assert url.startswith(live.url + "/v1/jobs/") and url.endswith("/model.glb")
    assert httpx.get(url).status_code == 401                              # the download needs the token too
    load_glb(client.get(url).content)
    again = client.get(r.headers["location"], params={"response_format": "b64_json"}).json()
    assert base64.b64decode(again["data"][1]["b64_json"]) == client.get(url).content


def test_a_prompts_model_is_its_text_models_name_never_a_folder_of_the_server(tiny_pipeline_dir, runner, tmp_path):
    from desktop.api.generation_answer import model_name
    from desktop.jobs import Job
    from desktop.settings import GenerationSettings

    job = Job(id="t" * 32, inputs=[], settings=GenerationSettings(text_model_size="base"), kind="text", prompt="a cup")
    assert model_name(job, runner) == "microsoft/TRELLIS-text-base"
    local = JobRunner(tiny_pipeline_dir, tmp_path / "out", device="cpu", text_model=str(tmp_path / "my-text-model"))
    try:
        assert model_name(job, local) == "my-text-model"
    finally:
        local.shutdown(cancel=True, wait=True, timeout=30)


def test_bad_requests_are_openai_errors_and_queue_nothing(live, client, runner, blob):
    before = len(runner.list())
    error = error_of(httpx.post(live.url + "/v1/3d/generations", json={"image": b64(blob)}), 401)
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert error_of(httpx.get(live.url + "/v1/3d/generations/" + "0" * 32), 401)["code"] == "invalid_api_key"
    for body, param, words in [
            ({"image": b64(blob), "quality": "1024"}, "quality", "preset"),
            ({"image": b64(blob), "n": 9}, "n", "less than or equal to 4"),
            ({"image": b64(blob), "response_format": "glb", "n": 2}, "n", "n must be 1"),
            ({"image": b64(blob), "response_format": "glb", "async": True}, "response_format", "holds no file"),
            ({"image": b64(blob), "texture_size": "big"}, "texture_size", "integer"),
            ({"image": "https://example.com/chair.png"}, "image", "fetches no URLs"),
            ({"image": "not base64 at all!"}, "image", "not valid base64"),
            ({"image": b64(b"just some text")}, "image", "not an image file"),
            ({"image": b64(blob), "model": "dall-e-3"}, "model", "trellis2-4b"),
            ({"image": b64(blob), "model_family": "trellis3"}, "model_family", "trellis2"),
            ({"image": b64(blob), "model": "trellis2-4b", "model_family": "trellis"}, "model_family", "give one"),
            ({"prompt": "a chair", "model": "trellis2-4b"}, "model", "TRELLIS-text"),
            ({"image": b64(blob), "prompt": "a chair"}, None, "not both"),
            ({}, None, "give a `prompt`")]:
        error = error_of(client.post("/v1/3d/generations", json=body), 400)
        assert error["param"] == param and words in error["message"] and error["type"] == "invalid_request_error", \
            (body, error)
    assert error_of(client.post("/v1/3d/generations", content=b"x", headers={"content-type": "text/plain"}),
                    415)["code"] == "unsupported_media_type"
    assert error_of(client.get("/v1/3d/generations/" + "0" * 32), 404)["type"] == "invalid_request_error"
    assert error_of(client.get("/3d/generations/" + "0" * 32), 404)["type"] == "invalid_request_error"
    # A multipart file that is no image names its field too.
    error = error_of(client.post("/v1/3d/generations", files=[("image", ("x.png", b"text", "image/png"))]), 400)
    assert error["param"] == "image" and "not an image" in error["message"], error
    assert len(runner.list()) == before


def test_localai_path_without_v1_and_the_seeds_of_queued_items(client, runner, blob):
    # LocalAI documents POST /3d/generations (no /v1): the same endpoint; a queued item says the seed it was given.
    r = client.post("/3d/generations", json={"image": b64(blob), "n": 2, "async": True, **LONG, "seed": 4})
    assert r.status_code == 202, r.text
    gen = r.json()
    assert [d["seed"] for d in gen["data"]] == [4, 5] and gen["data"][1]["status"] == "queued", gen
    assert client.get(f"/3d/generations/{gen['id']}").json()["id"] == gen["id"]
    for item in gen["data"]:
        client.post(f"/v1/jobs/{item['job_id']}/cancel")
    for item in gen["data"]:
        assert wait_job(client, item["job_id"])["state"] == "cancelled"


# ------------------------------------------------------------------------------------------ /mcp

def test_mcp_over_http_with_the_sdk_client(live, runner, blob):
    import httpx2
    import jsonschema
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    assert httpx.post(live.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401

    async def session():
        async with httpx2.AsyncClient(headers=AUTH, timeout=TIMEOUT) as http:
            async with Client(streamable_http_client(live.url + "/mcp", http_client=http)) as mcp:
                await use(mcp)

    async def use(mcp):
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():          # every schema is valid JSON Schema and says what each argument is
            jsonschema.Draft202012Validator.check_schema(tool.input_schema)
            if tool.output_schema is not None:
                jsonschema.Draft202012Validator.check_schema(tool.output_schema)
            assert "\n " not in tool.description and "  " not in tool.description, tool.description   # no indentation
            assert tool.description and all(p.get("description") for name, p in tool.input_schema["properties"]
                                             .items() if name not in ("job_id",)), tool.name

        progress = []

        async def note(value, total, message):
            progress.append((value, message))
        result = await mcp.call_tool("generate_3d", {"image_base64": [b64(blob)], "settings": GLB_FAST},
                                     progress_callback=note)
        info = result.structured_content
        assert not result.is_error and info["state"] == "done", result.content
        values = [v for v, _ in progress]
        assert values and values[-1] == 100 and values == sorted(values) and len(set(values)) > 3, progress
        [link] = [c for c in result.content if c.type == "resource_link" and c.name == "model.glb"]
        [contents] = (await mcp.read_resource(str(link.uri))).contents
        load_glb(base64.b64decode(contents.blob))
        assert contents.mime_type == link.mime_type == "model/gltf-binary"
        url = next(f["url"] for f in info["files"] if f["name"] == "model.glb")        # absolute: this server's
        assert url.startswith(live.url + "/v1/jobs/") and httpx.get(url, headers=AUTH).content == \
            base64.b64decode(contents.blob)
        [png] = [c for c in result.content if c.type == "resource_link" and c.name.endswith(".png")][:1]
        assert (await mcp.read_resource(str(png.uri))).contents[0].mime_type == "image/png"

        exported = await mcp.call_tool("export_job", {"job_id": info["job_id"], "formats": ["stl"]})
        assert exported.structured_content["state"] == "done", exported.content
        assert [c.name for c in exported.content if c.type == "resource_link" and c.name.endswith(".stl")]

        # A new look queued without waiting, then cancelled with cancel_job.
        glb = base64.b64decode(contents.blob)
        look = await mcp.call_tool("new_look", {"mesh_base64": b64(glb), "mesh_name": "chair.glb",
                                                "image_base64": [b64(blob)], "settings": LONG, "wait": False})
        assert look.structured_content["kind"] == "variant", look.content
        stopped = await mcp.call_tool("cancel_job", {"job_id": look.structured_content["job_id"]})
        assert stopped.structured_content["state"] == "cancelled" and not stopped.is_error, stopped.content

        # A call the client cancels cancels its job.
        progress.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: mcp.call_tool("generate_3d", {"image_base64": [b64(blob)], "settings": LONG},
                                                progress_callback=note))
            with anyio.fail_after(TIMEOUT):
                while not any("Sampling" in (m or "") for _, m in progress):
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        newest = (await mcp.call_tool("list_jobs", {"limit": 1})).structured_content["jobs"][0]
        with anyio.fail_after(30):
            while newest["state"] not in ("cancelled", "done", "failed"):
                await anyio.sleep(0.05)
                newest = (await mcp.call_tool("job_status", {"job_id": newest["job_id"]})).structured_content
        assert newest["state"] == "cancelled" and newest["kind"] == "generate", newest

        bad = await mcp.call_tool("generate_3d", {"image_path": ["/etc/hostname"]})
        assert bad.is_error and "image_base64" in bad.content[0].text
        missing = await mcp.call_tool("job_status", {"job_id": "nope"})
        assert missing.is_error and "no job" in missing.content[0].text
    anyio.run(session)
