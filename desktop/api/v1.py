"""The /v1 job API of the REST server: its routes (mounted by server.py; their pydantic schemas are v1_schemas.py's;
what it shares with the StableProjectorz endpoints comes from common.py).

`POST /v1/jobs` queues a job (multipart files `images`, or JSON with base64 `images`, plus any generation
setting or a preset; or a `prompt` instead of images: text mode; or a 3-D model `mesh` (a multipart file part, GLB,
glTF, OBJ, PLY or STL) plus a `prompt` or one image: a new look for that model, baked onto the model's own mesh — its
vertices, faces, UVs, scale and pivot kept, a new UV atlas where it has no usable UVs — unless `keep_mesh` is false,
which makes the shape again from the model's voxels; with `model_family` "trellis2" and one image, TRELLIS.2's PBR
materials on that mesh) and answers 202 at once; `GET /v1/jobs/{id}` reports its state and progress (stage,
step i/n, fraction, ETA, queue position); `GET /v1/jobs/{id}/files/{name}` downloads one of its files.
"""

import os
from typing import Annotated, Literal

from trellis.core import backends
from trellis.tuning import TUNING

from .common import (MAX_IMAGE_BYTES, ApiError, api_state, binary_content, build_settings, check_images, decode_base64,
                     error_responses, form_schema, form_values, not_queued, read_body, upload_bytes, validate)
from .families import check_family, family_info, runner_families
from .idempotency import REPLAYED, fingerprint, replayed_jobs, request_key
from .v1_schemas import MAX_MESH_UPLOAD, models
from ..families import loaded_family
from ..jobs.job import relative_paths
from ..jobs.kept_sampling import with_kept_words
from ..jobs.limits import job_limits
from ..jobs.request import FieldNames, JobRequest, RequestError
from ..settings import PRESETS

API_VERSION = "1"
PAGE, MAX_PAGE = 100, 1000              # GET /v1/jobs: jobs per page by default and at most (each a few KB)

# Content types of the files a job writes (by extension).
CONTENT_TYPES = {".glb": "model/gltf-binary", ".mp4": "video/mp4", ".ply": "application/octet-stream",
                 ".obj": "model/obj", ".mtl": "model/mtl", ".png": "image/png", ".jpg": "image/jpeg",
                 ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff",
                 ".json": "application/json", ".bin": "application/octet-stream",
                 ".stl": "model/stl", ".gltf": "model/gltf+json"}
_INLINE = {"video/mp4", "image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "application/json"}


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
            "progress": p, "error_kind": job.error_kind,
            "error": with_kept_words(job.remote_error(runner.outputs_dir), job, f"POST /v1/jobs/{job.id}/export"),
            "files": file_entries(job),
            "settings": d["settings"], "seed": job.seed, "device": job.device, "out_dir": job.out_dir,
            "created": job.created, "started": job.started, "finished": job.finished,
            "keep_result": job.keep_result, "result_kept": job.result_kept, "prompt": job.prompt,
            "model_family": job.family, "warnings": list(job.warnings), "limits": job_limits(job)}


# REST v1's words for a request's inputs, in its messages.
V1_NAMES = FieldNames(images="`images`", prompt="a `prompt`", mesh="`mesh`", family="`model_family`")


def checked_request(request: JobRequest) -> JobRequest:
    """`request` checked (its prompt stripped); 422 saying what is missing or wrong, a prompt's problem under its
    field."""
    try:
        return request.checked(V1_NAMES)
    except RequestError as err:
        if err.field == "prompt":
            raise ApiError(422, [{"loc": ["body", "prompt"], "msg": str(err), "type": "value_error"}]) from None
        raise ApiError(422, str(err)) from None


async def mesh_upload(value, name=None) -> tuple:
    """(file name, bytes) of an uploaded 3-D model (a file, or base64 text in a form)."""
    if isinstance(value, str):
        data = decode_base64(value, "mesh", "3-D model")
        filename = name or "mesh"
    else:
        data = await value.read(MAX_MESH_UPLOAD + 1)
        filename = name or value.filename or "mesh"
    if not data:
        raise ApiError(422, "mesh: the uploaded file is empty")
    if len(data) > MAX_MESH_UPLOAD:
        raise ApiError(413, f"mesh: the file is larger than {MAX_MESH_UPLOAD // 2 ** 20} MB; simplify the model first")
    return filename, data


async def check_mesh_upload(mesh: tuple) -> None:
    """422 with the reason when the 3-D model cannot be used (from its header, off the event loop)."""
    from starlette.concurrency import run_in_threadpool

    from ..jobs import InputError, check_mesh

    if len(mesh[1]) > MAX_MESH_UPLOAD:
        raise ApiError(413, f"mesh: the file is larger than {MAX_MESH_UPLOAD // 2 ** 20} MB; simplify the model first")
    try:
        await run_in_threadpool(check_mesh, mesh)
    except InputError as err:
        raise ApiError(422, f"mesh: {err}") from None


def parent_folder(job):
    """The folder that holds the job's own folder (None when it made none)."""
    return os.path.dirname(os.fspath(job.out_dir).rstrip("/\\")) if job.out_dir else None


def find_job(state, job_id: str):
    job = state.runner.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (GET /v1/jobs lists the jobs in this server's outputs folder)")
    return job


def add_job_routes(app) -> None:
    from fastapi import Query, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from ..jobs import JobState, NoResultError, UnknownJobError

    M = models()
    JobInfo, RequestModel, ExportRequest = M["JobInfo"], M["JobRequest"], M["ExportRequest"]

    @app.get("/v1/health", response_model=M["Health"], tags=["service"], summary="Server and queue state")
    async def health(request: Request):
        state = api_state(request)
        jobs = state.runner.list()
        families = runner_families(state.runner)
        return {"status": "ok", "api_version": API_VERSION, "model": state.runner.model_path,
                "model_family": loaded_family(state.runner).name, "families": families,
                "family_info": family_info(state.runner, families),
                "text_model": state.runner.text_model,
                "model_loaded": state.runner.model_loaded, "devices": list(state.runner.devices),
                "fast_paths": state.runner.fast_paths(), "attention": backends.describe_attention(TUNING.cudnn_min_tokens),
                "queued": sum(j.state == JobState.QUEUED for j in jobs),
                "running": sum(j.state == JobState.RUNNING for j in jobs), "auth_required": state.token is not None}

    @app.get("/v1/presets", response_model=M["Presets"], tags=["service"],
             summary="The presets' settings (and the server's default preset)")
    async def presets(request: Request):
        state = api_state(request)
        return {"default": state.defaults.preset,
                "presets": {name: build_settings({"preset": name}, state.defaults).to_dict() for name in PRESETS}}

    # Optional in the schema: generated clients of a required body with several content types fail to import.
    request_body = {
        "required": False,
        "content": {
            "multipart/form-data": {"schema": form_schema(RequestModel, {"images": "many", "mesh": "one"})},
            "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
        },
    }

    @app.post("/v1/jobs", status_code=202, response_model=JobInfo, tags=["jobs"], summary="Queue a job",
              description="Multipart form (files `images` and/or `mesh`, text `prompt`, setting fields) or JSON "
                          "(base64 `images` / `mesh`, `prompt`, settings). Give `images` (an asset from photos), "
                          "`prompt` (text mode), or `mesh` with `prompt` or one image (a new look for a 3-D model). "
                          "Inputs are checked at once (422 with the reason: an empty prompt, a file that is not an "
                          "image or not a 3-D model, a model with too many triangles); the job then waits in the "
                          "queue: poll GET /v1/jobs/{id}. The answer's Location header is that URL. A body is needed "
                          "(415 without one).",
              openapi_extra={"requestBody": request_body},
              responses=error_responses(400, 413, 415, 422, 429, 503, 507))
    async def create_job(request: Request):
        state = api_state(request)
        key = request_key(request)
        kind, body = await read_body(request)
        mesh = None
        if kind == "json":
            req = validate(RequestModel, body, strict=True)
            images = [decode_base64(text, f"images[{i}]") for i, text in enumerate(req.images or [])]
            if any(len(x) > MAX_IMAGE_BYTES for x in images):
                raise ApiError(413, f"an image is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB")
            if req.mesh is not None:
                mesh = (req.mesh_name or "mesh", decode_base64(req.mesh, "mesh", "3-D model"))
        else:
            files, meshes = body.get("images", []), body.get("mesh", [])
            if "prompt" in body and all(isinstance(v, str) and not v.strip() for v in body["prompt"]):
                checked_request(JobRequest(prompt=""))          # a blank prompt: said as the prompt's problem
            # Validated with placeholders for the files (their count is checked here, their bytes below).
            req = validate(RequestModel, {**form_values(body, skip=("images", "mesh")),
                                        **({"images": ["-"] * len(files)} if files else {}),
                                        **({"mesh": "-"} if meshes else {})})
            if len(meshes) > 1:
                raise ApiError(422, [{"loc": ["body", "mesh"], "msg": "one 3-D model per job", "type": "value_error"}])
            images = [await upload_bytes(v, f"images[{i}]") for i, v in enumerate(files)]
            if meshes:
                mesh = await mesh_upload(meshes[0], req.mesh_name)
        wanted = checked_request(JobRequest(images=images, prompt=req.prompt, mesh=mesh, keep_result=req.keep_result,
                                            family=req.model_family))
        prompt = wanted.prompt
        if wanted.kind == "generate":                        # an image job: 422 when the server runs the other
            check_family(state.runner, req.model_family)
        params = req.model_dump(exclude={"images", "keep_result", "prompt", "mesh", "mesh_name", "model_family"},
                                exclude_none=True)
        settings = build_settings(params, state.defaults)
        await check_images(images, settings.preprocess, [f"images[{i}]" for i in range(len(images))])
        if mesh is not None:
            await check_mesh_upload(mesh)
        asked = fingerprint(*images, *(mesh or ()), prompt, req.model_dump(exclude={"images", "mesh"}))
        replay = replayed_jobs(state, "/v1/jobs", key, asked)          # a retry of a request that made its job
        if replay is not None:
            return JSONResponse(job_info(replay[0], state.runner), status_code=202,
                                headers={"Location": f"/v1/jobs/{replay[0].id}", **REPLAYED})
        try:
            # a new look's model_family makes the look (trellis2: PBR materials from the image)
            job = state.runner.submit_request(wanted.replace(settings=settings))
        except RuntimeError as err:
            raise not_queued(err) from None
        except ValueError as err:                   # what the server's model cannot take (several images for TRELLIS.2)
            raise ApiError(422, str(err)) from None
        state.idempotency.remember("/v1/jobs", key, asked, [job.id])
        return JSONResponse(job_info(job, state.runner), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs", response_model=M["JobList"], tags=["jobs"], summary="The jobs, a page at a time",
             description=f"This run's jobs and the earlier ones in the outputs folder, oldest first (order=newest: "
                         f"newest first): `offset` skipped, then at most `limit` (default {PAGE}, at most {MAX_PAGE}). "
                         "Ask again with `next_offset` until it is null (oldest first, pages stay put as jobs come).")
    async def list_jobs(request: Request, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
                        offset: Annotated[int, Query(ge=0)] = 0, order: Literal["oldest", "newest"] = "oldest"):
        state = api_state(request)
        jobs = state.runner.list()[::-1 if order == "newest" else 1]
        end = min(len(jobs), offset + limit)
        return {"jobs": [job_info(j, state.runner) for j in jobs[offset:end]], "total": len(jobs), "offset": offset,
                "limit": limit, "next_offset": end if end < len(jobs) else None}

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
                          "texture size) from the decoded result of an ended job (kept in memory with "
                          "keep_result, or read from its folder's result.npz: a finished job's, or one's that failed "
                          "or was stopped after its sampling, whose error then says so), without sampling again. "
                          "409 while the job is queued or running, or when its sampling did not finish or its "
                          "folder keeps no result.npz; a damaged result.npz fails the export job with error_kind "
                          "input.",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/ExportRequest"}}}}},
              responses=error_responses(400, 404, 409, 413, 415, 422, 429, 503, 507))
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
            raise not_queued(err) from None
        return JSONResponse(job_info(job, state.runner), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    @app.post("/v1/jobs/{job_id}/rerun", status_code=202, response_model=JobInfo, tags=["jobs"],
              summary="Run an ended job again",
              description="Queues a new job with the inputs and settings of an ended job (done, failed, cancelled, or "
                          "interrupted by a stop of the server, queued ones included) and the seed it used. 409 while "
                          "it is queued or running, for an export job, or when its folder is damaged.",
              responses=error_responses(404, 409, 429, 503, 507))
    async def rerun_job(job_id: str, request: Request):
        from ..jobs import RerunError

        state = api_state(request)
        ended = find_job(state, job_id)
        try:
            job = await run_in_threadpool(state.runner.rerun, job_id)
        except UnknownJobError as err:
            raise ApiError(404, str(err)) from None
        except RerunError as err:      # the gone inputs named inside the outputs folder, not by this computer's paths
            raise ApiError(409, relative_paths(str(err), [state.runner.outputs_dir, parent_folder(ended)]),
                           job_id=job_id) from None
        except RuntimeError as err:
            raise not_queued(err) from None
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
