"""The StableProjectorz-compatible endpoints of the REST API (mounted by server.py; that app's parameter
names, the request schemas and the panel are in spz_params.py; what they share with the /v1 job API comes
from common.py).

StableProjectorz's 3D mode talks to a server at ip:port with these endpoints and parameter names
(those of the trellis-stable-projectorz API). One generation at a time, the request answering when
it has ended, while the client polls GET /status on another connection:

    POST /generate_no_preview         one image (`file` upload or `image_base64`) -> GLB
    POST /generate_multi_no_preview   several views (`file_list` or repeated `image_list_base64`) -> GLB
    POST /generate_preview            one image -> turntable preview; the result stays in memory
    POST /generate_multi_preview      several views -> preview
    POST /resume_from_preview         the GLB from that result, without sampling again (its query: any
                                      export setting, e.g. texture_size, bake_mode, mesh_simplify_ratio)
    POST /generate                    JSON (`single_multi_img_input`: base64 images, or a `prompt`) -> GLB
    POST /interrupt                   cancel the running generation
    GET  /download/model, /download/preview/gaussian, /ping, /status, /info/supported_operations,
         /download/spz-ui-layout/generation-3d-panel

Compared with that API: uploads work as multipart files as well as base64; a request is checked
first (invalid parameters or images: 422, also while a generation runs), then a second generation
while one runs is 503; a cancelled one is 499; invalid parameters or images are 422 (never 500);
a failed job answers with the status of its kind (common.ERROR_STATUS) and a message that says what to
do; only preview URLs that exist are advertised (the turntable, under StableProjectorz's name
/download/preview/gaussian for TRELLIS.2's lit PBR one too; /download/preview/mesh is 404). Every job
also shows up in the /v1 job API (and its files in the outputs folder). Besides the names below,
the form endpoints and /generate accept any generation setting under its own name (e.g. bake_views,
fill_holes, preset, pipeline_type) and REST's `model_family` (TRELLIS.2: spz_trellis2.py); unknown
fields are ignored, as that API did.

StableProjectorz's own client (its 3D mode) pings, reads /info/supported_operations and the panel every few
seconds, and on Generate POSTs its panel's values as JSON to /generate with `generate_what`
(make_meshes_and_tex: the only operation offered; anything else is a 422 that names it). Its sliders are
floats, so integer fields take whole floats (12.0; 12.5 is a 422) on these endpoints, unlike /v1. It
polls /status while the request waits, from the moment it sends it, and takes the first status other
than PROCESSING as the end: /status therefore reports PROCESSING from the moment a generation request
arrives (while it is read and checked) until it has been answered (at most ANSWER_GRACE_S after the job
ended, should that answer never go out). A later revision of that client polls at once, and its first poll may be
read before its request: an ended state (the previous job's, or idle) is said only after STATUS_HOLD_S without
a generation request arriving.
"""

import asyncio
import math
import os
import time
from typing import Literal

from .common import (ERROR_STATUS, MAX_IMAGES, POLL_S, ApiError, api_state, binary_content, build_settings,
                     check_images, decode_base64, error_responses, form_schema, form_values, not_queued, problem,
                     read_body, upload_bytes, validate)
from ..jobs.request import FieldNames, JobRequest, RequestError
from ..settings import ROWS, SETTINGS, check_value, normalise_choices, parse_value
# StableProjectorz's names, the request schemas and the panel (re-exported here):
from .spz_params import (ALIASES, STATUSES, SUPPORTED_OPERATIONS, check_operation, form_body,  # noqa: F401
                         panel_layout, referenced_models, spz_models, to_params)
from .spz_trellis2 import checked_family, panel_lines, pipeline_type_from_panel, request_family

BUSY = ("Server is busy: a generation is running. Wait for it (GET /status) or stop it (POST /interrupt).")

ANSWER_GRACE_S = 5.0        # the longest /status reports an ended job as PROCESSING while its answer goes out
STATUS_HOLD_S = 1.0         # how long /status waits for a generation request on its way before saying none runs


class SpzSlot:
    """The one generation StableProjectorz sees: the latest job started from these endpoints."""

    def __init__(self):
        self.job = None              # the latest job
        self.mode = None             # "generate" | "preview" | "resume"
        self.preview_job = None      # the latest preview, whose result is kept for /resume_from_preview
        self.jobs: list = []         # recent jobs, newest last (downloads come from the newest done one)
        self.unanswered = None       # the job whose generation request has not been answered yet
        self.receiving = 0           # generation requests being read and checked (their job not queued yet)

    def busy(self) -> bool:
        return self.job is not None and self.job.state in ("queued", "running")

    def answering(self) -> bool:
        """The latest job has ended but its request's answer has not gone out yet (ANSWER_GRACE_S at most)."""
        job = self.job
        return (job is not None and self.unanswered is job and not self.busy()
                and time.time() - (job.finished or 0) < ANSWER_GRACE_S)

    def answered(self, job) -> None:
        if self.unanswered is job:
            self.unanswered = None

    def start(self, job, mode: str, runner) -> None:
        if mode != "resume" and self.preview_job is not None:
            runner.release_result(self.preview_job.id)      # a new generation replaces the old preview
            self.preview_job = None
        if mode == "preview":
            self.preview_job = job
        self.job, self.mode = job, mode
        self.jobs = (self.jobs + [job])[-20:]

    def latest_with(self, kind: str):
        return next((j for j in reversed(self.jobs) if j.state == "done" and kind in j.files), None)


async def _form_request(request, model, multi: bool, runner) -> tuple:
    """(validated model, JobRequest of its images and the model family it asks for) of a form endpoint (multipart,
    urlencoded or JSON); 422 for a family that is not installed."""
    kind, body = await read_body(request)
    checked_family(runner, body, images=True)
    family = request_family(body)
    file_field, b64_field = ("file_list", "image_list_base64") if multi else ("file", "image_base64")
    if kind == "json":
        req = validate(model, body, strict=True, whole_floats=True)
        texts = getattr(req, b64_field)
        texts = ([] if texts is None else texts) if multi else ([] if texts is None else [texts])
        sources = [(t, b64_field) for t in texts]
    else:
        files, texts = body.pop(file_field, []), body.pop(b64_field, [])
        req = validate(model, form_values(body, list_fields=(), skip=(file_field, b64_field)))
        sources = [(f, file_field) for f in files] + [(t, b64_field) for t in texts]
    if not sources:
        raise ApiError(422, f"no image: send it as a `{file_field}` upload or as `{b64_field}` (base64)")
    if not multi and len(sources) > 1:
        raise ApiError(422, "one image per request here; send several views to /generate_multi_no_preview "
                            "or /generate_multi_preview")
    if len(sources) > MAX_IMAGES:
        raise ApiError(422, f"at most {MAX_IMAGES} images per request")
    images = []
    for i, (value, field) in enumerate(sources):
        where = f"{field}[{i}]" if multi else field
        images.append(await upload_bytes(value, where))
    return req, JobRequest(images=images, family=family or None)


async def _checked(state, req, wanted: JobRequest, mode: str, formats: tuple):
    """Check a generation's settings and images (422); returns the function that queues the job `wanted` (images of
    the model family it names, None: the server's own; or a prompt)."""
    values = req.model_dump(exclude={"image_base64", "image_list_base64", "single_multi_img_input",
                                     "output_format", "skip_videos", "prompt", "generate_what"})
    params = to_params(values)
    params["formats"] = formats
    settings = build_settings(params, state.defaults)
    await check_images(wanted.images, settings.preprocess, [f"image {i + 1}" for i in range(len(wanted.images))])
    wanted = wanted.replace(settings=settings, keep_result=(mode == "preview"))

    def submit():
        try:
            return state.runner.submit_request(wanted)
        except RuntimeError as err:
            raise not_queued(err) from None
        except ValueError as err:           # what the server's model cannot make (several views for TRELLIS.2)
            raise ApiError(422, str(err)) from None
    return submit


def _json_generation(body, family) -> JobRequest:
    """The job of /generate's request: base64 images, or a prompt (text to 3D), not both; 422 with the reason."""
    check_operation(body.generate_what)
    texts = body.single_multi_img_input or []
    prompt = body.prompt if body.prompt is not None and body.prompt.strip() else None
    # the panel sends no prompt: its messages offer one only to a client that sent the field
    names = FieldNames(images="one or more base64 images in single_multi_img_input",
                       prompt="a prompt" if body.prompt is not None else None, mesh=None, family="model_family")
    try:
        wanted = JobRequest(images=texts, prompt=prompt, family=family).checked(names)
    except RequestError as err:
        if err.field == "prompt":
            raise ApiError(422, [{"loc": ["body", "prompt"], "msg": str(err), "type": "value_error"}]) from None
        if err.field == "images" or not (texts or prompt):
            raise ApiError(422, [{"loc": ["body", "single_multi_img_input"], "type": "missing", "msg": str(err)}]) \
                from None
        raise ApiError(422, str(err)) from None
    return wanted.replace(images=[decode_base64(t, f"single_multi_img_input[{i}]") for i, t in enumerate(texts)])


async def _generation(request, mode: str, prepare):
    """Run one generation in the slot: `prepare(state)` reads and checks the request (4xx first, even
    while another generation runs) and returns the function that queues the job; then 503 when busy,
    else the job is queued and the answer waits for its outcome. The slot counts the job as unanswered
    until that answer has been sent (see _status)."""
    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse

    state = api_state(request)
    slot = state.spz
    slot.receiving += 1
    try:
        submit = await prepare(state)
        if slot.busy():
            raise ApiError(503, BUSY, status="FAILED")
        job = submit()                        # no await between the check and the start: no race
        slot.start(job, mode, state.runner)
        slot.unanswered = job
    finally:
        slot.receiving -= 1
    while not job.wait(0):
        await asyncio.sleep(POLL_S)
    sent = BackgroundTask(slot.answered, job)         # runs once the answer has been sent
    if job.state == "done":
        out = {"status": "PREVIEW_READY" if mode == "preview" else "COMPLETE", "progress": 100, "job_id": job.id}
        if "glb" in job.files:
            out["model_url"] = "/download/model"
        if "mp4" in job.files:
            out["preview_urls"] = {"gaussian": "/download/preview/gaussian"}
        out["message"] = ("preview ready: POST /resume_from_preview makes the GLB from it" if mode == "preview"
                          else "generation complete: GET /download/model")
        return JSONResponse(out, background=sent)
    kind = job.error_kind or "internal"
    return JSONResponse({"detail": job.remote_error(state.runner.outputs_dir) or kind, "status": "FAILED",
                         "error_kind": kind, "job_id": job.id},
                        status_code=ERROR_STATUS.get(kind, 500), background=sent)


def _status(slot, runner) -> dict:
    job = slot.job
    if slot.receiving and not slot.busy() and not slot.answering():
        return {"status": "PROCESSING", "progress": 0, "message": "reading the generation request", "busy": False}
    if job is None:
        return {"status": "FAILED", "progress": 0, "message": "idle: no generation has run yet", "busy": slot.busy()}
    p = job.progress
    out = {"job_id": job.id, "stage": p.stage, "eta_s": p.eta_s, "busy": slot.busy(),
           "progress": int(round(100 * p.fraction))}
    if job.state in ("queued", "running"):
        step = f" {p.step}/{p.total}" if p.total > 1 else ""
        out.update(status="PROCESSING", message=f"{p.label}{step}" if job.state == "running" else "waiting in queue")
    elif slot.answering():
        out.update(status="PROCESSING", progress=min(out["progress"], 99), busy=True,
                   message="finished: sending the answer to the generation request")
    elif job.state == "done":
        out.update(status="PREVIEW_READY" if slot.mode == "preview" else "COMPLETE", progress=100,
                   message="preview ready" if slot.mode == "preview" else "generation complete")
    else:
        out.update(status="FAILED", message=job.remote_error(runner.outputs_dir) or job.state)
    return out


async def settled_status(slot, runner) -> dict:
    """/status's answer. A client may poll the moment it has sent /generate, and that poll may be read first: so an
    ended state (the previous job's COMPLETE or FAILED, or idle) is said only once STATUS_HOLD_S has passed without
    a generation request arriving; one that arrives meanwhile is reported (PROCESSING)."""
    job = slot.job
    deadline = time.monotonic() + STATUS_HOLD_S
    while _status(slot, runner)["status"] != "PROCESSING" and time.monotonic() < deadline:
        if slot.receiving or slot.job is not job:
            break
        await asyncio.sleep(POLL_S / 5)
    return _status(slot, runner)


# ---------------------------------------------------------------------------------------------
# /resume_from_preview's query: the export settings
# ---------------------------------------------------------------------------------------------

def resume_parameters() -> dict:
    """{query parameter: our setting} of /resume_from_preview: each setting whose row says `export`, under our
    name and StableProjectorz's (ALIASES), but formats: that endpoint's answer is the GLB."""
    out = {}
    for row in ROWS:
        if row.export and row.name != "formats":
            out[row.name] = row.name
            out.update({alias: ours for alias, ours in ALIASES.items() if ours == row.name})
    return out


def resume_openapi_parameters() -> list:
    """The OpenAPI entries of /resume_from_preview's query parameters, each with the schema its name has in the
    form and JSON requests (so an alias's own range, e.g. mesh_simplify_ratio's percentages)."""
    models = spz_models()
    props = {**form_schema(models["SpzGenerateRequest"])["properties"],
             **form_schema(models["SpzImageForm"])["properties"]}
    out = []
    for name, ours in resume_parameters().items():
        schema = dict(props.get(name) or props[ours])
        description = schema.pop("description", SETTINGS[ours].help)
        if SETTINGS[ours].optional:
            schema = {"anyOf": [schema, {"type": "string", "enum": ["none"]}]}
        out.append({"name": name, "in": "query", "required": False, "description": description, "schema": schema})
    return out


def query_value(name: str, text: str):
    """The value of setting `name` from a query parameter's text (settings.parse_value), a whole float such as
    1024.0 included for an integer: StableProjectorz's sliders send floats."""
    try:
        return parse_value(name, text)
    except ValueError:
        if SETTINGS[name].kind == "int":
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if number.is_integer():
                return int(number)
        raise


def export_changes(query) -> dict:
    """The export settings (our names) a /resume_from_preview query changes: each value read by query_value,
    StableProjectorz's names and percentages turned into ours (to_params), then checked by the setting's own
    rule (settings.check_value). 422 names the parameter; unknown ones are ignored, as that API did."""
    names = resume_parameters()
    changes, source = {}, {}

    def refused(name, msg, kind="value_error") -> ApiError:
        return ApiError(422, [problem(["query", name], msg, kind)])
    for name, text in query.multi_items():
        ours = names.get(name)
        if ours is None:
            continue
        if ours in source:
            raise refused(name, "given more than once" if source[ours] == name else
                          f"{name} and {source[ours]} set the same thing: give only one of them")
        source[ours], row = name, SETTINGS[ours]
        try:
            value = query_value(ours, text)
            if isinstance(value, float) and not math.isfinite(value):
                raise refused(name, text, "finite_number")
            if row.kind == "choices":
                value = normalise_choices(row, value)
            elif value is not None:
                value = to_params({name: value})[ours]
            check_value(row, value)
        except ValueError as err:
            raise refused(name, str(err) if name == ours else f"{name}={text}: {err}") from None
        changes[ours] = value
    return changes

# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------

def add_routes(app) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, PlainTextResponse, Response

    M = spz_models()
    GenerateRequest = M["SpzGenerateRequest"]
    tags = ["StableProjectorz"]
    gen_errors = error_responses(400, 413, 415, 422, 429, 499, 500, 503, 507)

    @app.get("/ping", response_model=M["Ping"], tags=tags, summary="Liveness")
    async def ping(request: Request):
        return {"status": "running", "message": "Trellis Desktop API is running", "busy": api_state(request).spz.busy()}

    @app.get("/status", response_model=M["Status"], tags=tags, summary="The current (or last) generation")
    async def status(request: Request):
        state = api_state(request)
        return await settled_status(state.spz, state.runner)

    def form_route(path: str, multi: bool, mode: str, summary: str):
        model = M["SpzMultiImageForm" if multi else "SpzImageForm"]
        body = form_body(model, "file_list" if multi else "file", "many" if multi else "one")
        formats = ("mp4",) if mode == "preview" else ("glb",)

        @app.post(path, response_model=M["Result"], tags=tags, summary=summary, responses=gen_errors,
                  openapi_extra={"requestBody": body}, name=path.strip("/"))
        async def generate(request: Request):
            async def prepare(state):
                req, wanted = await _form_request(request, model, multi, state.runner)
                return await _checked(state, req, wanted, mode, formats=formats)
            return await _generation(request, mode, prepare)

    form_route("/generate_no_preview", False, "generate", "One image to a GLB")
    form_route("/generate_preview", False, "preview", "One image to a preview video (then /resume_from_preview)")
    form_route("/generate_multi_no_preview", True, "generate", "Several views of one object to a GLB")
    form_route("/generate_multi_preview", True, "preview", "Several views to a preview video")

    @app.post("/generate", response_model=M["Result"], tags=tags, responses=gen_errors,
              summary="StableProjectorz's JSON entry point: base64 image(s), or a prompt, to a GLB",
              description="A JSON body only (415 otherwise): the panel's values under their code names "
                          "(GET /download/spz-ui-layout/generation-3d-panel) and `generate_what`. Integer fields "
                          "take whole floats too (12.0).",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/SpzGenerateRequest"}}}}})
    async def generate_json(request: Request):
        async def prepare(state):
            _, raw = await read_body(request, forms=False)
            body = validate(GenerateRequest, pipeline_type_from_panel(raw), strict=True, whole_floats=True)
            wanted = _json_generation(body, request_family(raw))
            checked_family(state.runner, raw, images=wanted.kind == "generate")
            return await _checked(state, body, wanted, "generate",
                                  formats=("glb",) if body.skip_videos else ("glb", "mp4"))
        return await _generation(request, "generate", prepare)

    @app.post("/resume_from_preview", response_model=M["Result"], tags=tags,
              responses={**gen_errors, **error_responses(409)},
              summary="The GLB from the last preview's result, without sampling again",
              description="The query may change any export setting (our name or StableProjectorz's); the others "
                          "keep the preview's values. 409 when there is no preview result in memory (run "
                          "/generate_preview first).",
              openapi_extra={"parameters": resume_openapi_parameters()})
    async def resume(request: Request):
        from ..jobs import NoResultError, UnknownJobError

        async def prepare(state):
            changes = export_changes(request.query_params)

            def submit():
                preview = state.spz.preview_job
                if preview is None or not preview.result_kept:
                    raise ApiError(409, "no preview in memory to resume from (a newer generation replaces it): "
                                        "call /generate_preview or /generate_multi_preview first")
                try:
                    return state.runner.submit_export(preview.id, formats=("glb",), **changes)
                except (UnknownJobError, NoResultError) as err:
                    raise ApiError(409, str(err)) from None
                except ValueError as err:
                    raise ApiError(422, str(err)) from None
                except RuntimeError as err:
                    raise not_queued(err) from None
            return submit
        return await _generation(request, "resume", prepare)

    @app.post("/interrupt", response_model=M["Interrupt"], tags=tags, summary="Cancel the running generation",
              description="The generation request then answers 499.")
    async def interrupt(request: Request):
        state = api_state(request)
        job = state.spz.job
        if job is not None and state.runner.cancel(job.id):
            return {"status": "interrupt_requested"}
        return {"status": "no_generation_in_progress"}

    @app.get("/download/model", tags=tags, summary="The GLB of the latest generation", response_class=Response,
             responses={200: {"description": "the GLB", "content": binary_content("model/gltf-binary")},
                        **error_responses(404)})
    async def download_model(request: Request):
        job = api_state(request).spz.latest_with("glb")
        if job is None:
            raise ApiError(404, "no model yet: run /generate_no_preview, /generate or /resume_from_preview first")
        path = job.files["glb"]
        return FileResponse(path, media_type="model/gltf-binary", filename=os.path.basename(path))

    @app.get("/download/preview/{kind}", tags=tags, summary="The preview video of the latest preview",
             description="`gaussian`: the turntable of the result. No `mesh` preview is made (404).",
             response_class=Response,
             responses={200: {"description": "an H.264 mp4", "content": binary_content("video/mp4")},
                        **error_responses(404)})
    async def download_preview(kind: Literal["gaussian", "mesh"], request: Request):
        if kind == "mesh":
            raise ApiError(404, "no mesh preview is made; the preview is /download/preview/gaussian")
        job = api_state(request).spz.latest_with("mp4")
        if job is None:
            raise ApiError(404, "no preview yet: run /generate_preview first")
        return FileResponse(job.files["mp4"], media_type="video/mp4", filename="preview_gaussian.mp4",
                            content_disposition_type="inline")

    @app.get("/info/supported_operations", response_model=list[str], tags=tags, summary="What this server does",
             description="The `generate_what` values /generate accepts.")
    async def supported_operations():
        return list(SUPPORTED_OPERATIONS)

    @app.get("/download/spz-ui-layout/generation-3d-panel", tags=tags, response_class=PlainTextResponse,
             summary="The generation panel's controls, in StableProjectorz's layout language",
             description="The inputs StableProjectorz shows for this server (their code names are /generate's "
                         "fields), with this server's ranges and its preset's defaults; a prompt input only "
                         "when the server has a text model (--text-model).",
             responses={200: {"description": "the panel layout", "content": {"text/plain": {
                 "schema": {"type": "string"}}}}}, name="panel_layout")
    async def generation_panel(request: Request):
        state = api_state(request)
        text = getattr(state.runner, "text_model", None) is not None
        settings = build_settings({}, state.defaults)
        return PlainTextResponse(panel_layout(settings, text=text) + panel_lines(state.runner, settings))
