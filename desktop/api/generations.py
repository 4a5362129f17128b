"""`POST /v1/3d/generations`: the OpenAI-style 3-D endpoint of the local AI servers (LocalAI's and Lemonade's field
names), over the same job runner as the /v1 job API (mounted by server.py).

    {"prompt": "a red chair"} or {"image": "<base64 or data: URL>" | ["<view 1>", "<view 2>"]},
    "model": a model family's name or a peer's name for it ("trellis2-4b": TRELLIS.2; GET /v1/health `families`
    lists what runs here; another name is a 400 naming the known ones), "model_family" the same by its id,
    "n": 1..MAX_N assets (seeds seed, seed+1, ...),
    "response_format": "url" (default) | "b64_json" | "glb" (or another format: the file itself, as Lemonade answers),
    "output_format": "glb" (default) | "ply" | "obj" | "stl" | "3mf" | "usdz" | "mp4",
    "async": false, "timeout": seconds to wait (default SYNC_TIMEOUT_S),
    LocalAI's "background" (auto/keep/black/white) and Lemonade's "bg_removal" (threshold/birefnet), mapped onto
    `preprocess`; and every /v1 job setting under its own name (preset, seed, texture_size, formats, destination, ...).

JSON (base64 images) or a multipart form (files `image`, repeated for several views). The answer waits for the
jobs (`{"created", "id", "object": "3d.generation", "model", "status", "data": [{"url" | "b64_json", "job_id",
...}]}`, an OBJ with its `companions`: the .mtl and textures it names); with "async": true (or `Prefer: respond-async`), or when `timeout` passes first, it is 202 with the job ids
at once, and `GET /v1/3d/generations/{id}` answers the same envelope once they are done. The jobs are /v1 jobs:
`GET /v1/jobs/{job_id}` shows their progress, `POST /v1/jobs/{job_id}/cancel` stops them. Errors are in the OpenAI
shape (openai_errors.py), a bad request a 400; a job that failed is answered with its error and the header
`x-should-retry: false` (each retry would be a whole new generation; the `openai` package obeys it). A request sent
again with the `Idempotency-Key` of an earlier one makes no new job (idempotency.py). LocalAI's path without /v1
(`POST /3d/generations`) is the same endpoint.
"""
import functools
import os
import re
from typing import Literal, Optional, Union

from .common import (MAX_IMAGE_BYTES, MAX_IMAGES, ApiError, api_state, build_settings,
                     check_images, decode_base64, form_schema, form_values, not_queued, parameter_fields, read_body,
                     upload_bytes, validate)
from .generation_answer import NO_RETRY, default_output, envelope, failure, wait_jobs
from .idempotency import REPLAYED, fingerprint, replayed_jobs, request_key
from .openai_errors import openai_error_responses
from .v1 import content_type
from ..families import DEFAULT_FAMILY, FAMILIES, FAMILY_HELP, family_for_model_name, family_problem, runner_families
from ..jobs.request import FieldNames, JobRequest, RequestError
from ..settings import FORMATS, MAX_PROMPT_CHARS, MAX_SEED

MAX_N = 4                     # assets per request: each is a whole job
SYNC_TIMEOUT_S = 600.0        # how long an answer waits for its jobs by default (then 202 with the job ids)
MAX_TIMEOUT_S = 3600.0
RESPONSE_FORMATS = ("url", "b64_json")
IMAGE_FIELDS = ("image", "image[]", "images")           # where a form's image files may come (OpenAI, PHP-style, ours)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ENDPOINT = "/v1/3d/generations"            # its Idempotency-Keys' scope (LocalAI's /3d/generations is the same)

ONE_RESOLUTION = "this server samples at one resolution; choose a preset (fast, balanced, high, low-vram)"
# Fields other servers take that have no counterpart here, and what to send instead (`quality` and `resolution`:
# resolution_hint's words, which depend on the families the server runs).
NO_COUNTERPART = {
    "quality": ONE_RESOLUTION, "resolution": ONE_RESOLUTION,
    "uv": "the texture atlas is always unwrapped; set bake_mode (fast, opt) or texture_size",
    "step": "set ss_steps (structure) and slat_steps (details)",
    "texture_steps": "set slat_steps", "cfg_scale": "set ss_cfg and slat_cfg",
    "params": "send the settings as top-level fields (texture_size, target_faces, ...)",
    "size": "3-D assets have no image size; set texture_size or target_faces",
    "image_url": "send the image's bytes (base64 `image`, or a multipart file): this server fetches no URLs",
}
# LocalAI's `background` and Lemonade's `bg_removal` -> preprocess (background removal); None: the preset's.
BACKGROUND = {"auto": None, "keep": False, "black": True, "white": True, "threshold": True, "birefnet": True}


def _build_models():
    from pydantic import BaseModel, ConfigDict, Field, create_model

    request = create_model(
        "GenerationRequest", __config__=ConfigDict(extra="forbid", populate_by_name=True),
        __doc__="An OpenAI-style 3-D generation: a prompt or image(s), plus any /v1 job setting.",
        prompt=(Optional[str], Field(None, max_length=MAX_PROMPT_CHARS, description="describe the object (text "
                                                                                    "mode; the text model is "
                                                                                    "downloaded on first use)")),
        image=(Optional[Union[str, list[str]]], Field(None, description="the photo as base64 (a data: URL prefix is "
                                                                        "allowed), or a list: views of one object; "
                                                                        "URLs are not fetched")),
        images=(Optional[list[str]], Field(None, min_length=1, max_length=MAX_IMAGES,
                                           description="the /v1 job API's name for `image` (a list)")),
        model=(Optional[str], Field(None, max_length=500, description="the model family by its id or a peer's "
                                                                      "name for it (trellis2-4b: TRELLIS.2); "
                                                                      "default: the server's model")),
        model_family=(Optional[str], Field(None, max_length=100, description=FAMILY_HELP)),
        n=(int, Field(1, ge=1, le=MAX_N, description="how many assets (one job each, seeds seed, seed+1, ...)")),
        response_format=(Literal[(*RESPONSE_FORMATS, *FORMATS)], Field(
            "url", description="url: download URLs on this server; b64_json: the files base64 in the answer; a file "
                               "format (glb, ...): the file itself as the answer's body (n = 1; Lemonade's way)")),
        output_format=(Optional[Literal[FORMATS]], Field(None, description="the file each `data` entry gives "
                                                                          "(default glb)")),
        timeout=(float, Field(SYNC_TIMEOUT_S, ge=0, le=MAX_TIMEOUT_S, allow_inf_nan=False,
                              description="seconds to wait for the jobs; past it the answer is 202 with the job ids "
                                          "(the jobs go on)")),
        async_=(bool, Field(False, alias="async", description="answer 202 at once with the job ids (as does the "
                                                              "header Prefer: respond-async)")),
        background=(Optional[Literal["auto", "keep", "black", "white"]], Field(
            None, description="LocalAI's name: keep = no background removal, black/white = remove it")),
        bg_removal=(Optional[Literal["threshold", "birefnet"]], Field(None, description="Lemonade's name: remove the "
                                                                                      "background")),
        user=(Optional[str], Field(None, max_length=500, description="OpenAI's end-user id: accepted, not used")),
        **parameter_fields())

    class GenerationItem(BaseModel):
        url: Optional[str] = Field(None, description="response_format url: the file's download URL")
        b64_json: Optional[str] = Field(None, description="response_format b64_json: the file, base64")
        job_id: str = Field(description="the /v1 job that made it (GET /v1/jobs/{job_id})")
        status: str = Field(description="queued, in_progress, completed, failed or cancelled")
        seed: Optional[int] = None
        output_format: str
        content_type: Optional[str] = None
        companions: Optional[list[dict]] = Field(None, description="output_format obj: the files the .obj needs "
                                                 "beside it (its .mtl and textures), each {name, content_type, "
                                                 "url | b64_json}")
        size_bytes: Optional[int] = None
        progress: Optional[int] = Field(None, description="percent, while the job is not done")

    class Generation(BaseModel):
        id: str = Field(description="GET /v1/3d/generations/{id} answers this envelope again")
        object: Literal["3d.generation"]
        created: int
        model: str = Field(description="what made it: its family's public name (trellis-image-large, trellis2-4b), "
                                       "or a prompt's text model")
        status: str = Field(description="queued, in_progress, completed, failed or cancelled (of all its jobs)")
        output_format: str
        data: list[GenerationItem]
    return dict(GenerationRequest=request, Generation=Generation)


@functools.cache
def models() -> dict:
    return _build_models()


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------

def resolution_hint(runner) -> str:
    """What `quality` / `resolution` are told: the pipeline types where a family here samples at several, else that
    the server samples at one."""
    choices = [FAMILIES[name] for name in runner_families(runner) if FAMILIES[name].pipeline_types]
    if not choices:
        return ONE_RESOLUTION
    return "; ".join(f"{f.words} chooses its resolution with pipeline_type ({', '.join(f.pipeline_types)}; "
                     f"model_family {f.name})" for f in choices) + \
        (f"; {DEFAULT_FAMILY.words} samples at one resolution: choose a preset (fast, balanced, high, low-vram)"
         if not DEFAULT_FAMILY.pipeline_types else "")


def unknown_fields(body: dict, model, runner=None) -> list:
    """Problems (400) for the fields the request model does not take (other servers' fields: what to send instead)."""
    known = set(model.model_fields) | {"async"}
    generic = "not a field of this endpoint: see /docs (every /v1 job setting is accepted under its own name)"
    words = dict(NO_COUNTERPART)
    if runner is not None:
        words["quality"] = words["resolution"] = resolution_hint(runner)
    return [{"loc": ["body", k], "msg": words.get(k, generic), "type": "extra_forbidden"}
            for k in body if k not in known]


def model_names(runner) -> str:
    """The model names this server answers to, by family, for the 400 of an unknown `model`."""
    here = runner_families(runner)
    return "; ".join(f"{f.words}: {', '.join((f.name, *f.peer_names))}" + ("" if f.name in here else
                                                                             " (not installed here)")
                     for f in FAMILIES.values())


def requested_family(req, runner, prompt) -> "str | None":
    """The family id `model` / `model_family` ask for (None: the server's own); 400 naming the field for an unknown
    model, two that disagree, a family that cannot run here (with how to install it) or one that takes no prompt."""
    def bad(field: str, msg: str):
        return ApiError(400, [{"loc": ["body", field], "msg": msg, "type": "value_error"}])
    by_model = None
    if req.model is not None and req.model.strip():
        found = family_for_model_name(req.model)
        own = str(runner.model_path)
        if found is None and req.model.strip() not in (own, os.path.basename(own.rstrip("/\\"))):
            raise bad("model", f"unknown model {req.model!r}: this server answers to {model_names(runner)} (or "
                               "leave `model` out for its own model)")
        by_model = found.name if found is not None else None
    by_field = req.model_family or None
    if by_field is not None and by_field not in FAMILIES:
        raise bad("model_family", f"model_family must be one of {', '.join(FAMILIES)}, not {by_field!r}")
    if by_model is not None and by_field is not None and by_model != by_field:
        raise bad("model_family", f"model {req.model!r} is {FAMILIES[by_model].words}, model_family {by_field!r} "
                                  f"is {FAMILIES[by_field].words}: give one of them")
    wanted = by_field or by_model
    field = "model_family" if by_field else "model"
    if wanted is None:
        return None
    if prompt is not None:
        if FAMILIES[wanted] is not DEFAULT_FAMILY:
            raise bad(field, f"{FAMILIES[wanted].words} makes assets from an image; a prompt is made by the "
                             "TRELLIS-text model: leave out model / model_family, or send an image")
        return None
    problem = family_problem(runner, wanted)
    if problem:
        raise bad(field, problem)
    return wanted


# This endpoint's words for a request's inputs, in its messages.
GENERATION_NAMES = FieldNames(images="an `image` (a list: views of one object)", prompt="a `prompt`", mesh=None,
                              family="model / model_family")


async def read_generation(request) -> tuple:
    """(validated request, JobRequest of its image bytes or prompt) of a JSON or form body; 4xx with the reason."""
    model = models()["GenerationRequest"]
    runner = api_state(request).runner
    kind, body = await read_body(request)
    if kind == "json":
        problems = unknown_fields(body, model, runner) if isinstance(body, dict) else []
        if problems:
            raise ApiError(400, problems)
        req = validate(model, body, strict=True)
        texts = req.image if isinstance(req.image, list) else [req.image] if req.image is not None else []
        if req.images is not None:
            if texts:
                raise ApiError(400, [{"loc": ["body", "images"], "msg": "give `image` or `images`, not both",
                                      "type": "value_error"}])
            texts = req.images
        for text in texts:
            if isinstance(text, str) and text.strip().lower().startswith(("http://", "https://")):
                raise ApiError(400, [{"loc": ["body", "image"], "msg": NO_COUNTERPART["image_url"],
                                      "type": "value_error"}])
        if len(texts) > MAX_IMAGES:
            raise ApiError(400, [{"loc": ["body", "image"], "msg": f"at most {MAX_IMAGES} views of one object",
                                  "type": "too_long"}])
        images = [with_param(decode_base64, t, f"image[{i}]") for i, t in enumerate(texts)]
        if any(len(x) > MAX_IMAGE_BYTES for x in images):
            raise ApiError(413, f"an image is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB")
    else:
        files = [v for field in IMAGE_FIELDS for v in body.get(field, [])]
        problems = unknown_fields({k: v for k, v in body.items() if k not in IMAGE_FIELDS}, model, runner)
        if problems:
            raise ApiError(400, problems)
        if len(files) > MAX_IMAGES:
            raise ApiError(400, [{"loc": ["body", "image"], "msg": f"at most {MAX_IMAGES} views of one object",
                                  "type": "too_long"}])
        values = form_values(body, skip=IMAGE_FIELDS)
        req = validate(model, {**values, **({"image": ["-"] * len(files)} if files else {})})
        images = []
        for i, v in enumerate(files):
            try:
                images.append(await upload_bytes(v, f"image[{i}]"))
            except ApiError as err:
                raise ApiError(err.http_status, err.detail, param="image") from None
    try:
        wanted = JobRequest(images=images, prompt=req.prompt).checked(GENERATION_NAMES)
    except RequestError as err:
        if err.field == "prompt":
            raise ApiError(400, [{"loc": ["body", "prompt"], "msg": str(err), "type": "value_error"}]) from None
        raise ApiError(400, str(err)) from None
    return req, wanted


def generation_settings(req, state) -> tuple:
    """(settings, output format, response format) of a request: the /v1 settings, the background fields mapped, the
    output format among the formats written. 400 when they disagree."""
    wanted = req.response_format
    raw = wanted not in RESPONSE_FORMATS                     # a file format: the file is the answer
    output = req.output_format or (wanted if raw else "glb")
    if raw and output != wanted:
        raise ApiError(400, [{"loc": ["body", "output_format"], "msg": f"response_format {wanted} answers the "
                              f"{wanted} file itself: leave output_format out or make it {wanted}",
                              "type": "value_error"}])
    if raw and req.n != 1:
        raise ApiError(400, [{"loc": ["body", "n"], "msg": f"response_format {wanted} answers one file: n must be 1 "
                              "(use url or b64_json for several)", "type": "value_error"}])
    params = req.model_dump(include=set(parameter_fields()) - {"model_family"}, exclude_none=True)
    for field in ("background", "bg_removal"):
        value = BACKGROUND.get(getattr(req, field))
        if value is None:
            continue
        if params.get("preprocess", value) != value:
            raise ApiError(400, [{"loc": ["body", field], "msg": f"{field} {getattr(req, field)} contradicts "
                                  f"preprocess {params['preprocess']}", "type": "value_error"}])
        params["preprocess"] = value
    settings = build_settings(params, state.defaults)
    if output not in settings.formats:
        settings = settings.replace(formats=(*settings.formats, output))
    return settings, output, wanted


def with_param(fn, *args):
    """fn(*args), its ApiError naming the request field `image` (the OpenAI shape's `param`)."""
    try:
        return fn(*args)
    except ApiError as err:
        raise ApiError(err.http_status, err.detail, param="image") from None


def submit_jobs(runner, wanted: JobRequest, n: int) -> list:
    """n queued jobs of `wanted` (seeds seed, seed+1, ... when a seed was given); none when the queue refuses one
    (429)."""
    jobs, settings = [], wanted.settings
    try:
        for i in range(n):
            made = settings if settings.randomize_seed or i == 0 else \
                settings.replace(seed=(settings.seed + i) % (MAX_SEED + 1))
            jobs.append(runner.submit_request(wanted.replace(settings=made)))
    except (RuntimeError, ValueError) as err:
        for job in jobs:              # all or nothing: a client that retries after the 429 gets no duplicates
            runner.cancel(job.id)
        if isinstance(err, ValueError):           # what the family cannot make (several views for TRELLIS.2)
            raise ApiError(400, [{"loc": ["body", "image"], "msg": str(err), "type": "value_error"}]) from None
        raise not_queued(err) from None
    return jobs


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------

def add_generation_routes(app) -> None:
    """POST /v1/3d/generations and GET /v1/3d/generations/{id}, their error answers in the OpenAI shape."""
    from fastapi import Query, Request
    from fastapi.responses import FileResponse, JSONResponse

    from .docs import register_schemas

    M = models()
    register_schemas(app, [M["GenerationRequest"]])
    errors = openai_error_responses(400, 401, 403, 408, 413, 415, 429, 499, 500, 503, 507)
    # Optional in the schema, as /v1/jobs's: generated clients of a required body of two content types fail to import.
    body = {"required": False, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/GenerationRequest"}},
        "multipart/form-data": {"schema": form_schema(M["GenerationRequest"], {"image": "many"})}}}
    binary = {"schema": {"type": "string", "format": "binary"}}
    answer = {"description": "the generation, its files in `data`; with response_format glb (or another file format): "
                             "that file itself",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Generation"}},
                          "application/octet-stream": binary, "model/gltf-binary": binary}}

    @app.post("/3d/generations", include_in_schema=False)        # LocalAI's documented path (it serves both)
    @app.post("/v1/3d/generations", tags=["openai"], summary="Make 3-D assets (OpenAI-style, as LocalAI and Lemonade)",
              description=f"JSON (`prompt`, or `image`: base64, a list for several views) or a multipart form "
                          f"(files `image`), `n` (1..{MAX_N}), `response_format` url | b64_json | a file format, "
                          f"`output_format` (default glb), `async`, `timeout` (default {SYNC_TIMEOUT_S:g} s), and any "
                          "/v1 job setting under its own name. Waits for the jobs, then answers their files; async "
                          "(or `Prefer: respond-async`), or past the timeout: 202 with the job ids, the jobs going "
                          "on. Errors in the OpenAI shape; a bad request is a 400 naming the field.",
              response_model=M["Generation"],
              responses={200: answer, 202: {"model": M["Generation"], "description": "queued or still running: the "
                                            "job ids; GET /v1/3d/generations/{id} later"}, **errors},
              openapi_extra={"requestBody": body})
    async def create_generation(request: Request):
        state = api_state(request)
        key = request_key(request)
        req, wanted = await read_generation(request)
        images, prompt = wanted.images, wanted.prompt
        family = requested_family(req, state.runner, prompt)
        settings, output, response_format = generation_settings(req, state)
        if req.async_ and response_format not in RESPONSE_FORMATS:
            raise ApiError(400, [{"loc": ["body", "response_format"], "msg": "an async answer holds no file: use url "
                                  "or b64_json", "type": "value_error"}])
        try:
            await check_images(images, settings.preprocess, [f"image[{i}]" for i in range(len(images))])
        except ApiError as err:
            raise ApiError(err.http_status, err.detail, param="image") from None
        asked = fingerprint(*images, prompt, family, req.model_dump(exclude={"image", "images", "timeout", "async_"}))
        # No await from the look-up to the remember: a retry sent meanwhile cannot make a job of its own.
        jobs = replayed_jobs(state, ENDPOINT, key, asked)
        replay = REPLAYED if jobs is not None else {}
        if jobs is None:
            jobs = submit_jobs(state.runner, wanted.replace(settings=settings, family=family), req.n)
            state.idempotency.remember(ENDPOINT, key, asked, [j.id for j in jobs])
        wants_async = req.async_ or "respond-async" in request.headers.get("prefer", "").lower()
        if wants_async or not await wait_jobs(jobs, req.timeout, request):
            gen = await envelope(jobs, output, "url", request)
            return JSONResponse(gen, status_code=202, headers={"Location": f"/v1/3d/generations/{gen['id']}",
                                                               **replay})
        err = failure(jobs, state.runner.outputs_dir)
        if err is not None:
            raise err
        if response_format not in RESPONSE_FORMATS:
            path = jobs[0].files.get(output)
            if path is None or not os.path.isfile(path):
                raise ApiError(500, f"job {jobs[0].id} finished without writing its {output} file", headers=NO_RETRY,
                               job_id=jobs[0].id)
            return FileResponse(path, media_type=content_type(path), filename=os.path.basename(path),
                                headers={"X-Job-Id": jobs[0].id, **replay})
        return JSONResponse(await envelope(jobs, output, response_format, request), headers=replay)

    @app.get("/3d/generations/{generation_id}", include_in_schema=False)
    @app.get("/v1/3d/generations/{generation_id}", tags=["openai"], summary="A generation: its status, then its files",
             description="`generation_id` is the `id` a POST answered (its job ids joined by '-'). The same envelope "
                         "as the POST: each job's progress while it runs, its file (url or b64_json) once done; a "
                         "failed job is answered with its error.",
             response_model=M["Generation"], responses=openai_error_responses(400, 401, 404, 499, 500, 503, 507))
    async def get_generation(generation_id: str, request: Request,
                             response_format: Literal[RESPONSE_FORMATS] = Query("url"),
                             output_format: Optional[Literal[FORMATS]] = Query(None)):
        state = api_state(request)
        ids = generation_id.split("-")
        jobs = [state.runner.get(i) if JOB_ID.match(i) else None for i in ids]
        if not ids or len(ids) > MAX_N or any(j is None for j in jobs):
            raise ApiError(404, f"no generation {generation_id!r}: give the `id` of a POST /v1/3d/generations answer")
        err = failure(jobs, state.runner.outputs_dir)
        if err is not None:
            raise err
        return JSONResponse(await envelope(jobs, output_format or default_output(jobs[0]), response_format, request,
                                           missing=404))
