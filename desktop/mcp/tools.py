"""The MCP server's tools and resources, over one job runner (the same for stdio and HTTP; command.py and endpoint.py
choose where the runner and the transport come from).

Tools map onto the REST v1 job API: generate_3d (POST /v1/jobs with images or a prompt), new_look (with a mesh),
export_job (POST /v1/jobs/{id}/export), job_status (GET /v1/jobs/{id}), list_jobs (GET /v1/jobs), cancel_job (POST
/v1/jobs/{id}/cancel). Settings are the REST API's, by the same names. A tool that makes a job waits for it (unless
`wait` is false), sending progress notifications when the client asked for them; a call the client cancels cancels
its job. Results name the job's files as resource links (trellis://jobs/{job_id}/files/{name}, read with
resources/read, which answers each file's own MIME type), never their bytes: with their local path and, over HTTP,
their REST download URL (absolute, on the address the client reached; null over stdio, which has no URL).
The image model family is chosen as on REST: `settings: {"model_family": "trellis2"}`, or the argument model_family.
"""
import dataclasses
import os
import re
import stat
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import Field

from ..api.common import MAX_IMAGE_BYTES, MAX_IMAGES, ApiError, ServerDefaults, build_settings, decode_base64
from ..api.v1 import content_type, file_entries
from ..api.v1_schemas import MAX_MESH_UPLOAD
from ..jobs.job import JobState, Progress
from ..jobs.request import FieldNames, JobRequest, RequestError
from ..families import FAMILY_HELP, family_problem, looks_words
from ..settings import DESTINATIONS, EXPORT_FIELDS, FORMATS, MAX_SEED, PRESETS, field_names

FILE_URI = "trellis://jobs/{job_id}/files/{name}"
POLL_S = 0.1                  # how often a waiting tool looks at its job
LIST_MAX = 100
CANCEL_WAIT_S = 30.0          # how long cancel_job waits for a running job to stop at its next step

INSTRUCTIONS = ("Trellis Desktop makes textured 3-D assets (GLB, PLY, OBJ, STL, 3MF, USDZ, a preview MP4) from a "
                "photo or a text prompt, on this computer's GPU. generate_3d makes one; new_look gives a 3-D model "
                "a new texture; export_job writes other files from a finished job without sampling again. Results "
                "are resource links: read them with resources/read, or use the local path. Settings are the REST "
                "API's (/v1/presets lists them).")

Images = Annotated[Optional[list[str]], Field(description="base64 image files (PNG, JPEG, WebP; a data: URL prefix "
                                                          "is allowed); several are views of one object")]
Paths = Annotated[Optional[list[str]], Field(description="image files on the server's computer (stdio only)")]
Preset = Annotated[Optional[Literal[tuple(PRESETS)]], Field(description="quality preset (default: the server's)")]
Formats = Annotated[Optional[list[Literal[FORMATS]]], Field(description="files to write (default: the preset's)")]
Seed = Annotated[Optional[int], Field(ge=0, le=MAX_SEED, description="seed (default: a random one)")]
Destination = Annotated[Optional[Literal[tuple(DESTINATIONS)]], Field(description="web, game or print: that "
                                                                                  "destination's limits and files")]
Settings = Annotated[Optional[dict[str, Any]], Field(description="any other setting by its REST API name: "
                                                                 + ", ".join((*field_names(), "model_family")))]
Family = Annotated[Optional[str], Field(description=FAMILY_HELP)]
LOOK_FAMILY_HELP = (f"the model family that makes the look: {looks_words()} (default: TRELLIS v1); TRELLIS.2 takes "
                    "an image, not a prompt")
Wait = Annotated[bool, Field(description="wait for the job, with progress notifications (false: answer at once "
                                         "with its id; job_status follows it)")]


class ToolFailure(Exception):
    """What a tool says went wrong (the caller's input, a full queue, an unknown job): an error result."""


def tool_error(err: BaseException) -> ToolFailure:
    detail = err.detail if isinstance(err, ApiError) else str(err)
    if isinstance(detail, list):
        detail = "; ".join(str(p.get("msg", p)) for p in detail)
    return ToolFailure(str(detail))


# The tools' words for a request's inputs, in their messages (generate_3d makes no new look).
LOOK_NAMES = FieldNames(images="an image (image_base64 or image_path)", prompt="a prompt", mesh="the 3-D model",
                        family="model_family")
GENERATE_NAMES = dataclasses.replace(LOOK_NAMES, mesh=None)


def requested(request: JobRequest, names: FieldNames) -> JobRequest:
    """`request` checked (its prompt stripped); a ToolFailure saying what is missing or wrong."""
    try:
        return request.checked(names)
    except RequestError as err:
        raise ToolFailure(str(err)) from None


FILE_NAME = re.compile(r"^trellis://jobs/[^/]+/files/([^/]+)$")


def file_links(job, base_url: Optional[str] = None) -> list:
    """The job's files: name, kind, uri (resources/read), url (the REST download URL on `base_url`; None without
    one), path, size, type."""
    paths = {os.path.basename(p): p for p in dict(job.files).values()}
    return [{**entry, "uri": FILE_URI.format(job_id=job.id, name=entry["name"]), "path": paths.get(entry["name"]),
             "url": base_url.rstrip("/") + entry["url"] if base_url else None}
            for entry in file_entries(job)]


def base_url_of(ctx) -> Optional[str]:
    """The REST server's address as the client reached it (the HTTP request of the call), None over stdio."""
    try:
        request = ctx.request_context.request
    except (AttributeError, ValueError):
        return None
    return str(request.base_url) if request is not None and hasattr(request, "base_url") else None


def job_summary(job, runner, base_url: Optional[str] = None) -> dict:
    p = job.progress
    return {"job_id": job.id, "kind": job.kind, "state": job.state, "stage": p.stage,
            "percent": int(round(100 * p.fraction)), "error": job.remote_error(runner.outputs_dir),
            "error_kind": job.error_kind,
            "seed": job.seed, "prompt": job.prompt, "warnings": list(job.warnings), "out_dir": job.out_dir,
            "queue_position": runner.queue_position(job.id) if job.state == JobState.QUEUED else None,
            "created": job.created, "files": file_links(job, base_url)}


def job_result(job, runner, base_url: Optional[str] = None, ended_is_error: bool = True):
    """A tool's answer about one job: a line of text and a resource link per file; its summary structured. A failed
    or cancelled job is an error result where the tool was to make something (`ended_is_error`), not where it only
    reports on the job or cancelled it."""
    from mcp_types import CallToolResult, ResourceLink, TextContent

    info = job_summary(job, runner, base_url)
    if job.state == JobState.DONE:
        text = f"job {job.id} done: {', '.join(f['name'] for f in info['files'])}"
    elif job.state in JobState.FINISHED:
        text = f"job {job.id} {job.state}: {info['error'] or job.state}"
    else:
        text = f"job {job.id} {job.state} ({info['percent']}%, {job.progress.label})"
    links = [ResourceLink(type="resource_link", uri=f["uri"], name=f["name"], mime_type=f["content_type"],
                          size=f["size_bytes"], description=f"{f['kind']} of job {job.id}")
             for f in info["files"]] if job.state == JobState.DONE else []
    return CallToolResult(content=[TextContent(type="text", text=text), *links], structured_content=info,
                          is_error=ended_is_error and job.state in (JobState.FAILED, JobState.CANCELLED))


async def follow(job, runner, ctx) -> None:
    """Until the job ends, its progress sent as notifications (when the client asked for them). A call that is
    cancelled (the client's notifications/cancelled, a closed connection) cancels the job."""
    import anyio

    last = None
    try:
        while True:
            ended = job.state in JobState.FINISHED
            p = job.progress
            if ended and job.state == JobState.DONE:      # its last progress may be set just after its state
                p = Progress("done", 1, 1, 1.0)
            now = (p.stage, p.step, round(p.fraction, 3))
            if now != last:
                step = f" {p.step}/{p.total}" if p.total else ""
                await ctx.report_progress(round(100 * p.fraction, 1), 100, f"{p.label}{step}")
                last = now
            if ended:
                return
            await anyio.sleep(POLL_S)
    finally:
        if job.state not in JobState.FINISHED:
            runner.cancel(job.id)


def check_local_file(path: str, what: str) -> None:
    """A ToolFailure with the reason unless `path` (the tool argument `what`) is a regular file on this computer:
    missing, a folder, a FIFO or device (which would block a read, or never end it) are said as such."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ToolFailure(f"{what} {path!r}: no such file") from None
    except OSError as err:
        raise ToolFailure(f"{what} {path!r}: cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ToolFailure(f"{what} {path!r} is a folder: give an image file in it")
    if not stat.S_ISREG(info.st_mode):
        raise ToolFailure(f"{what} {path!r} is not a regular file (a pipe, device or socket): give a file")


def read_local_file(path: str, what: str, limit: int) -> bytes:
    """The bytes of a regular file on this computer (check_local_file), at most `limit`; a ToolFailure with the reason
    when it cannot be read."""
    check_local_file(path, what)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ToolFailure(f"{what} {path!r}: cannot be read ({err.strerror or err})") from None
    if len(data) > limit:
        raise ToolFailure(f"{what} {path!r} is larger than {limit // 2 ** 20} MB")
    if not data:
        raise ToolFailure(f"{what} {path!r} is empty")
    return data


def read_inputs(images, paths, local_files: bool) -> list:
    """Image inputs as bytes: from base64, or read from paths on this computer (stdio only)."""
    images, paths = images or [], paths or []
    if paths and not local_files:
        raise ToolFailure("image_path reads files on the server's computer, which only the stdio server does: send "
                          "the image as image_base64")
    if len(images) + len(paths) > MAX_IMAGES:
        raise ToolFailure(f"at most {MAX_IMAGES} views of one object")
    out = [decode_base64(t, f"image_base64[{i}]") for i, t in enumerate(images)]
    if any(len(x) > MAX_IMAGE_BYTES for x in out):
        raise ToolFailure(f"an image is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB")
    return out + [read_local_file(p, "image_path", MAX_IMAGE_BYTES) for p in paths]


def runner_getter(runner) -> Callable:
    """An async accessor of `runner`: a JobRunner, or a LateRunner still being made (waited for off the loop)."""
    async def get():
        import anyio

        from ..jobs.late import LateRunner, RunnerNotStarted

        if not isinstance(runner, LateRunner):
            return runner
        if not runner.ready():
            await anyio.to_thread.run_sync(runner.wait_done)
        try:
            return runner.wait(0)
        except RunnerNotStarted as err:
            raise ToolFailure(f"the job runner could not start: {err}") from None
    return get


def build_server(get_runner: Callable, defaults: Optional[ServerDefaults] = None, local_files: bool = True):
    """The MCPServer over the runner `await get_runner()` returns. `local_files`: tools may read paths on this
    computer (stdio: the client is a program of this user; not over HTTP, where it may be another computer)."""
    import anyio
    from mcp.server import MCPServer
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver.exceptions import ResourceError, ToolError
    from mcp_types import CallToolResult, ToolAnnotations

    from ..jobs import InputError, NoResultError, UnknownJobError, check_image, check_mesh
    from ..jobs.jobqueue import QueueFullError

    defaults = defaults or ServerDefaults()

    class Server(MCPServer):
        async def read_resource(self, uri, context=None):
            """The SDK's answer with each job file's own MIME type (a resource template declares one for all)."""
            import dataclasses

            out = await super().read_resource(uri, context)
            found = FILE_NAME.match(str(uri))
            if found is None or not isinstance(out, list):
                return out
            return [dataclasses.replace(c, mime_type=content_type(found.group(1))) for c in out]
    server = Server("trellis-desktop", title="Trellis Desktop", instructions=INSTRUCTIONS, log_level="WARNING")
    makes = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def settings_of(settings, **named):
        try:
            return build_settings({**(settings or {}), **{k: v for k, v in named.items() if v is not None}}, defaults)
        except ApiError as err:
            raise tool_error(err) from None

    async def family_of(settings, model_family):
        """(settings without model_family, the family asked for: the argument or settings' model_family; None: the
        server's own); a ToolFailure naming what is wrong, and how to install a family that is not here."""
        settings = dict(settings or {})
        named = settings.pop("model_family", None)
        if named is not None and model_family is not None and named != model_family:
            raise ToolFailure(f"model_family {model_family!r} and settings.model_family {named!r} disagree: give one")
        wanted = model_family if model_family is not None else named
        if wanted is None:
            return settings, None
        problem = family_problem(await get_runner(), wanted)
        if problem:
            raise ToolFailure(problem)
        return settings, wanted

    async def checked(fn, *args):
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except InputError as err:
            raise ToolFailure(str(err)) from None

    async def run(make: Callable, wait: bool, ctx) -> CallToolResult:
        runner = await get_runner()
        try:
            job = make(runner)
        except QueueFullError as err:
            raise ToolFailure(f"{err} (try again in {err.retry_after_s} s)") from None
        except (UnknownJobError, NoResultError, ValueError, RuntimeError) as err:
            raise ToolFailure(str(err)) from None
        if wait:
            await follow(job, runner, ctx)
        return job_result(job, runner, base_url_of(ctx))

    def failures(fn):
        """A tool whose ToolFailure / ApiError is the caller's error result, in words; its description (the
        docstring) one paragraph, without the source's indentation."""
        import functools

        @functools.wraps(fn)
        async def wrapped(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except (ToolFailure, ApiError) as err:
                raise ToolError(str(tool_error(err))) from None
        wrapped.__doc__ = " ".join((fn.__doc__ or "").split())
        return wrapped

    @server.tool(annotations=makes)
    @failures
    async def generate_3d(ctx: Context, prompt: Annotated[Optional[str], Field(
                              description="describe the object (text mode; its model downloads on first use)")] = None,
                          image_base64: Images = None, image_path: Paths = None, preset: Preset = None,
                          formats: Formats = None, seed: Seed = None, destination: Destination = None,
                          model_family: Family = None, settings: Settings = None,
                          wait: Wait = True) -> CallToolResult:
        """Make a 3-D asset from a photo (several photos: views of one object) or from a text prompt. The answer
        links the files (model.glb, ...)."""
        images = await anyio.to_thread.run_sync(read_inputs, image_base64, image_path, local_files)
        settings, family = await family_of(settings, model_family)
        wanted = requested(JobRequest(images=images, prompt=prompt, family=family), GENERATE_NAMES)
        made = settings_of(settings, preset=preset, formats=formats, seed=seed, destination=destination)
        for image in images:
            await checked(check_image, image, made.preprocess)
        return await run(lambda r: r.submit_request(wanted.replace(settings=made)), wait, ctx)

    @server.tool(annotations=makes)
    @failures
    async def new_look(ctx: Context, mesh_base64: Annotated[Optional[str], Field(
                           description="the 3-D model (GLB, OBJ, PLY or STL), base64")] = None,
                       mesh_name: Annotated[Optional[str], Field(description="its file name, e.g. chair.glb")] = None,
                       mesh_path: Annotated[Optional[str], Field(description="the 3-D model's file on the server's "
                                                                             "computer (stdio only)")] = None,
                       prompt: Annotated[Optional[str], Field(description="describe the new look")] = None,
                       image_base64: Images = None, image_path: Paths = None,
                       keep_mesh: Annotated[Optional[bool], Field(description="keep the model's own mesh and UVs "
                                                                              "(default true)")] = None,
                       preset: Preset = None, formats: Formats = None, seed: Seed = None,
                       model_family: Annotated[Optional[str], Field(description=LOOK_FAMILY_HELP)] = None,
                       settings: Settings = None, wait: Wait = True) -> CallToolResult:
        """Give a 3-D model a new look (texture) from a prompt or one image; its shape is kept (model_family
        trellis2: PBR materials from the image)."""
        if (mesh_base64 is None) == (mesh_path is None):
            raise ToolFailure("give the 3-D model as mesh_base64 or mesh_path (one of them)")
        if mesh_path is not None and not local_files:
            raise ToolFailure("mesh_path reads a file on the server's computer, which only the stdio server does: "
                              "send mesh_base64")
        if mesh_path is not None:
            check_local_file(mesh_path, "mesh_path")
        images = await anyio.to_thread.run_sync(read_inputs, image_base64, image_path, local_files)
        mesh = os.path.abspath(mesh_path) if mesh_path is not None else \
            (mesh_name or "mesh", decode_base64(mesh_base64, "mesh_base64", "3-D model"))
        if isinstance(mesh, tuple) and len(mesh[1]) > MAX_MESH_UPLOAD:
            raise ToolFailure(f"the 3-D model is larger than {MAX_MESH_UPLOAD // 2 ** 20} MB: simplify it first")
        settings, family = await family_of(settings, model_family)
        wanted = requested(JobRequest(mesh=mesh, prompt=prompt, images=images, family=family), LOOK_NAMES)
        made = settings_of(settings, preset=preset, formats=formats, seed=seed, keep_mesh=keep_mesh)
        await checked(check_mesh, mesh)
        for image in images:
            await checked(check_image, image, made.preprocess)
        return await run(lambda r: r.submit_request(wanted.replace(settings=made)), wait, ctx)

    @server.tool(annotations=makes)
    @failures
    async def export_job(ctx: Context, job_id: str, formats: Formats = None, destination: Destination = None,
                         texture_size: Annotated[Optional[int], Field(description="texture side in pixels")] = None,
                         settings: Annotated[Optional[dict[str, Any]], Field(
                             description="other export settings: " + ", ".join(EXPORT_FIELDS))] = None,
                         wait: Wait = True) -> CallToolResult:
        """Write other files from a finished job (another format, texture size, destination) without sampling
        again."""
        changes = {**(settings or {}), **{k: v for k, v in dict(formats=formats, destination=destination,
                                                                 texture_size=texture_size).items() if v is not None}}
        if "formats" in changes:
            changes["formats"] = tuple(changes["formats"])
        return await run(lambda r: r.submit_export(job_id, **changes), wait, ctx)

    @server.tool(annotations=reads)
    @failures
    async def job_status(ctx: Context, job_id: str) -> CallToolResult:
        """Where a job stands (queued, running with its progress, done with its files, failed with the reason)."""
        runner = await get_runner()
        job = runner.get(job_id)
        if job is None:
            raise ToolFailure(f"no job {job_id!r} (list_jobs lists them)")
        return job_result(job, runner, base_url_of(ctx), ended_is_error=False)

    @server.tool(annotations=reads)
    @failures
    async def list_jobs(ctx: Context,
                        limit: Annotated[int, Field(ge=1, le=LIST_MAX, description="how many, newest first")] = 10,
                        state: Annotated[Optional[Literal["queued", "running", "done", "failed", "cancelled"]],
                                         Field(description="only jobs in this state")] = None) -> dict[str, Any]:
        """The most recent jobs (this run's and the earlier ones in the outputs folder), newest first."""
        runner = await get_runner()
        jobs = [j for j in reversed(runner.list()) if state is None or j.state == state]
        base = base_url_of(ctx)
        return {"total": len(jobs), "jobs": [job_summary(j, runner, base) for j in jobs[:limit]]}

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                             open_world_hint=False))
    @failures
    async def cancel_job(ctx: Context, job_id: str) -> CallToolResult:
        """Cancel a queued or running job (a running one stops at its next step)."""
        runner = await get_runner()
        job = runner.get(job_id)
        if job is None:
            raise ToolFailure(f"no job {job_id!r} (list_jobs lists them)")
        if not runner.cancel(job_id):
            raise ToolFailure(f"job {job_id} has already ended ({job.state})")
        with anyio.move_on_after(CANCEL_WAIT_S):          # then answered as it stands: job_status follows it
            while job.state not in JobState.FINISHED:
                await anyio.sleep(POLL_S)
        return job_result(job, runner, base_url_of(ctx), ended_is_error=False)        # the cancel worked

    @server.resource(FILE_URI, name="job file", mime_type="application/octet-stream",
                     description="a file of a job (model.glb, preview.mp4, ...), as its resource link names it")
    async def job_file(job_id: str, name: str) -> bytes:
        runner = await get_runner()
        job = runner.get(job_id)
        path = next((p for p in dict(job.files).values() if os.path.basename(p) == name), None) if job else None
        if path is None or not os.path.isfile(path):
            raise ResourceError(f"job {job_id} has no file {name!r}")
        return await anyio.to_thread.run_sync(_read_bytes, path)

    return server


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()

