"""`python -m desktop api`: the REST API server (FastAPI on uvicorn) over the job runner.

    python -m desktop api [--model REPO_OR_DIR] [--host 127.0.0.1] [--port 7960] [--token TOKEN]
                          [--allow-origin URL ...] [--outputs DIR] [--device cpu|cuda[:N] | --gpus 0,1] [--preset NAME]
                          [--precision auto|fp16|bf16|fp32] [--offload auto|none|model]

One JobRunner serves every request: one FIFO queue, the model loaded once, lazily, by the first job.
Two families of endpoints share it:

* `/v1/...`, the job API. `POST /v1/jobs` queues a job (multipart files `images`, or JSON with base64
  `images`, plus any generation setting or a preset) and answers 202 at once; `GET /v1/jobs/{id}`
  reports its state and progress (stage, step i/n, fraction, ETA, queue position);
  `GET /v1/jobs/{id}/files/{name}` downloads one of its files.
* `/ping`, `/status`, `/generate...`, `/download/...`: the endpoints StableProjectorz calls, with their
  parameter names (desktop/api_spz.py).

Security. The server binds 127.0.0.1 (this computer only) by default; bound to any other address it
refuses to start without a token. When a token is set, every request needs it, from this computer
too, as `Authorization: Bearer TOKEN` or `X-API-Key: TOKEN` (401 otherwise); only the docs
(/docs, /redoc, /openapi.json) stay open. Without a token, requests must name this computer in their
Host header (127.0.0.1, localhost or ::1), which stops web pages from reaching the API through DNS
rebinding. Web pages of other sites may not change anything (CrossSiteGuard): a POST, PUT, PATCH or
DELETE whose Origin header is not the server's own origin (the scheme, host and port it is reached at;
127.0.0.1, localhost and ::1 count as one host) nor one allowed with --allow-origin, or that the browser
marks `Sec-Fetch-Site: cross-site`, is refused (403) unless it carries the server's valid token.
Programs that send no Origin (StableProjectorz, curl, Python clients) are not affected, and GET stays
open. CORS headers are sent only to the allowed origins, so other sites' pages cannot read the answers.

Stops and restarts. Ctrl-C, SIGTERM or SIGHUP stop the server cleanly (stopping.py): the running job
stops at its next step and ends interrupted (its folder keeps what was finished and gets an error.json
with `state: interrupted`), exit status 0; a second signal stops waiting (130 after a second Ctrl-C).
On start the runner puts the outputs folder in order (recovery.py): unfinished job folders are marked
interrupted, stale partial and temp files removed, and earlier jobs are served again by /v1/jobs.
An interrupted job reports state `cancelled` with error_kind `interrupted`.

Status codes: 200 / 202 success; 400 unreadable body; 401 token missing or wrong; 403 cross-site request
(see Security); 404 unknown job or file; 408 the body stopped arriving (BODY_READ_TIMEOUT_S); 409 wrong
state (e.g. cancelling a finished job); 413 body too large; 415 body not JSON or a form (/generate,
/v1/jobs/{id}/export: not JSON); 422 invalid parameters (checked first, even while a generation runs;
JSON numbers and booleans strictly typed) or an unusable image (not an image, damaged, too many pixels, fully
transparent); StableProjectorz family, which answers when the job ends: 499 cancelled, 503 busy (a
generation is already running), and the job's failure as a status (see ERROR_STATUS).
"""

import argparse
import contextlib
import functools
import ipaddress
import os
import secrets
import socket
import sys
from typing import Literal, Optional

from . import api_spz
from .api_common import (ERROR_STATUS, MAX_IMAGE_BYTES, MAX_IMAGES, MAX_JSON_DEPTH, POLL_S,  # noqa: F401 (re-exported)
                         ApiError, BodyTimeout, ServerDefaults, api_state, binary_content, build_settings,
                         check_images, decode_base64, error_body_model, error_responses, form_schema, form_values,
                         json_depth, parameter_fields, problem, read_body, read_form, rule_type, upload_bytes,
                         validate)
from .options import (LOCALHOST, add_memory_options, add_model_option, add_runner_options, add_server_options,
                      check_runner_args)
from .settings import DEFAULT_PRESET, EXPORT_FIELDS, FORMATS, HELP, PRESETS, RULES
from .stopping import StopSignals

DEFAULT_HOST = LOCALHOST
DEFAULT_PORT = 7960
API_VERSION = "1"

MAX_BODY_BYTES = 256 * 1024 * 1024      # per request (413 above)
# A request body that stops arriving (shorter than its Content-Length, a stalled upload) is given up
# after this many seconds without a byte: 408 and the connection closed (BodyReadTimeout).
BODY_READ_TIMEOUT_S = 30.0

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})     # what the cross-site guard checks

# Content types of the files a job writes (by extension).
CONTENT_TYPES = {".glb": "model/gltf-binary", ".mp4": "video/mp4", ".ply": "application/octet-stream",
                 ".obj": "model/obj", ".mtl": "model/mtl", ".png": "image/png", ".jpg": "image/jpeg",
                 ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff",
                 ".json": "application/json", ".bin": "application/octet-stream"}
_INLINE = {"video/mp4", "image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "application/json"}


# ---------------------------------------------------------------------------------------------
# Schemas (pydantic): every request and response of the job API
# ---------------------------------------------------------------------------------------------

def _build_models():
    from pydantic import BaseModel, ConfigDict, Field, create_model

    from .jobs import ERROR_KINDS

    forbid = ConfigDict(extra="forbid")
    settings_fields = {"preset": (str, Field(description=HELP["preset"]))}
    for name in RULES:
        kind, limits = rule_type(name)
        settings_fields[name] = (kind, Field(description=HELP[name], **limits))
    settings_fields["formats"] = (list[Literal[FORMATS]], Field(description=HELP["formats"]))
    Settings = create_model("Settings", __doc__="Every parameter of a job.", **settings_fields)

    JobRequest = create_model(
        "JobRequest", __config__=forbid,
        __doc__="A new job: image(s) plus settings. Settings left out come from the preset.",
        images=(list[str], Field(min_length=1, max_length=MAX_IMAGES,
                                 description="base64 image files (PNG, JPEG, WebP, ...; a data: URL prefix is "
                                             "allowed); several images are views of one object")),
        keep_result=(bool, Field(False, description="keep the decoded result in memory so that "
                                                    "POST /v1/jobs/{id}/export can write other files from it "
                                                    "without sampling again (only the most recent kept "
                                                    "results stay in memory)")),
        **parameter_fields())

    export_fields = {k: v for k, v in parameter_fields().items() if k in EXPORT_FIELDS}
    ExportRequest = create_model(
        "ExportRequest", __config__=ConfigDict(extra="forbid", strict=True),
        __doc__="Files to write from a job's kept result; fields left out keep the job's values.", **export_fields)

    class Progress(BaseModel):
        stage: str = Field(description="current stage: queued, starting, load, preprocess, condition, "
                                       "sparse_structure, slat, decode, ply, video, encode, glb, obj, done")
        label: str = Field(description="the stage in words")
        step: int
        total: int = Field(description="steps of this stage (0 when it has none)")
        fraction: float = Field(ge=0, le=1, description="of the whole job")
        percent: int = Field(ge=0, le=100)
        eta_s: Optional[float] = Field(description="seconds left (null while unknown)")
        elapsed_s: float
        message: str

    class FileInfo(BaseModel):
        name: str
        kind: str = Field(description="glb, ply, obj, mtl, texture, mp4, input, preprocessed, settings, ...")
        url: str
        size_bytes: int
        content_type: str

    class JobInfo(BaseModel):
        id: str
        kind: Literal["generate", "export"]
        source_id: Optional[str] = Field(description="export jobs: the job whose result they export")
        state: Literal["queued", "running", "done", "failed", "cancelled"]
        queue_position: Optional[int] = Field(description="0: next to start; null unless queued")
        progress: Progress
        error: Optional[str] = Field(description="what went wrong and what to do (failed or cancelled)")
        error_kind: Optional[Literal[ERROR_KINDS]] = Field(description="input, empty, oom, disk, model, "
                                                                         "background_removal, cancelled, interrupted or internal")
        files: list[FileInfo]
        settings: Settings
        seed: Optional[int] = Field(description="the seed used (null until the job starts)")
        device: Optional[str]
        out_dir: Optional[str] = Field(description="the job's folder on the server")
        created: float
        started: Optional[float]
        finished: Optional[float]
        keep_result: bool
        result_kept: bool = Field(description="an export can be made from this job now")

    class JobList(BaseModel):
        jobs: list[JobInfo] = Field(description="oldest first")

    class Health(BaseModel):
        status: Literal["ok"]
        api_version: str
        model: str
        model_loaded: bool
        devices: list[str]
        fast_paths: dict[str, str] = Field(description="per device: whether the renderers' fast GPU kernels run "
                                                       "there and, on the slower PyTorch path, why")
        queued: int
        running: int
        auth_required: bool

    class Presets(BaseModel):
        default: str
        presets: dict[str, Settings]

    return dict(Settings=Settings, JobRequest=JobRequest, ExportRequest=ExportRequest, Progress=Progress,
                FileInfo=FileInfo, JobInfo=JobInfo, JobList=JobList, Health=Health, Presets=Presets,
                ErrorBody=error_body_model())


@functools.cache
def models() -> dict:
    return _build_models()


# ---------------------------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------------------------

class ApiState:
    def __init__(self, runner, token: Optional[str] = None, defaults: Optional[ServerDefaults] = None):
        self.runner = runner
        self.token = token or None
        self.defaults = defaults or ServerDefaults()
        self.spz = api_spz.SpzSlot()


# ---------------------------------------------------------------------------------------------
# Job API (/v1)
# ---------------------------------------------------------------------------------------------

def file_entries(job) -> list:
    out = []
    for kind, path in dict(job.files).items():     # a copy: the worker adds files while the job runs
        name = os.path.basename(path)
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        out.append({"name": name, "kind": kind, "url": f"/v1/jobs/{job.id}/files/{name}", "size_bytes": size,
                    "content_type": content_type(name)})
    return out


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def file_content_types() -> dict:
    """The job file route's: every binary type, then JSON (settings.json, timings.json) last."""
    types = sorted(set(CONTENT_TYPES.values()) - {"application/json"})
    return {**binary_content(*types), "application/json": {"schema": {}}}


def job_info(job, runner) -> dict:
    d = job.to_dict()
    p = d["progress"]
    p["percent"] = int(round(100 * p["fraction"]))
    return {"id": job.id, "kind": job.kind, "source_id": job.source_id, "state": job.state,
            "queue_position": runner.queue_position(job.id) if job.state == "queued" else None,
            "progress": p, "error": job.error, "error_kind": job.error_kind, "files": file_entries(job),
            "settings": d["settings"], "seed": job.seed, "device": job.device, "out_dir": job.out_dir,
            "created": job.created, "started": job.started, "finished": job.finished,
            "keep_result": job.keep_result, "result_kept": job.result_kept}


def find_job(state: ApiState, job_id: str):
    job = state.runner.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (GET /v1/jobs lists the jobs in this server's outputs folder)")
    return job


def add_job_routes(app) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from .jobs import JobState, NoResultError, UnknownJobError

    M = models()
    JobInfo, JobRequest, ExportRequest = M["JobInfo"], M["JobRequest"], M["ExportRequest"]

    @app.get("/v1/health", response_model=M["Health"], tags=["service"], summary="Server and queue state")
    async def health(request: Request):
        state = api_state(request)
        jobs = state.runner.list()
        return {"status": "ok", "api_version": API_VERSION, "model": state.runner.model_path,
                "model_loaded": state.runner.model_loaded, "devices": list(state.runner.devices),
                "fast_paths": state.runner.fast_paths(),
                "queued": sum(j.state == JobState.QUEUED for j in jobs),
                "running": sum(j.state == JobState.RUNNING for j in jobs), "auth_required": state.token is not None}

    @app.get("/v1/presets", response_model=M["Presets"], tags=["service"],
             summary="The presets' settings (and the server's default preset)")
    async def presets(request: Request):
        state = api_state(request)
        return {"default": state.defaults.preset,
                "presets": {name: build_settings({"preset": name}, state.defaults).to_dict() for name in PRESETS}}

    request_body = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": form_schema(JobRequest, {"images": "many"}, ["images"])},
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
        },
    }

    @app.post("/v1/jobs", status_code=202, response_model=JobInfo, tags=["jobs"], summary="Queue a job",
              description="Multipart form (files `images` + setting fields) or JSON (base64 `images` + settings). "
                          "The images are checked at once (422 with the reason); the job then waits in the "
                          "queue: poll GET /v1/jobs/{id}. The answer's Location header is that URL.",
              openapi_extra={"requestBody": request_body},
              responses=error_responses(400, 413, 415, 422, 503))
    async def create_job(request: Request):
        state = api_state(request)
        kind, body = await read_body(request)
        if kind == "json":
            req = validate(JobRequest, body, strict=True)
            images = [decode_base64(text, f"images[{i}]") for i, text in enumerate(req.images)]
            if any(len(x) > MAX_IMAGE_BYTES for x in images):
                raise ApiError(413, f"an image is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB")
        else:
            files = body.get("images", [])
            # Validated with placeholders for the files (their count is checked here, their bytes below).
            req = validate(JobRequest, {**form_values(body, skip=("images",)), "images": ["-"] * len(files)})
            images = [await upload_bytes(v, f"images[{i}]") for i, v in enumerate(files)]
        params = req.model_dump(exclude={"images", "keep_result"}, exclude_none=True)
        settings = build_settings(params, state.defaults)
        await check_images(images, settings.preprocess, [f"images[{i}]" for i in range(len(images))])
        try:
            job = state.runner.submit(images, settings, keep_result=req.keep_result)
        except RuntimeError as err:
            raise ApiError(503, str(err)) from None
        return JSONResponse(job_info(job, state.runner), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs", response_model=M["JobList"], tags=["jobs"], summary="All jobs (this run's and the earlier ones in the outputs folder)")
    async def list_jobs(request: Request):
        state = api_state(request)
        return {"jobs": [job_info(j, state.runner) for j in state.runner.list()]}

    @app.get("/v1/jobs/{job_id}", response_model=JobInfo, tags=["jobs"], summary="A job's state and progress",
             responses=error_responses(404))
    async def get_job(job_id: str, request: Request):
        state = api_state(request)
        return job_info(find_job(state, job_id), state.runner)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobInfo, tags=["jobs"], summary="Cancel a job",
              description="A queued job is cancelled at once; a running one stops at its next step (poll it "
                          "until its state is cancelled). 409 when it has already ended.",
              responses=error_responses(404, 409))
    async def cancel_job(job_id: str, request: Request):
        state = api_state(request)
        job = find_job(state, job_id)
        if not state.runner.cancel(job_id):
            raise ApiError(409, f"job {job_id} has already ended ({job.state})", job_id=job_id)
        return job_info(job, state.runner)

    @app.post("/v1/jobs/{job_id}/export", status_code=202, response_model=JobInfo, tags=["jobs"],
              summary="Write other files from a job's kept result",
              description="Queues an export job that writes the requested files (e.g. a GLB with another "
                          "texture size) from the decoded result of a finished job submitted with "
                          "keep_result, without sampling again. 409 when that result is not in memory.",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/ExportRequest"}}}}},
              responses=error_responses(400, 404, 409, 413, 415, 422, 503))
    async def export_job(job_id: str, request: Request):
        state = api_state(request)
        _, raw = await read_body(request, forms=False)          # 415 unless JSON, 422 when too deep
        body = validate(ExportRequest, raw, strict=True)
        find_job(state, job_id)
        changes = body.model_dump(exclude_none=True)
        if "formats" in changes:
            changes["formats"] = tuple(changes["formats"])
        try:
            job = state.runner.submit_export(job_id, **changes)
        except UnknownJobError as err:
            raise ApiError(404, str(err)) from None
        except NoResultError as err:
            raise ApiError(409, str(err), job_id=job_id) from None
        except ValueError as err:
            raise ApiError(422, str(err)) from None
        except RuntimeError as err:
            raise ApiError(503, str(err)) from None
        return JSONResponse(job_info(job, state.runner), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    file_content = file_content_types()

    @app.get("/v1/jobs/{job_id}/files/{name}", tags=["jobs"], summary="Download one of a job's files",
             description="`name` is a file name from the job's `files` (model.glb, preview.mp4, model.ply, ...). "
                         "Only that job's own files are served.",
             response_class=Response,
             responses={200: {"description": "the file", "content": file_content}, **error_responses(404)})
    async def get_file(job_id: str, name: str, request: Request):
        state = api_state(request)
        job = find_job(state, job_id)
        # Only names the job itself lists; the request never becomes part of a path.
        path = next((p for p in list(job.files.values()) if os.path.basename(p) == name), None)
        if path is None or not await run_in_threadpool(os.path.isfile, path):
            raise ApiError(404, f"job {job_id} has no file {name!r}" + (
                f" (its files: {', '.join(e['name'] for e in file_entries(job))})" if job.files else ""))
        ctype = content_type(name)
        return FileResponse(path, media_type=ctype, filename=name,
                            content_disposition_type="inline" if ctype in _INLINE else "attachment")


# ---------------------------------------------------------------------------------------------
# Cross-site requests
# ---------------------------------------------------------------------------------------------

def parse_origin(text: str) -> Optional[tuple]:
    """'scheme://host[:port]' -> (scheme, host, port), lower-case, the default port filled in; None
    when `text` is not an http(s) origin (e.g. "null", a path, a user name)."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(text.strip())
        port = u.port
    except ValueError:
        return None
    if (u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query or u.fragment
            or u.username is not None or u.password is not None):
        return None
    return u.scheme, u.hostname.lower(), port or (443 if u.scheme == "https" else 80)


def format_origin(origin: tuple) -> str:
    """(scheme, host, port) -> the origin as browsers write it (no default port, IPv6 in brackets)."""
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == (443 if scheme == "https" else 80) else f":{port}")


def origin_arg(text: str) -> str:
    """argparse type of --allow-origin: an origin, normalised."""
    origin = parse_origin(text)
    if origin is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an origin: give scheme://host[:port], e.g. "
                                         "http://localhost:3000 (no path)")
    return format_origin(origin)


def token_given(headers) -> Optional[str]:
    """The token a request sends (Authorization: Bearer TOKEN or X-API-Key: TOKEN), if any."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


class CrossSiteGuard:
    """ASGI middleware: refuses (403) state-changing requests that a web page of another site sent.

    A POST/PUT/PATCH/DELETE passes when its Origin is one of `allowed` or the server's own origin
    (the request's scheme, its Host header and port; loopback names are one host), or when it has no
    Origin and is not marked `Sec-Fetch-Site: cross-site` (programs: StableProjectorz, curl, Python),
    or when it carries the server's valid token. GET, HEAD and OPTIONS always pass."""

    def __init__(self, app, allowed=(), token: Optional[str] = None):
        self.app = app
        self.allowed = {parse_origin(o) for o in allowed}
        self.token = token.encode("utf-8") if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            reason = self.refusal(scope)
            if reason is not None:
                from starlette.responses import JSONResponse

                await JSONResponse({"detail": reason}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def own_origin(self, scope, headers) -> Optional[tuple]:
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return parse_origin(f"{scheme}://{headers.get('host', '')}")

    def refusal(self, scope) -> Optional[str]:
        """None when the request may go on, else the 403 message."""
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        origin_text = headers.get("origin")
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        if origin_text is None and fetch_site != "cross-site":
            return None                                     # not a cross-site page: a program, a form of ours
        origin = parse_origin(origin_text) if origin_text is not None else None
        if origin is not None and origin in self.allowed:
            return None
        own = self.own_origin(scope, headers)
        if origin is not None and own is not None and fetch_site != "cross-site" and _same_origin(origin, own):
            return None
        given = token_given(headers)
        if self.token is not None and given and secrets.compare_digest(given.encode("utf-8"), self.token):
            return None
        if origin_text is not None and origin is None:
            who = f"a page with Origin {origin_text!r} (a sandboxed page or a local file)"
            fix = ("open the page from a web server and start this server with --allow-origin "
                   "scheme://host:port of that page")
        else:
            shown = format_origin(origin) if origin is not None else "another site"
            who = f"a web page at {shown}" if origin is not None else \
                "a web page of another site (Sec-Fetch-Site: cross-site)"
            fix = (f"if you trust that page, start the server with --allow-origin {shown}" if origin is not None
                   else "if you trust that page, start the server with --allow-origin scheme://host:port of that page")
        return (f"cross-site request refused: {who} may not change anything on this server "
                f"(its own pages are {format_origin(own) if own else 'on the address it is reached at'}). "
                f"To allow it, {fix}" + (", or send the server's token" if self.token else "")
                + ". Programs that send no Origin header (StableProjectorz, curl, Python) are not affected.")


class BodyReadTimeout:
    """ASGI middleware: while a request body is incomplete, each wait for more of it ends after
    BODY_READ_TIMEOUT_S (read when the request comes) with BodyTimeout, answered 408 with the
    connection closed. A body shorter than its Content-Length holds nothing open for long."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import asyncio

        limit = BODY_READ_TIMEOUT_S
        done = False

        async def timed_receive():
            nonlocal done
            if done:
                return await receive()                  # after the body: disconnect listeners wait freely
            try:
                message = await asyncio.wait_for(receive(), limit)
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message
        await self.app(scope, timed_receive, send)


def _same_origin(a: tuple, b: tuple) -> bool:
    """Same scheme and port, and the same host (127.0.0.1, localhost and ::1 being one)."""
    return a[0] == b[0] and a[2] == b[2] and (a[1] == b[1] or (is_loopback(a[1]) and is_loopback(b[1])))


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

def create_app(runner, token: Optional[str] = None, defaults: Optional[ServerDefaults] = None,
               allowed_hosts: Optional[list] = None, allowed_origins: Optional[list] = None):
    """The FastAPI app over `runner` (which the caller owns and shuts down). With `token`, every
    endpoint but the docs needs it. Without one, only Host headers naming this computer (or
    `allowed_hosts`) are served. State-changing requests from web pages are served only from the
    server's own origin and `allowed_origins` (scheme://host[:port]), which also get CORS headers."""
    from fastapi import Depends, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware


    state = ApiState(runner, token, defaults)
    dependencies = []
    if state.token:
        bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer TOKEN")
        api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: TOKEN")
        expected = state.token.encode("utf-8")

        async def require_token(creds: Optional[HTTPAuthorizationCredentials] = Security(bearer),
                                key: Optional[str] = Security(api_key)):
            given = creds.credentials if creds is not None else key
            if not given or not secrets.compare_digest(given.encode("utf-8"), expected):
                raise ApiError(401, "a valid token is required: send 'Authorization: Bearer TOKEN' or "
                                    "'X-API-Key: TOKEN' (the token the server was started with)")
        dependencies.append(Depends(require_token))

    app = FastAPI(
        title="Trellis Desktop API", version=API_VERSION, max_body_size=MAX_BODY_BYTES, dependencies=dependencies,
        docs_url=None, redoc_url=None,                    # add_docs_routes: served from an installed package
        generate_unique_id_function=lambda route: route.name,      # operationId: create_job, get_file, ...
        responses=error_responses(401) if state.token else None,
        description="Image to 3D asset (GLB, PLY, OBJ, preview MP4) on this computer's GPU. The /v1 job API "
                    "queues jobs and reports their progress; the StableProjectorz endpoints (/ping, /status, "
                    "/generate...) keep that app's parameter names. "
                    + ("Every endpoint needs the server's token (Bearer or X-API-Key)." if state.token else ""))
    app.state.api = state
    origins = [origin_arg(o) for o in allowed_origins or []]
    # The last added runs first: Host check, body read timeout, CORS (preflights of allowed origins), the guard.
    app.add_middleware(CrossSiteGuard, allowed=origins, token=state.token)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], expose_headers=["Location"])
    app.add_middleware(BodyReadTimeout)
    if not state.token:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES) + list(allowed_hosts or []))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if err.http_status == 401 else None
        return JSONResponse({"detail": err.detail, **err.extra}, status_code=err.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        problems = [problem(list(e.get("loc", ())), e.get("msg", ""), e.get("type", "")) for e in err.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(BodyTimeout)
    async def body_timeout(request: Request, err: BodyTimeout):
        return JSONResponse({"detail": f"the request body stopped arriving ({BODY_READ_TIMEOUT_S:g} s without a "
                                       "byte): send the whole body, as long as its Content-Length says"},
                            status_code=408, headers={"Connection": "close"})

    add_docs_routes(app)
    add_job_routes(app)
    api_spz.add_routes(app)
    _register_schemas(app, [models()["JobRequest"], models()["ExportRequest"], *api_spz.referenced_models()])
    return app


DOCS_ASSETS = "/docs-assets"


def docs_assets_dir() -> Optional[str]:
    """The folder of Swagger UI's and ReDoc's script, style sheet and icon: the `static` folder of the
    installed fastapi-offline package (MIT; Swagger UI is Apache-2.0, ReDoc MIT). None when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "static")
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    return folder if all(os.path.isfile(os.path.join(folder, n)) for n in needed) else None


def add_docs_routes(app) -> None:
    """/docs (Swagger UI) and /redoc with their files served by this server, so that they work offline and
    no visit calls out to a CDN. Plain routes: they stay open when a token is set, like /openapi.json."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from starlette.responses import PlainTextResponse
    from starlette.staticfiles import StaticFiles

    folder = docs_assets_dir()
    if folder is None:
        async def missing(request):
            return PlainTextResponse("The API docs pages need the fastapi-offline package, which is not installed: "
                                     "run the installer again (./run.sh --update, or run.bat --update). The "
                                     "OpenAPI schema is at /openapi.json.", status_code=503)
        app.router.add_route("/docs", missing, include_in_schema=False)
        app.router.add_route("/redoc", missing, include_in_schema=False)
        return
    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")
    title = f"{app.title} {app.version}"

    def offline(page):
        # Whatever the scripts would still fetch from elsewhere (ReDoc's sidebar logo comes from its CDN), the
        # browser does not even ask for: only this server (and inline/data/blob parts of the page itself).
        page.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
        return page

    async def swagger_ui(request):
        return offline(get_swagger_ui_html(
            openapi_url=app.openapi_url, title=title + " - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # No badge from the online validator (swagger.io) either.
            swagger_ui_parameters={"validatorUrl": None}))

    async def redoc(request):
        return offline(get_redoc_html(openapi_url=app.openapi_url, title=title + " - ReDoc",
                                      redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                                      redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False))
    app.router.add_route("/docs", swagger_ui, include_in_schema=False)
    app.router.add_route("/redoc", redoc, include_in_schema=False)


def _declare_middleware_answers(schema: dict) -> None:
    """The answers of the middleware, on the operations where they can happen: 403 (CrossSiteGuard) on
    every state-changing method, 408 (BodyReadTimeout) wherever a request body is read."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    words = {403: "cross-site request refused: a web page of another origin (add it with --allow-origin, or "
                  "send the token)",
             408: f"the request body stopped arriving ({BODY_READ_TIMEOUT_S:g} s without a byte)"}
    for operations in schema.get("paths", {}).values():
        for method, op in operations.items():
            codes = ([403] if method.upper() in UNSAFE_METHODS else []) + ([408] if "requestBody" in op else [])
            for code in codes:
                op.setdefault("responses", {}).setdefault(str(code), {"description": words[code], "content": error})


def _register_schemas(app, request_models: list) -> None:
    """Add the request schemas of bodies that routes parse themselves (referenced from openapi_extra)."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = build()
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in request_models:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                comps.update(js.pop("$defs", {}))
                comps[model.__name__] = js
            _declare_middleware_answers(schema)
        return app.openapi_schema
    app.openapi = openapi


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m desktop api",
        description="Serve the REST API: a job API under /v1 and the StableProjectorz endpoints. "
                    "OpenAPI docs at http://HOST:PORT/docs.",
        epilog="Bound to 127.0.0.1 (the default) only this computer can connect. Any other --host needs "
               "--token. Ctrl-C (or SIGTERM, SIGHUP) stops it cleanly: the running job is stopped at its next "
               "step and marked interrupted. Exit status: 0 after such a stop, 130 when a second Ctrl-C cut "
               "it short, 1 when the server cannot start, 2 usage error.")
    add_model_option(p, extra="; loaded once, by the first job")
    add_server_options(p, port=DEFAULT_PORT, host_help="address to listen on (default %(default)s: this computer "
                                                        "only; 0.0.0.0: every network, needs --token)")
    p.add_argument("--token", default=os.environ.get("TRELLIS_DESKTOP_API_TOKEN") or None,
                   help="require this token (Authorization: Bearer TOKEN or X-API-Key: TOKEN) on every request "
                        "(default: $TRELLIS_DESKTOP_API_TOKEN; required when --host is not this computer)")
    p.add_argument("--allow-origin", action="append", type=origin_arg, default=[], metavar="URL",
                   help="let web pages at this origin (scheme://host[:port], e.g. http://localhost:3000) start and "
                        "cancel jobs and read the answers (CORS); repeat for several. Other sites' pages are "
                        "refused (403) unless they send the token; programs that send no Origin are not affected")
    add_runner_options(p)
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="preset of requests that do not name one (default %(default)s)")
    add_memory_options(p, precision_help="network precision of jobs that do not set one (default %(default)s)",
                       offload_help="GPU offloading of jobs that do not set one (default %(default)s)")
    return p


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (OSError with the reason when the address cannot be used)."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                      # exits with 2 on a usage error
    check_runner_args(parser, args)
    if args.token is not None and len(args.token) < 8:
        parser.error("--token: use at least 8 characters (e.g. python -c \"import secrets; "
                     "print(secrets.token_urlsafe())\")")
    if not is_loopback(args.host) and not args.token:
        parser.error(f"--host {args.host} lets other computers reach the API: set a token with --token TOKEN "
                     "(or $TRELLIS_DESKTOP_API_TOKEN) so that only clients that send it are served, or keep the "
                     f"default --host {DEFAULT_HOST}")

    import uvicorn

    from .jobs import JobRunner

    try:
        sock = bind_socket(args.host, args.port)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err}"
              + (" (another program uses this port: choose another with --port)"
                 if getattr(err, "errno", None) in (98, 48, 10048) else ""), file=sys.stderr)
        return 1
    try:
        # Two kept results: the StableProjectorz preview and one /v1 job's can both wait for an export.
        runner = JobRunner(args.model, args.outputs, device=args.device, gpus=args.gpus, keep_results=2)
    except (OSError, ValueError, RuntimeError) as err:
        sock.close()
        print(f"error: {err}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    runner.say_fast_paths()
    rec = runner.recovery
    if rec.interrupted or rec.removed:
        print(f"outputs folder: {rec.summary()}", file=sys.stderr, flush=True)
    defaults = ServerDefaults(preset=args.preset, precision=args.precision, offload=args.offload)
    app = create_app(runner, token=args.token, defaults=defaults, allowed_origins=args.allow_origin)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Trellis Desktop API on http://{shown}:{port}  (docs: http://{shown}:{port}/docs; "
          f"model {args.model}, outputs {runner.outputs_dir}; "
          f"{'token required' if args.token else 'no token: this computer only'}). Ctrl-C stops it.",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="off")
    server = _Server(config)

    def end_server_loop(forced: bool):
        server.should_exit = True
        server.force_exit = server.force_exit or forced
    stop = StopSignals(runner, "the API server", on_signal=end_server_loop)
    stop.install()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        code = stop.finish()
    return code


def _Server(config):
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server without its own signal handling (StopSignals does it; uvicorn's re-raises
        the signal after its shutdown, which kills the process before the job has stopped)."""

        def capture_signals(self):
            return contextlib.nullcontext()
    return Server(config)
