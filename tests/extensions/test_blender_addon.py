"""The Blender add-on (extensions/blender/), against a live API server on the tiny random-weight pipelines (image
and text) on the CPU.

Without Blender: its HTTP client (client.py) talks to the live server (a real job, cancel, the messages of a closed
port, a wrong token and refused settings), and its mesh matching (meshmatch.py) pairs a glTF-style result with the
object's loops. With Blender (`blender` on PATH; skipped, with the reason, without it): the built zip is installed
and enabled in a headless Blender, whose driver script (blender_addon_driver.py) uses the add-on's operators as the
panel's buttons do and writes what happened to a JSON file read here. TRELLIS_DOCS_SHOTS=1 also renders the
generated model to docs/blender_result.png (Cycles on the CPU)."""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from desktop.api import create_app
from desktop.api.server import DEFAULT_PORT
from desktop.jobs import JobRunner
from tests.helpers.images import rgba_blob
from tests.helpers.repo import ROOT
from tests.helpers.rest import FAST, wait_job
from tests.helpers.servers import LiveServer

ADDON_DIR = ROOT / "extensions" / "blender"
from extensions.blender.trellis_desktop_blender import client, meshmatch   # the add-on's bpy-free modules

TOKEN = "blender-addon-test-token"
FAST_FIELDS = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in FAST.items()}


@pytest.fixture(scope="module")
def runner(tiny_text_models_dir, tmp_path_factory):
    r = JobRunner(os.path.join(tiny_text_models_dir, "TRELLIS-image-large"), tmp_path_factory.mktemp("addon_out"),
                  device="cpu", text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    yield r
    r.shutdown(cancel=True, wait=True, timeout=30)


@pytest.fixture(scope="module")
def live(runner):
    server = LiveServer(create_app(runner))
    yield server
    server.close()


@pytest.fixture(scope="module")
def live_token(runner):
    server = LiveServer(create_app(runner, token=TOKEN))
    yield server
    server.close()


@pytest.fixture(scope="module")
def closed_url():
    """An address where nothing listens (a port taken from the system, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return rgba_blob(tmp_path_factory.mktemp("addon_img") / "blob.png")


# ------------------------------------------------------------------------------------ the client, without Blender

def test_the_client_runs_a_job_to_its_glb_and_cleans_up(live, image, tmp_path):
    fields = {**FAST_FIELDS, "formats": "glb", "target_faces": "400"}
    data = open(image, "rb").read()
    task = client.Task(client.Client(live.url + "/"), fields, [("images", "blob.png", data, "image/png")], "blob",
                       poll_s=0.05, temp_root=str(tmp_path)).start()
    task.thread.join(120)
    snap = task.snapshot()
    assert snap["finished"] and snap["state"] == "done", snap
    assert open(snap["result_path"], "rb").read(4) == b"glTF"
    job = httpx.get(f"{live.url}/v1/jobs/{snap['job_id']}").json()
    assert job["settings"]["target_faces"] == 400 and job["settings"]["formats"] == ["glb"]
    task.cleanup()
    assert list(tmp_path.iterdir()) == []


def report_of(live, job_id: str) -> dict:
    """The job's export record (timings.json's export_bake_stages; export_shape_stages without a texture)."""
    timings = httpx.get(f"{live.url}/v1/jobs/{job_id}/files/timings.json").json()
    return timings.get("export_bake_stages") or timings["export_shape_stages"]


def face_sizes(obj_path) -> list:
    return [len(line.split()) - 1 for line in open(obj_path, encoding="utf-8") if line.startswith("f ")]


@pytest.mark.slow
def test_the_clients_quads_choice_brings_the_obj_with_its_material(live, image, tmp_path):
    """Topology "Quads": the job's topology setting is quads, and the result comes as the OBJ (its quads as the
    export counted them) with the MTL and the image it names, in one folder."""
    assert client.topology_fields("TRIANGLES") == {}
    with pytest.raises(client.ApiProblem):
        client.topology_fields("HEXES")
    assert client.mtl_names("newmtl a\nKd 1 1 1\nmap_Kd model.png\nnorm -bm 1 ../x/model_normal.png\n") == \
        ["model.png", "model_normal.png"]
    fields = {**FAST_FIELDS, "target_faces": "300", **client.topology_fields("QUADS")}
    data = open(image, "rb").read()
    task = client.Task(client.Client(live.url), fields, [("images", "blob.png", data, "image/png")], "quads",
                       poll_s=0.05, temp_root=str(tmp_path)).start()
    task.thread.join(120)
    snap = task.snapshot()
    assert snap["finished"] and snap["state"] == "done", snap
    folder = os.path.dirname(snap["result_path"])
    assert sorted(os.listdir(folder)) == ["model.mtl", "model.obj", "model.png"]
    sizes = face_sizes(snap["result_path"])
    stages = report_of(live, snap["job_id"])
    assert stages["topology"] == "quads" and stages["quads"]["quad_share"] >= 0.95
    assert sum(n == 4 for n in sizes) == stages["textured_quads"] > 0
    job = httpx.get(f"{live.url}/v1/jobs/{snap['job_id']}").json()
    assert job["settings"]["topology"] == "quads" and job["settings"]["formats"] == ["obj"]
    task.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_the_client_cancels_a_running_job(live, image):
    data = open(image, "rb").read()
    task = client.Task(client.Client(live.url), {**FAST_FIELDS, "ss_steps": 500, "slat_steps": 500},
                       [("images", "blob.png", data, "image/png")], "slow", poll_s=0.05).start()
    deadline = time.time() + 60
    while task.snapshot()["job_id"] is None:
        assert time.time() < deadline and task.thread.is_alive(), task.snapshot()
        time.sleep(0.02)
    task.cancel()
    task.thread.join(120)
    snap = task.snapshot()
    assert snap["state"] == "cancelled" and snap["error_kind"] == "cancelled", snap
    with httpx.Client(base_url=live.url) as c:
        assert wait_job(c, snap["job_id"])["state"] == "cancelled"


def pbr_glb(path) -> str:
    """A GLB as a TRELLIS.2 job writes it (the export's PBR bake of an O-Voxel: base colour, metallic-roughness and
    normal maps), from a small voxelised sphere with known metal and roughness."""
    from tests.helpers.ovoxels import voxel_sphere
    from trellis.export.pbr import ovoxel_to_glb

    ovoxel_to_glb(voxel_sphere(res=16), path, target_faces=300, texture_size=32)
    return str(path)


def test_the_clients_model_choice_reaches_the_server(live, image, monkeypatch, tmp_path):
    """The panel's Model and Pipeline as form fields, from the families the server lists (GET /v1/health's
    family_info); TRELLIS.2 asked of this TRELLIS v1 server (TRELLIS.2 not installed) is refused with what to do,
    before any job."""
    monkeypatch.setenv("TRELLIS_MODEL_DIR", str(tmp_path / "models"))
    choices = client.Client(live.url).choices()
    families = choices["family_info"]
    assert choices["default"] and [(f["id"], f["installed"]) for f in families] == [("trellis", True),
                                                                                   ("trellis2", False)]
    assert [f["id"] for f in client.KNOWN_FAMILIES] == [f["id"] for f in families]
    assert client.model_fields("SERVER", "SERVER", families) == {}
    assert client.model_fields("TRELLIS2", "512", families) == {"model_family": "trellis2", "pipeline_type": "512"}
    assert client.model_fields("TRELLIS", "512", families) == {"model_family": "trellis"}       # v1 has one path
    assert client.model_fields("SERVER", "512", families) == {"pipeline_type": "512"}           # the server's rule
    # a family the server adds is offered as it describes it, with its own pipeline types
    more = [*families, {"id": "trellis3", "words": "TRELLIS 3", "pipeline_types": ["2048"]}]
    assert client.model_fields("TRELLIS3", "2048", more) == {"model_family": "trellis3", "pipeline_type": "2048"}
    assert client.model_fields("TRELLIS2", "2048", more) == {"model_family": "trellis2"}
    data = open(image, "rb").read()
    with pytest.raises(client.ApiProblem) as refused:
        client.Client(live.url).submit({**FAST_FIELDS, **client.model_fields("TRELLIS2", "512")},
                                       [("images", "blob.png", data, "image/png")])
    assert refused.value.kind == "invalid" and "This server runs TRELLIS v1" in refused.value.message
    assert "--trellis2" in refused.value.message


def test_the_client_says_what_went_wrong(live, live_token, closed_url):
    with pytest.raises(client.ApiProblem) as down:
        client.Client(closed_url).presets()
    assert down.value.kind == "down" and "not running" in down.value.message
    assert "python -m desktop api" in down.value.message and "run.sh" in down.value.message
    for token, words in (("", "wants a token"), ("wrong-token", "refused the token")):
        with pytest.raises(client.ApiProblem) as auth:
            client.Client(live_token.url, token).presets()
        assert auth.value.kind == "auth" and auth.value.status == 401 and words in auth.value.message
    assert "fast" in client.Client(live_token.url, TOKEN).presets()["presets"]
    with pytest.raises(client.ApiProblem) as invalid:
        client.Client(live.url).submit({"prompt": "a chair", "texture_size": "50"}, [])
    assert invalid.value.kind == "invalid" and "texture_size" in invalid.value.message
    with pytest.raises(client.ApiProblem) as not_api:
        client.Client(live.url).request("GET", "/v2/presets")
    assert not_api.value.kind == "not_api" and "7960" in not_api.value.message
    with pytest.raises(client.ApiProblem):
        client.Client("ftp://example.org")
    with pytest.raises(client.ApiProblem):
        client.parse_fields("seed=1 ss_steps")
    assert client.parse_fields("seed=1, ss_steps=20;formats=glb") == {"seed": "1", "ss_steps": "20", "formats": "glb"}
    assert client.DEFAULT_PORT == DEFAULT_PORT


# ------------------------------------------------------------------------------ the mesh matching, without Blender

def cube_quads():
    """A unit cube as Blender keeps it: 8 vertices, 6 quads, 24 loops."""
    verts = [(x, y, z) for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return verts, [(q, tuple(range(4 * i, 4 * i + 4))) for i, q in enumerate(quads)]


def gltf_like(verts, polygons, order):
    """The cube as the glTF exporter writes it: a vertex per (face, corner), quads split in two, faces in `order`;
    each corner's UV names its face and corner so that the copy can be checked."""
    positions, tris, uvs = [], [], []
    for f in order:
        quad, _ = polygons[f]
        base = len(positions)
        positions += [verts[v] for v in quad]
        corner_uv = [(f / 10 + k / 100, k / 10) for k in range(4)]
        for a, b, c in ((0, 1, 2), (0, 2, 3)):
            tris.append(((base + a, base + b, base + c), (len(uvs), len(uvs) + 1, len(uvs) + 2)))
            uvs += [corner_uv[a], corner_uv[b], corner_uv[c]]
    return positions, tris, uvs


def test_the_results_uvs_go_to_the_objects_loops_whatever_the_numbering():
    verts, polygons = cube_quads()
    positions, tris, uvs = gltf_like(verts, polygons, order=[3, 1, 5, 0, 2, 4])
    got = meshmatch.loop_uvs(verts, polygons, positions, tris, uvs)
    assert got == [(f / 10 + k / 100, k / 10) for f in range(6) for k in range(4)]


def test_a_result_that_is_not_the_objects_mesh_is_refused():
    verts, polygons = cube_quads()
    positions, tris, uvs = gltf_like(verts, polygons, order=range(6))
    with pytest.raises(meshmatch.MeshMismatch, match="triangles"):
        meshmatch.loop_uvs(verts, polygons, positions, tris[:-1], uvs)
    moved = [(x + 0.25, y, z) for x, y, z in positions]
    with pytest.raises(meshmatch.MeshMismatch, match="not a vertex"):
        meshmatch.loop_uvs(verts, polygons, moved, tris, uvs)
    crossing = [((0, 4, 9), loops) for _, loops in tris]     # corners of three different faces
    with pytest.raises(meshmatch.MeshMismatch, match="not part of any polygon"):
        meshmatch.loop_uvs(verts, polygons, positions, crossing, uvs)


# -------------------------------------------------------------------------------------------- in Blender

def blender_env(tmp: str) -> dict:
    """Blender's Python with the system's folders first (it takes its home from the first python3.x on PATH) and
    its user folders inside the test's temporary folder (the add-on is installed there, not in the user's)."""
    blender = shutil.which("blender")
    env = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL")}
    env.update(PATH=os.pathsep.join([os.path.dirname(blender), "/usr/bin", "/bin"]), HOME=tmp, TMPDIR=tmp,
               BLENDER_USER_CONFIG=os.path.join(tmp, "config"), BLENDER_USER_SCRIPTS=os.path.join(tmp, "scripts"))
    return env


@pytest.fixture(scope="module")
def blender_run(live, live_token, closed_url, image, tmp_path_factory):
    blender = shutil.which("blender")
    if blender is None:
        pytest.skip("Blender is not installed (`./run.sh test` installs Debian's blender package when run as root)")
    spec = importlib.util.spec_from_file_location("trellis_blender_build", ADDON_DIR / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    tmp = tmp_path_factory.mktemp("blender")
    zip_path = build.build(tmp / "trellis_desktop_blender.zip")
    shots = os.environ.get("TRELLIS_DOCS_SHOTS") == "1"
    config = {"zip": str(zip_path), "url": live.url, "token_url": live_token.url, "token": TOKEN,
              "closed_url": closed_url, "image": image, "fast": FAST_FIELDS, "out": str(tmp / "found.json"),
              "tmpdir": str(tmp / "home"), "render": str(ROOT / "docs" / "blender_result.png") if shots else None,
              "pbr_glb": pbr_glb(tmp / "trellis2.glb")}
    (tmp / "home").mkdir()
    (tmp / "config.json").write_text(json.dumps(config))
    script = os.path.join(os.path.dirname(__file__), "blender_addon_driver.py")
    proc = subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python", script, "--",
                           str(tmp / "config.json")], capture_output=True, text=True, timeout=1200,
                          env=blender_env(config["tmpdir"]))
    if proc.returncode != 0 or not os.path.isfile(config["out"]):
        pytest.fail(f"Blender exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    found = json.loads(open(config["out"], encoding="utf-8").read())
    if os.environ.get("TRELLIS_KEEP_FOUND"):
        shutil.copy(config["out"], os.environ["TRELLIS_KEEP_FOUND"])
    yield found
    shutil.rmtree(tmp, ignore_errors=True)


def part(found: dict, name: str) -> dict:
    value = found[name]
    assert "error" not in value, f"{name} failed in Blender:\n{value['error']}"
    return value


@pytest.mark.slow
def test_the_zip_installs_and_enables_as_a_legacy_add_on(blender_run):
    got = part(blender_run, "install")
    assert got["enabled"] and got["panel"] and got["default_url"] == "http://127.0.0.1:7960"
    assert got["operators"] == ["cancel", "generate", "refresh_presets", "texture_selected"]
    assert got["installed_at"].endswith(os.path.join("scripts", "addons", "trellis_desktop_blender"))


@pytest.mark.slow
def test_disabling_the_add_on_removes_its_panel_operators_settings_and_timer(blender_run):
    assert part(blender_run, "disable") == {"panel": False, "operator": False, "scene_settings": False,
                                            "timer": False}


@pytest.mark.slow
def test_the_presets_come_from_the_server(blender_run):
    got = part(blender_run, "presets")
    assert {"SERVER", "fast", "balanced", "high", "low-vram"} <= set(got["items"]) and got["last"][0] == "INFO"


@pytest.mark.slow
def test_a_model_from_an_image_lands_at_the_cursor_with_its_texture(blender_run, live):
    got = part(blender_run, "generate_image")
    assert got["last"][0] == "INFO", got["last"]
    meshes = [o for o in got["new"] if o["type"] == "MESH"]
    assert len(meshes) == 1 and meshes[0]["name"].startswith("Trellis blob"), got["new"]
    assert meshes[0]["location"] == pytest.approx([1.0, 2.0, 3.0])
    assert meshes[0]["materials"][0]["images"] == [[64, 64]] and all(meshes[0]["materials"][0]["packed"])
    fractions = [s["fraction"] for s in got["seen"]]
    # a tiny job can finish between two polls: every running state seen shows its percentage
    running = [s for s in got["seen"] if s["state"] == "running"]
    assert fractions == sorted(fractions) and all("%" in s["message"] for s in running), got["seen"]
    job = httpx.get(f"{live.url}/v1/jobs/{got['job']['job_id']}").json()
    assert job["state"] == "done" and job["settings"]["target_faces"] == 500 and job["settings"]["texture_size"] == 64
    assert job["settings"]["ss_steps"] == FAST["ss_steps"]               # the "More Settings" field reached it
    assert job["settings"]["preset"] == "fast"


@pytest.mark.slow
def test_a_model_from_a_prompt(blender_run):
    got = part(blender_run, "generate_prompt")
    meshes = [o for o in got["new"] if o["type"] == "MESH"]
    assert got["last"][0] == "INFO" and len(meshes) == 1 and meshes[0]["materials"][0]["images"] == [[64, 64]]


@pytest.mark.slow
def test_the_panels_quads_choice_adds_a_quad_model(blender_run, live):
    """Topology "Quads" on the panel: the job asks quads and the object added at the cursor is the OBJ's, with every
    quad the server wrote (textured: a UV seam through a quad's diagonal leaves it two triangles in the file), its UVs
    and its packed texture; without a texture (geometry_only) at least 95 % of its faces are quads."""
    got = part(blender_run, "generate_quads")
    assert got["fields"]["topology"] == "quads" and got["fields"]["formats"] == "obj", got["fields"]
    assert got["last"][0] == "INFO" and "faces quads" in got["last"][1], got["last"]
    (mesh,) = [o for o in got["new"] if o["type"] == "MESH"]
    assert mesh["name"].startswith("Trellis blob") and mesh["location"] == pytest.approx([0.0, 6.0, 0.0])
    stages = report_of(live, got["job"]["job_id"])
    assert mesh["quads"] == stages["textured_quads"] > 0 and stages["quads"]["quad_share"] >= 0.95, (mesh, stages)
    assert mesh["uv_layers"] and mesh["materials"][0]["images"] == [[64, 64]] and all(mesh["materials"][0]["packed"])
    job = httpx.get(f"{live.url}/v1/jobs/{got['job']['job_id']}").json()
    assert job["state"] == "done" and job["settings"]["topology"] == "quads" and job["settings"]["target_faces"] == 300
    plain = part(blender_run, "generate_quads_geometry")
    (mesh,) = [o for o in plain["new"] if o["type"] == "MESH"]
    stages = report_of(live, plain["job"]["job_id"])
    assert mesh["faces"] == stages["quads"]["faces_made"] and mesh["quads"] >= 0.95 * mesh["faces"] > 0, mesh


def texture_part(found: dict, name: str, live) -> dict:
    """A texturing scenario: the object's vertices and faces are those it had, the result's objects are gone, and
    the server ran a new-look job for it."""
    got = part(found, name)
    before, after = got["before"], got["after"]
    assert after["same_mesh"] and after["verts"] == before["verts"] and after["polys"] == before["polys"]
    assert after["objects"] == before["objects"], "the result's objects were left in the scene"
    job = httpx.get(f"{live.url}/v1/jobs/{got['job']['job_id']}").json()
    assert job["kind"] == "variant" and job["state"] == "done", job
    return got


def signed_areas(uvs: list, corners: int = 4) -> list:
    """The signed area of each polygon of a per-loop UV list (the cube's loops: 4 per face, in face order)."""
    faces = [uvs[i:i + corners] for i in range(0, len(uvs), corners)]
    return [sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(f, f[1:] + f[:1])) / 2 for f in faces]


@pytest.mark.slow
def test_texturing_a_mesh_the_server_kept_binds_the_texture_through_the_results_uvs(blender_run, live):
    """keep_mesh (the add-on's default): the result is the cube's own surface, so its UVs are copied per loop onto
    a new map 'Trellis'; a cube with its own map keeps it (active), and the material reads 'Trellis' through a UV
    Map node where the server laid the texture out anew."""
    for name in ("texture_kept_without_uvs", "texture_kept_with_uvs"):
        got = texture_part(blender_run, name, live)
        before, after = got["before"], got["after"]
        assert got["last"][0] == "INFO", got["last"]
        assert httpx.get(f"{live.url}/v1/jobs/{got['job']['job_id']}").json()["settings"]["keep_mesh"] is True
        assert after["materials"][0]["images"] == [[64, 64]] and all(after["materials"][0]["packed"])
        assert after["uv_layers"] == before["uv_layers"] + ["Trellis"] or after["uvs"][after["active_uv"]] == \
            before["uvs"], after["uv_layers"]
        if "Trellis" in after["uv_layers"]:
            areas = signed_areas(after["uvs"]["Trellis"])
            # each face a proper quad, all wound alike: the corners went to the right loops
            assert all(abs(a) > 1e-4 for a in areas) and len({a > 0 for a in areas}) == 1, areas
        if before["uv_layers"]:
            own = before["uv_layers"][0]
            assert after["active_uv"] == own and after["uvs"][own] == before["uvs"]
            assert after["materials"][0]["uv_nodes"] == (["Trellis"] if "Trellis" in after["uv_layers"] else [])
        else:
            assert after["uv_layers"] == ["Trellis"] and len(after["uvs"]["Trellis"]) == 24


@pytest.mark.slow
def test_a_shape_made_again_is_refused_without_uvs_and_warned_about_with_them(blender_run, live):
    """keep_mesh=false (in More Settings): the server makes the shape again, which is not the cube. Without a UV map
    nothing is changed (and nothing of the result stays in the file); with one, the texture is bound with a warning
    that it may not line up."""
    got = texture_part(blender_run, "texture_remade_without_uvs", live)
    assert got["last"][0] == "ERROR" and "did not keep its mesh" in got["last"][1], got["last"]
    after, before = got["after"], got["before"]
    assert after["materials"] == [] and after["uv_layers"] == []
    assert (after["materials_in_file"], after["images"]) == (before["materials"], before["images"])
    got = texture_part(blender_run, "texture_remade_with_uvs", live)
    assert got["last"][0] == "WARNING" and "did not keep the mesh" in got["last"][1], got["last"]
    after, before = got["after"], got["before"]
    assert after["materials"][0]["images"] == [[64, 64]] and after["uv_layers"] == before["uv_layers"]
    assert after["uvs"][before["uv_layers"][0]] == before["uvs"]


@pytest.mark.slow
def test_a_result_for_an_object_deleted_meanwhile_adds_nothing(blender_run):
    got = part(blender_run, "texture_deleted_object")
    assert got["last"][0] == "ERROR" and "was deleted while the job ran" in got["last"][1], got["last"]
    assert got["objects"][0] == got["objects"][1] and got["materials"][0] == got["materials"][1]


@pytest.mark.slow
def test_cancel_stops_the_job_on_the_server(blender_run, live):
    got = part(blender_run, "cancel")
    assert got["job"]["state"] == "cancelled" and got["last"][0] == "WARNING", got
    assert httpx.get(f"{live.url}/v1/jobs/{got['job_id']}").json()["state"] == "cancelled"


@pytest.mark.slow
def test_the_messages_of_a_closed_port_a_wrong_token_and_refused_settings(blender_run):
    down = part(blender_run, "server_down")
    for level, message in (down["last"], down["presets_last"]):
        assert level == "ERROR" and "not running" in message and "python -m desktop api" in message
    token = part(blender_run, "token")
    assert token["none"][0] == "ERROR" and "wants a token" in token["none"][1]
    assert token["wrong"][0] == "ERROR" and "refused the token" in token["wrong"][1]
    assert token["right"][0] == "INFO"
    invalid = part(blender_run, "invalid_settings")
    assert invalid["last"][0] == "ERROR" and "texture_size" in invalid["last"][1]
    answer, last = invalid["bad_fields"]
    assert "NAME=VALUE" in answer and last[0] == "ERROR" and "NAME=VALUE" in last[1]


@pytest.mark.slow
def test_the_panels_model_choice_is_sent_to_the_server(blender_run):
    got = part(blender_run, "model_choice")
    assert got["fields"]["model_family"] == "trellis2" and got["fields"]["pipeline_type"] == "512", got["fields"]
    assert got["last"][0] == "ERROR" and "This server runs TRELLIS v1" in got["last"][1], got["last"]


@pytest.mark.slow
def test_a_trellis2_glb_keeps_its_pbr_material(blender_run):
    """The add-on's import of a TRELLIS.2 GLB: a Principled BSDF whose base colour, metallic and roughness read the
    GLB's images (metallic and roughness from one image: the metallic-roughness map), and its normal map."""
    got = part(blender_run, "pbr_import")
    (mesh,) = got["meshes"]
    inputs = mesh["bsdf"]
    assert inputs["Metallic"] and inputs["Metallic"]["image"] == inputs["Roughness"]["image"], inputs
    assert inputs["Base Color"]["image"] != inputs["Metallic"]["image"] and inputs["Normal"], inputs
    assert inputs["Metallic"]["colorspace"] == "Non-Color" and all(mesh["packed"]), mesh


@pytest.mark.slow
def test_no_temporary_files_are_left(blender_run):
    assert part(blender_run, "temp_files")["left"] == []


@pytest.mark.slow
def test_the_docs_render(blender_run):
    got = part(blender_run, "render")
    if os.environ.get("TRELLIS_DOCS_SHOTS") != "1":
        assert got == {"skipped": True}
        return
    assert got["written"] and os.path.getsize(got["path"]) > 10_000
