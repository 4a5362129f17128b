"""Third-party clients of the REST API, for real: a Python client generated from /openapi.json by
openapi-python-client downloads a finished job's GLB, and the docs pages (/docs, /redoc) render in a
headless browser with every request that leaves this computer blocked."""
import importlib
import io
import subprocess
import sys
import time

import httpx
import pytest

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.gradio_app import headless_chromium
from tests.helpers.rest import FAST, TIMEOUT, b64, load_glb
from tests.helpers.servers import LiveServer

from tests.helpers.images import rgba_blob


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    runner = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp("clients_out"), device="cpu")
    live = LiveServer(create_app(runner))
    yield live
    live.close()
    runner.shutdown(cancel=True, wait=True, timeout=30)


def test_file_routes_list_binary_types_first(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/jobs/{job_id}/files/{name}", "/download/model", "/download/preview/{kind}"):
        content = doc["paths"][path]["get"]["responses"]["200"]["content"]
        types = list(content)
        assert types[0] == "application/octet-stream", (path, types)
        assert all(content[t]["schema"] == {"type": "string", "format": "binary"} for t in types
                   if t != "application/json"), path
    files = list(doc["paths"]["/v1/jobs/{job_id}/files/{name}"]["get"]["responses"]["200"]["content"])
    assert files[-1] == "application/json" and "model/gltf-binary" in files
    # The middleware's answers are declared where they can happen.
    for path, method in [("/v1/jobs", "post"), ("/v1/jobs/{job_id}/export", "post"), ("/generate", "post"),
                         ("/generate_no_preview", "post")]:
        assert {"403", "408", "415"} <= set(doc["paths"][path][method]["responses"]), path
    assert "403" in doc["paths"]["/interrupt"]["post"]["responses"]
    assert "408" not in doc["paths"]["/interrupt"]["post"]["responses"]          # no body is read there
    assert "403" not in doc["paths"]["/v1/jobs"]["get"]["responses"]


def test_generated_client_downloads_the_glb(server, tmp_path):
    """openapi-python-client (a real generator) makes a package from the live /openapi.json; every module of it
    imports as generated, and jobs are queued (multipart and JSON), polled and their files downloaded through
    that package only."""
    (tmp_path / "config.yaml").write_text("post_hooks: []\n")       # no formatter run: not needed to import
    package = tmp_path / "trellis_api_client"
    gen = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--url", server.url + "/openapi.json",
                          "--meta", "none", "--output-path", str(package), "--config", str(tmp_path / "config.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    assert "WARNING" not in gen.stdout + gen.stderr, gen.stdout + gen.stderr     # every operation generated
    sys.path.insert(0, str(tmp_path))
    try:
        modules = sorted(".".join(m.relative_to(tmp_path).with_suffix("").parts) for m in package.rglob("*.py"))
        for name in modules:
            importlib.import_module(name.removesuffix(".__init__"))
        assert "trellis_api_client.api.jobs.create_job" in modules
        assert {f"trellis_api_client.api.stable_projectorz.generate_{kind}" for kind in (
            "no_preview", "preview", "multi_no_preview", "multi_preview")} <= set(modules)
        from trellis_api_client import Client
        from trellis_api_client.api.jobs import create_job, get_file, get_job
        from trellis_api_client.models import (CreateJobFilesBody, CreateJobFilesBodyFormatsItem, JobInfo,
                                               JobRequest)
        from trellis_api_client.types import File
    finally:
        sys.path.remove(str(tmp_path))

    image = open(rgba_blob(tmp_path / "blob.png"), "rb").read()
    with Client(base_url=server.url, timeout=httpx.Timeout(TIMEOUT)) as client:
        def finished(job):
            deadline = time.time() + TIMEOUT
            while str(job.state) not in ("done", "failed", "cancelled"):
                assert time.time() < deadline, job
                time.sleep(0.1)
                job = get_job.sync(job_id=job.id, client=client)
            assert str(job.state) == "done", job.error
            return job

        photo = File(payload=io.BytesIO(image), file_name="blob.png", mime_type="image/png")
        upload = CreateJobFilesBody(images=[photo], formats=[CreateJobFilesBodyFormatsItem.PLY],
                                    **{**FAST, "seed": 2})
        job = create_job.sync(client=client, body=upload)
        assert isinstance(job, JobInfo), job
        job = finished(job)
        assert [f.value for f in job.settings.formats] == ["ply"] and job.seed == 2
        assert get_file.sync(job_id=job.id, name="model.ply", client=client).payload.read().startswith(b"ply\n")

        job = create_job.sync(client=client, body=JobRequest.from_dict({"images": [b64(image)], **FAST,
                                                                         "formats": ["glb", "ply"]}))
        assert isinstance(job, JobInfo), job
        job = finished(job)
        assert {"model.glb", "model.ply"} <= {f.name for f in job.files}
        glb = get_file.sync(job_id=job.id, name="model.glb", client=client)
        assert isinstance(glb, File), glb
        data = glb.payload.read()
        assert data[:4] == b"glTF"
        load_glb(data)
        missing = get_file.sync_detailed(job_id=job.id, name="model.obj", client=client)
        assert missing.status_code == 404 and "no file" in missing.parsed.detail


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as b:
        yield b


@pytest.mark.parametrize("page_path, rendered", [
    ("/docs", ".opblock-summary-path[data-path='/v1/jobs/{job_id}/files/{name}']"),
    ("/redoc", "[data-section-id='tag/jobs/operation/get_file']")])
def test_docs_pages_render_offline(server, browser, page_path, rendered):
    """Nothing but this server is reachable (every other request is aborted and recorded)."""
    context = browser.new_context()
    external, errors = [], []

    def only_local(route):
        if route.request.url.startswith((server.url + "/", "data:", "blob:")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()
    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security Policy" not in m.text
            else None)
    try:
        page.goto(server.url + page_path)
        page.wait_for_selector(rendered, timeout=60_000)
        if page_path == "/docs":
            assert page.locator(".opblock").count() == sum(
                len(m) for m in httpx.get(server.url + "/openapi.json").json()["paths"].values())
        else:
            assert page.get_by_text("Download one of a job's files").count() > 0
        assert external == [], f"the docs page called out: {external}"
        # ReDoc's sidebar logo (from its CDN) is refused by the page's own policy, before any request.
        assert "img-src 'self' data:" in page.request.get(server.url + page_path).headers["content-security-policy"]
        assert errors == []
    finally:
        context.close()
