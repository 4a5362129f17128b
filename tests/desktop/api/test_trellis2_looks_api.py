"""TRELLIS.2's new look (PBR materials on the user's own mesh) through a live REST server on the tiny random-weight
TRELLIS.2 folder (CPU, a 32^3 grid): POST /v1/jobs with `mesh` + one image + `model_family: "trellis2"`, the MCP tool
`new_look` with model_family (the `mcp` SDK's own client over streamable HTTP) and the Blender add-on's Texture
Selected fields (through its client) each give a GLB with the input's positions, faces and UVs and PBR maps; a prompt
with TRELLIS.2 is refused in words (422, an error result)."""
import base64

import anyio
import httpx
import numpy as np
import pytest
import trimesh

from desktop.api import create_app
from desktop.jobs import JobRunner
from desktop.jobs.trellis2_looks import RESOLUTION_ENV
from tests.helpers.gltf import glb_json
from tests.helpers.images import rgba_blob
from tests.helpers.looks import glb_attribute, uv_sphere
from tests.helpers.rest import TIMEOUT, b64, form, wait_job
from tests.helpers.servers import LiveServer

TOKEN = "looks-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHEAP = {"seed": 3, "slat_steps": 1, "texture_size": 64, "formats": ["glb"]}


@pytest.fixture(scope="module")
def runner(tiny_trellis2_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv(RESOLUTION_ENV, "32")
    r = JobRunner(tiny_trellis2_dir, tmp_path_factory.mktemp("looks_out"), device="cpu")
    yield r
    r.shutdown(cancel=True, wait=True, timeout=30)
    mp.undo()


@pytest.fixture(scope="module")
def live(runner):
    server = LiveServer(create_app(runner, token=TOKEN))
    yield server
    server.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("looks_in")
    v, f, uv = uv_sphere()
    trimesh.Trimesh(v, f, visual=trimesh.visual.TextureVisuals(uv=uv), process=False).export(tmp / "sphere.glb")
    return {"v": v, "f": f, "uv": uv, "glb": (tmp / "sphere.glb").read_bytes(),
            "image": open(rgba_blob(tmp / "look.png"), "rb").read(), "tmp": tmp}


def check_look(path, inputs) -> None:
    """The file keeps the input's positions, faces and UVs (as float32 GLB rows) and has both PBR textures."""
    assert np.array_equal(glb_attribute(path, "POSITION"), inputs["v"].astype(np.float32))
    assert np.array_equal(glb_attribute(path, "indices").reshape(-1, 3).astype(np.int64), inputs["f"])
    assert np.array_equal(glb_attribute(path, "TEXCOORD_0"),
                          np.stack([inputs["uv"][:, 0], 1 - inputs["uv"][:, 1]], -1).astype(np.float32))
    pbr = glb_json(path)["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr


def test_rest_makes_a_trellis2_look_on_the_uploaded_mesh(live, inputs):
    with httpx.Client(base_url=live.url, timeout=TIMEOUT, headers=AUTH) as client:
        r = client.post("/v1/jobs", files=[("mesh", ("sphere.glb", inputs["glb"], "model/gltf-binary")),
                                           ("images", ("look.png", inputs["image"], "image/png"))],
                        data=form(model_family="trellis2", **CHEAP))
        assert r.status_code == 202, r.text
        assert r.json()["kind"] == "variant" and r.json()["model_family"] == "trellis2"
        info = wait_job(client, r.json()["id"])
        assert info["state"] == "done", info
        path = inputs["tmp"] / "rest.glb"
        path.write_bytes(client.get(f"/v1/jobs/{info['id']}/files/model.glb").content)
        check_look(path, inputs)

        refused = client.post("/v1/jobs", json={"mesh": b64(inputs["glb"]), "mesh_name": "sphere.glb",
                                                "prompt": "a red chair", "model_family": "trellis2"})
        assert refused.status_code == 422 and "takes an image, not a prompt" in refused.text, refused.text


def test_mcp_new_look_with_model_family_trellis2(live, inputs):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    found = {}

    async def session():
        async with httpx2.AsyncClient(headers=AUTH, timeout=TIMEOUT) as http:
            async with Client(streamable_http_client(live.url + "/mcp", http_client=http)) as mcp:
                look = await mcp.call_tool("new_look", {"mesh_base64": b64(inputs["glb"]), "mesh_name": "sphere.glb",
                                                        "image_base64": [b64(inputs["image"])],
                                                        "model_family": "trellis2", "settings": CHEAP})
                assert not look.is_error and look.structured_content["state"] == "done", look.content
                [link] = [c for c in look.content if c.type == "resource_link" and c.name == "model.glb"]
                [contents] = (await mcp.read_resource(str(link.uri))).contents
                found["glb"] = base64.b64decode(contents.blob)
                bad = await mcp.call_tool("new_look", {"mesh_base64": b64(inputs["glb"]), "prompt": "red",
                                                       "model_family": "trellis2"})
                assert bad.is_error and "takes an image, not a prompt" in bad.content[0].text
    anyio.run(session)
    path = inputs["tmp"] / "mcp.glb"
    path.write_bytes(found["glb"])
    check_look(path, inputs)


def test_the_blender_add_ons_texture_selected_fields_make_a_trellis2_look(live, inputs, tmp_path):
    # What the add-on's Texture Selected sends with the panel's Model at TRELLIS.2 and an image (its client, without
    # Blender): the mesh as a GLB, the image, keep_mesh and the model fields.
    from extensions.blender.trellis_desktop_blender import client

    fields = {"keep_mesh": "true", "mesh_name": "sphere.glb", "formats": "glb", "texture_size": "64",
              "slat_steps": "1", **client.model_fields("TRELLIS2", "SERVER")}
    assert fields["model_family"] == "trellis2"
    files = [("mesh", "sphere.glb", inputs["glb"], "model/gltf-binary"),
             ("images", "look.png", inputs["image"], "image/png")]
    task = client.Task(client.Client(live.url + "/", token=TOKEN), fields, files, "sphere", poll_s=0.05,
                       temp_root=str(tmp_path)).start()
    task.thread.join(TIMEOUT)
    snap = task.snapshot()
    assert snap["finished"] and snap["state"] == "done", snap
    check_look(snap["result_path"], inputs)
    task.cleanup()


def test_a_trellis2_look_run_again_is_a_trellis2_look(live, runner, inputs):
    with httpx.Client(base_url=live.url, timeout=TIMEOUT, headers=AUTH) as client:
        r = client.post("/v1/jobs", files=[("mesh", ("sphere.glb", inputs["glb"], "model/gltf-binary")),
                                           ("images", ("look.png", inputs["image"], "image/png"))],
                        data=form(model_family="trellis2", **CHEAP))
        assert wait_job(client, r.json()["id"])["state"] == "done"
        again = runner.rerun(r.json()["id"])
        assert again.kind == "variant" and again.family == "trellis2"
        info = wait_job(client, again.id)
        assert info["state"] == "done" and info["model_family"] == "trellis2", info
        path = inputs["tmp"] / "again.glb"
        path.write_bytes(client.get(f"/v1/jobs/{again.id}/files/model.glb").content)
        check_look(path, inputs)
