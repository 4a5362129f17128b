"""Text mode and new looks in the app: the REST API (a live uvicorn server), the command line (real
subprocesses), the job runner's first-use download of the text model, and bad inputs (an empty or a 10 000-
character prompt, a JPEG named .glb, a model claiming 10 M triangles), each leaving earlier outputs alone.
All on the tiny random-weight pipelines of `python -m trellis.tools.tiny_pipeline --text`, on the CPU, offline
(the "hub" is a local HTTP server on 127.0.0.1)."""
import base64
import hashlib
import json
import os
import struct
import time
from pathlib import Path

import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import InputError, JobRequest, JobRunner, check_mesh
from desktop.settings import GenerationSettings
from tests.helpers.cli import desktop
from tests.helpers.images import jpeg_bytes, rgba_blob
from tests.helpers.rest import form, wait_job
from tests.helpers.servers import FileServer, LiveServer, closed_port_url, no_sleep
from tests.helpers.text_inputs import LONG_PROMPT, ply_claiming

# Tiny jobs: 2 + 2 steps, only the PLY (no bake, no video) unless a test asks for more.
FAST = dict(seed=1, ss_steps=2, slat_steps=2, video_frames=8, video_resolution=64, fill_holes=False,
            texture_size=64, bake_views=4, bake_resolution=64, formats=["ply"])
pytestmark = pytest.mark.filterwarnings("ignore::trellis.pipelines.trellis_text_to_3d.PromptTruncatedWarning")
# ------------------------------------------------------------------------------------------ inputs

@pytest.fixture(scope="module")
def rod(tmp_path_factory) -> Path:
    """A thin rod: few occupied voxels (~800 at 64^3), so stage 2 on its shape is quick on a CPU."""
    import trimesh

    path = tmp_path_factory.mktemp("meshes") / "rod.glb"
    trimesh.creation.cylinder(radius=0.02, height=1.0, sections=8).export(path)
    return path


def stl_claiming(faces: int) -> bytes:
    return b"\0" * 80 + struct.pack("<I", faces)


def glb_claiming(faces: int) -> bytes:
    doc = json.dumps({"asset": {"version": "2.0"}, "accessors": [{"count": faces * 3, "componentType": 5125,
                                                                   "type": "SCALAR"}],
                      "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 0}]}]}).encode()
    doc += b" " * (-len(doc) % 4)
    return b"glTF" + struct.pack("<II", 2, 20 + len(doc)) + struct.pack("<I4s", len(doc), b"JSON") + doc


def test_mesh_files_are_checked_from_their_header(rod, tmp_path):
    assert check_mesh(rod) == ".glb"
    assert check_mesh(("renamed.obj", rod.read_bytes())) == ".glb"          # the bytes decide, not the name
    import trimesh

    box = trimesh.creation.box()
    for ext in ("stl", "ply", "obj"):
        data = box.export(file_type=ext)
        assert check_mesh((f"box.{ext}", data.encode() if isinstance(data, str) else data)) == f".{ext}"
    cases = [(("photo.glb", jpeg_bytes()), "is a JPEG image, not a 3-D model"),
             (("scan.ply", ply_claiming(10_000_000)), "10,000,000 triangles, more than the 4,000,000"),
             (("scan.stl", stl_claiming(10_000_000)), "10,000,000 triangles"),
             (("scan.glb", glb_claiming(10_000_000)), "10,000,000 triangles"),
             (("cut.stl", stl_claiming(12) + b"\0" * 50), "damaged STL"),
             (("empty.glb", b""), "is empty"),
             (("notes.obj", b"\x00\x01binary junk"), "not a 3-D model"),
             (("points.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n"),
              "no triangles"),
             (("parts.gltf", json.dumps({"asset": {"version": "2.0"}, "buffers": [{"uri": "parts.bin"}]}).encode()),
              "upload the model as one .glb")]
    for source, words in cases:
        t = time.perf_counter()
        with pytest.raises(InputError, match=words):
            check_mesh(source)
        assert time.perf_counter() - t < 1.0, source[0]        # the header, not the geometry


# ------------------------------------------------------------------------------------------ REST API

@pytest.fixture(scope="module")
def runner(tiny_text_models_dir, tmp_path_factory):
    r = JobRunner(os.path.join(tiny_text_models_dir, "TRELLIS-image-large"), tmp_path_factory.mktemp("text_api_out"),
                  device="cpu", text_model=os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"))
    yield r
    r.shutdown(cancel=True, wait=True, timeout=30)


@pytest.fixture(scope="module")
def client(runner):
    server = LiveServer(create_app(runner))
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
    server.close()


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size and mtime: what a refused request must not touch."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_api_prompt_and_mesh_jobs_and_bad_inputs(client, runner, rod, tmp_path):
    # A prompt: text mode, end to end, with a GLB this time.
    r = client.post("/v1/jobs", json={"prompt": "  a red wooden chair ", **FAST, "formats": ["glb", "ply"]})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "text" and r.json()["prompt"] == "a red wooden chair"
    info = wait_job(client, r.json()["id"])
    assert info["state"] == "done", info["error"]
    # The prompt was not cut; the tiny model's faint Gaussians make the bake say how little it observed.
    assert len(info["warnings"]) == 1 and info["warnings"][0].startswith("The texture bake saw only "), info
    assert info["settings"]["text_model_size"] == "xlarge"
    names = {f["name"] for f in info["files"]}
    assert {"model.glb", "model.ply", "settings.json", "timings.json"} <= names
    record = client.get(f"/v1/jobs/{info['id']}/files/settings.json").json()
    assert record["kind"] == "text" and record["prompt"] == "a red wooden chair" and record["inputs"] == []
    assert record["model"].endswith("TRELLIS-text-tiny")
    assert client.get(f"/v1/jobs/{info['id']}/files/model.glb").content[:4] == b"glTF"

    # A 3-D model + a prompt (multipart upload): a new look; the model is kept in the job folder.
    r = client.post("/v1/jobs", files=[("mesh", ("rod.glb", rod.read_bytes(), "model/gltf-binary"))],
                    data=form(prompt="made of gold", **{k: v for k, v in FAST.items() if k != "formats"}, formats="ply"))
    assert r.status_code == 202, r.text
    variant = wait_job(client, r.json()["id"])
    assert variant["state"] == "done" and variant["kind"] == "variant", variant["error"]
    files = {f["name"]: f for f in variant["files"]}
    assert files["input_mesh.glb"]["size_bytes"] == rod.stat().st_size and files["input_mesh.glb"]["kind"] == "mesh"
    record = client.get(f"/v1/jobs/{variant['id']}/files/settings.json").json()
    assert record["mesh"] == "rod.glb" and record["prompt"] == "made of gold"

    # A 3-D model + a photo (JSON, base64): the image model's stage 2 on the model's voxels.
    blob = Path(rgba_blob(tmp_path / "blob.png")).read_bytes()
    r = client.post("/v1/jobs", json={"mesh": base64.b64encode(rod.read_bytes()).decode(), "mesh_name": "rod.glb",
                                      "images": [base64.b64encode(blob).decode()], **FAST})
    assert r.status_code == 202, r.text
    photo = wait_job(client, r.json()["id"])
    assert photo["state"] == "done", photo["error"]
    assert {"input_mesh.glb", "input.png", "preprocessed.png", "model.ply"} <= {f["name"] for f in photo["files"]}

    # Bad inputs: refused at once with the reason; nothing written, earlier outputs untouched.
    before = snapshot(runner.outputs_dir)
    count = len(client.get("/v1/jobs").json()["jobs"])
    bad = [
        dict(json={"prompt": "", **FAST}, words="the prompt is empty"),
        dict(json={"prompt": "   ", **FAST}, words="the prompt is empty"),
        dict(data=form(prompt=" ", formats="ply"), words="the prompt is empty"),
        dict(json={"prompt": "x" * 20_001}, words="20000 characters"),
        dict(json={"prompt": "a chair", "images": [base64.b64encode(blob).decode()]}, words="not both"),
        dict(json={"mesh": base64.b64encode(rod.read_bytes()).decode()}, words="needs a `prompt` or exactly one"),
        dict(files=[("mesh", ("photo.glb", jpeg_bytes(), "model/gltf-binary"))], data=form(prompt="gold"),
             words="is a JPEG image, not a 3-D model"),
        dict(files=[("mesh", ("scan.ply", ply_claiming(10_000_000), "application/octet-stream"))],
             data=form(prompt="gold"), words="10,000,000 triangles"),
        dict(json={"mesh": base64.b64encode(stl_claiming(10_000_000)).decode(), "mesh_name": "scan.stl",
                   "prompt": "gold"},
             words="10,000,000 triangles"),
        dict(json={"text_model_size": "huge", "prompt": "a chair"}, words="base"),
        dict(json={"mesh": "", "mesh_name": "rod.glb", "prompt": "gold"}, words="mesh: the 3-D model is empty"),
        dict(json={"mesh": "%%%", "mesh_name": "rod.glb", "prompt": "gold"}, words="the 3-D model file's bytes"),
    ]
    for case in bad:
        words = case.pop("words")
        t = time.perf_counter()
        r = client.post("/v1/jobs", **case)
        assert r.status_code == 422, (words, r.status_code, r.text)
        assert words in r.text, (words, r.text)
        assert time.perf_counter() - t < 5, words
    assert snapshot(runner.outputs_dir) == before
    assert len(client.get("/v1/jobs").json()["jobs"]) == count

    # A 10 000-character prompt: accepted, the job completes, and says the prompt was cut.
    r = client.post("/v1/jobs", json={"prompt": LONG_PROMPT, **FAST})
    long_job = wait_job(client, r.json()["id"])
    assert long_job["state"] == "done", long_job["error"]
    assert len(long_job["warnings"]) == 1 and "77 tokens" in long_job["warnings"][0]
    timings = client.get(f"/v1/jobs/{long_job['id']}/files/timings.json").json()
    assert timings["warnings"] == long_job["warnings"]
    # ... and the earlier jobs' files are as they were.
    after = snapshot(runner.outputs_dir)
    assert {k: v for k, v in after.items() if k in before} == before

    # After a restart the jobs are known again as what they were (kind, prompt, model, warnings), and the
    # history names them by their prompt and model.
    again = JobRunner(runner.model_path, runner.outputs_dir, device="cpu")
    try:
        known = {j.id: j for j in again.list()}
        assert (known[long_job["id"]].kind, known[long_job["id"]].warnings) == ("text", long_job["warnings"])
        assert known[info["id"]].prompt == "a red wooden chair"
        assert known[variant["id"]].kind == "variant" and known[variant["id"]].files["mesh"].endswith("input_mesh.glb")
    finally:
        again.shutdown(cancel=True, wait=True, timeout=30)
    from desktop.jobs.folder import list_history

    labels = [label for label, _ in list_history(runner.outputs_dir)]
    assert any(x.endswith('"a red wooden chair" · done') for x in labels)
    assert any(x.endswith('rod.glb → "made of gold" · done') for x in labels)
    assert any(x.endswith("rod.glb → blob.png · done") or x.endswith("rod.glb → input.png · done") for x in labels)

    # The schema documents the new fields, in JSON and as form files.
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["JobRequest"]["properties"]
    assert {"prompt", "mesh", "mesh_name", "images", "text_model_size"} <= set(props)
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["mesh"]["format"] == "binary"
    job_info = schema["components"]["schemas"]["JobInfo"]["properties"]
    assert {"prompt", "warnings"} <= set(job_info)


# ------------------------------------------------------------------------------------------ CLI

SMALL = ["--steps", "2", "--formats", "ply", "--set", "fill_holes=false"]


@pytest.mark.slow
def test_cli_generate_prompt_and_retexture(tiny_text_models_dir, rod, tmp_path):
    models = ["--model", os.path.join(tiny_text_models_dir, "TRELLIS-image-large"),
              "--text-model", os.path.join(tiny_text_models_dir, "TRELLIS-text-tiny"), "--device", "cpu"]
    out = tmp_path / "out"
    proc = desktop("generate", "--prompt", "a red chair", "-o", out, *models, *SMALL, "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    (folder,) = [Path(line) for line in proc.stdout.split()]
    record = json.loads((folder / "settings.json").read_text())
    assert (record["kind"], record["prompt"], record["seed"]) == ("text", "a red chair", 5)
    assert (folder / "model.ply").stat().st_size > 0

    proc = desktop("retexture", rod, "--prompt", "made of gold", "-o", out, *models, *SMALL)
    assert proc.returncode == 0, proc.stderr
    (variant,) = [Path(line) for line in proc.stdout.split()]
    assert (variant / "input_mesh.glb").read_bytes() == rod.read_bytes() and (variant / "model.ply").exists()

    # Usage errors, before any model loads: exit 2 with the reason, nothing written.
    before = snapshot(out)
    jpeg = tmp_path / "photo.glb"
    jpeg.write_bytes(jpeg_bytes())
    scan = tmp_path / "scan.stl"
    scan.write_bytes(stl_claiming(10_000_000))
    for args, words in [(("generate", "--prompt", " "), "the prompt is empty"),
                        (("generate", "x.png", "--prompt", "a chair"), "not both"),
                        (("retexture", jpeg, "--prompt", "gold"), "is a JPEG image, not a 3-D model"),
                        (("retexture", scan, "--prompt", "gold"), "10,000,000 triangles"),
                        (("retexture", rod), "one of the arguments --prompt --image is required")]:
        proc = desktop(*args, "-o", out, *models, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------ text weights

def hub(server: FileServer, repo: str, folder: Path, revision: str = "main") -> dict:
    """Serve every file of `folder` as the hub serves `repo`: its tree listing (LFS sha256 for .safetensors, the
    git blob id otherwise) and /<repo>/resolve/<revision>/<path>. Returns {path: bytes}."""
    blobs = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    listing = []
    for path, data in blobs.items():
        item = {"type": "file", "path": path, "size": len(data)}
        if path.endswith(".safetensors"):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
        else:
            item["oid"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        listing.append(item)
        server.files[f"/{repo}/resolve/{revision}/{path}"] = data
    server.files[f"/api/models/{repo}/tree/{revision}"] = json.dumps(listing).encode()
    return blobs


def image_manifest(tiny_image: Path, tmp_path: Path) -> Path:
    """weights_manifest.json with the tiny image pipeline's files in place of the published ones (pinned sizes
    and sha256, as the real manifest has them)."""
    from installer import weights

    manifest = weights.load_manifest()
    manifest["pipeline"]["files"] = {p.relative_to(tiny_image).as_posix(): {
        "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in tiny_image.rglob("*") if p.is_file()}
    path = tmp_path / "weights_manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_text_model_downloaded_on_first_use_into_the_models_folder(tiny_text_models_dir, tmp_path, monkeypatch):
    """A text job in the app's install (TRELLIS_MODEL_DIR) with no --text-model: the published xlarge files are
    fetched into models/ (text flows from the hub listing, decoders as image-large's pinned files, CLIP), checked,
    and loaded; the job reports the download as its progress. A second size or a damaged file is fixed the same
    way; offline later, the kept listings are enough."""
    from installer import weights

    src = Path(tiny_text_models_dir)
    server = FileServer()
    try:
        rev = weights.load_manifest()["pipeline"]["revision"]
        hub(server, "microsoft/TRELLIS-text-xlarge", src / "TRELLIS-text-tiny")
        hub(server, "openai/clip-vit-large-patch14", src / "clip-vit-large-patch14")
        hub(server, "microsoft/TRELLIS-image-large", src / "TRELLIS-image-large", revision=rev)
        monkeypatch.setattr(weights, "MANIFEST_PATH", image_manifest(src / "TRELLIS-image-large", tmp_path))
        models = tmp_path / "models"
        monkeypatch.setenv("TRELLIS_MODEL_DIR", str(models))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")       # the library itself never reaches for the hub here

        stages = []
        runner = JobRunner(str(src / "TRELLIS-image-large"), tmp_path / "out", device="cpu",
                           on_progress=lambda job, p: stages.append((p.stage, p.message)))
        try:
            settings = GenerationSettings(**{**FAST, "formats": ("ply",)}, randomize_seed=False)
            job = runner.submit_request(JobRequest(prompt="a red chair", settings=settings))
            assert job.wait(120) and job.state == "done", job.error
        finally:
            runner.shutdown(cancel=True, wait=True, timeout=30)
        assert any(s == "download" and "clip-vit-large-patch14 model.safetensors" in m for s, m in stages)
        record = json.loads(Path(job.files["settings"]).read_text())
        assert record["model"] == str(models / "TRELLIS-text-xlarge")
        got = sorted(p.relative_to(models).as_posix() for p in models.rglob("*") if p.is_file()
                     and p.name not in (weights.LISTING_NAME, "verified.json"))
        text_files = sorted(f"TRELLIS-text-xlarge/{p.relative_to(src / 'TRELLIS-text-tiny').as_posix()}"
                            for p in (src / "TRELLIS-text-tiny").rglob("*") if p.is_file())
        decoders = [f for f in got if f.startswith("TRELLIS-image-large/")]
        assert text_files == [f for f in got if f.startswith("TRELLIS-text-xlarge/")]
        assert len(decoders) == 8 and all("_dec_" in f for f in decoders)     # only what the text pipeline names
        assert {f for f in got if f.startswith("clip-vit-large-patch14/")} == {
            f"clip-vit-large-patch14/{p.name}" for p in (src / "clip-vit-large-patch14").iterdir()}

        # A damaged file is found (size, then sha256) and fetched again; offline, the kept listings suffice.
        flow = next((models / "TRELLIS-text-xlarge" / "ckpts").glob("*.safetensors"))
        data = bytearray(flow.read_bytes())
        data[-1] ^= 0xFF
        flow.write_bytes(bytes(data))
        requests = len(server.requests)
        weights.ensure_text_model(models, "xlarge", endpoint=server.url, full_check=True, sleep=no_sleep)
        assert flow.read_bytes() != bytes(data)
        assert [p for p, _ in server.requests[requests:] if "resolve" in p] == [
            f"/microsoft/TRELLIS-text-xlarge/resolve/main/ckpts/{flow.name}"]
        assert weights.ensure_text_model(models, "xlarge", endpoint=closed_port_url(), sleep=no_sleep) == \
            models / "TRELLIS-text-xlarge"

        # Another size that cannot be fetched: a clear message, naming each file, where it goes and what to do.
        with pytest.raises(weights.WeightsError) as err:
            weights.ensure_text_model(models, "base", endpoint=closed_port_url(), sleep=no_sleep)
        assert "Cannot list the files of microsoft/TRELLIS-text-base" in str(err.value)
        assert "--text-model FOLDER" in str(err.value)
    finally:
        server.close()
    assert weights.text_approx_bytes("xlarge") > 5e9 and weights.text_approx_bytes("base") < 3e9
