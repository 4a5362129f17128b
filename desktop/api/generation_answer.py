"""The answers of the OpenAI-style endpoint (generations.py): a generation's envelope, one `data` entry per job (its
file as a URL or base64, an OBJ with its companions, or where the job stands), and the error of a job that ended
without its file.
"""
import asyncio
import base64
import os
import time
from typing import Optional

from .common import ERROR_STATUS, POLL_S, ApiError, api_state
from .v1 import content_type
from ..families import get_family, runner_family
from ..settings import FORMATS

# The answer of an ended job: sending the request again would run a whole new generation (and fail alike). The
# `openai` package retries 5xx answers unless told not to by this header.
NO_RETRY = {"x-should-retry": "false"}
# A job's state as the envelope says it.
STATUS = {"queued": "queued", "running": "in_progress", "done": "completed", "failed": "failed",
          "cancelled": "cancelled"}


def given_seed(job) -> "int | None":
    """The seed a job runs with: the one it used, or, while it waits, the one it was given (None: a random one)."""
    if job.seed is not None:
        return job.seed
    return None if job.settings.randomize_seed else job.settings.seed


def overall_status(jobs: list) -> str:
    states = {j.state for j in jobs}
    for state in ("failed", "cancelled", "running", "queued"):
        if state in states:
            return STATUS[state]
    return "completed"


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


async def item(job, output: str, response_format: str, base_url: str, missing: int = 500) -> dict:
    """One `data` entry: the job's file of `output` (a URL, or base64), or where the job stands. A done job without
    that file is answered with status `missing`."""
    out = {"job_id": job.id, "status": STATUS[job.state], "seed": given_seed(job), "output_format": output}
    if job.state != "done":
        return {**out, "progress": int(round(100 * job.progress.fraction))}
    path = job.files.get(output)
    if path is None or not os.path.isfile(path):
        made = ", ".join(sorted(k for k in job.files if k in FORMATS)) or "none"
        raise ApiError(missing, f"job {job.id} has no {output} file (its files: {made}; GET /v1/jobs/{job.id})",
                       job_id=job.id)
    out.update({k: v for k, v in (await one_file(job, path, response_format, base_url)).items() if k != "name"})
    if output == "obj":
        out["companions"] = [await one_file(job, p, response_format, base_url) for p in obj_companions(path)]
    return out


async def one_file(job, path: str, response_format: str, base_url: str) -> dict:
    """A file of the job's folder as a `data` entry holds it: its type and size, and its URL or its bytes."""
    from starlette.concurrency import run_in_threadpool

    name = os.path.basename(path)
    out = {"name": name, "content_type": content_type(name), "size_bytes": os.path.getsize(path)}
    if response_format == "b64_json":
        out["b64_json"] = await run_in_threadpool(_read, path)
    else:
        out["url"] = f"{base_url}/v1/jobs/{job.id}/files/{name}"
    return out


def obj_companions(obj_path: str) -> list:
    """The files beside an .obj that it names: its material libraries and the textures they name (plain names in
    the same folder only; the folder's writer makes no others)."""
    folder = os.path.dirname(obj_path)

    def named(path: str, keys: tuple) -> list:
        found = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and (parts[0] in keys or parts[0].startswith("map_")):
                    name = parts[-1]
                    if os.path.basename(name) == name and os.path.isfile(os.path.join(folder, name)):
                        found.append(os.path.join(folder, name))
        return found

    libraries = named(obj_path, ("mtllib",))
    textures = [t for lib in libraries for t in named(lib, ("norm", "bump", "disp"))]
    return list(dict.fromkeys(libraries + textures))


def model_name(job, runner) -> str:
    """The `model` an answer names for `job`: its family's public name (the first model name it answers to, as a
    request sends it), a prompt's text model (a local folder by its name: no path of the server's)."""
    if job.kind == "text":
        source = os.fspath(runner.text_model_for(job.settings.text_model_size))
        local = os.path.isabs(source) or os.path.isdir(source)
        return os.path.basename(os.path.normpath(source)) if local else source
    family = get_family(job.family) if job.family else runner_family(runner)
    return family.peer_names[0]


async def envelope(jobs: list, output: str, response_format: str, request, missing: int = 500) -> dict:
    state = api_state(request)
    first = jobs[0]
    base = str(request.base_url).rstrip("/")
    return {"id": "-".join(j.id for j in jobs), "object": "3d.generation", "created": int(first.created),
            "model": model_name(first, state.runner), "status": overall_status(jobs), "output_format": output,
            "data": [await item(j, output, response_format, base, missing) for j in jobs]}


def failure(jobs: list, outputs_dir) -> Optional[ApiError]:
    """The error answer of the first job that failed or was cancelled (None when none did); the runner's
    `outputs_dir`: what its paths are named relative to."""
    job = next((j for j in jobs if j.state in ("failed", "cancelled")), None)
    if job is None:
        return None
    kind = job.error_kind or ("cancelled" if job.state == "cancelled" else "internal")
    return ApiError(ERROR_STATUS.get(kind, 500), job.remote_error(outputs_dir) or f"job {job.id} {job.state}",
                    headers=NO_RETRY, error_kind=kind, job_id=job.id)


async def wait_jobs(jobs: list, timeout: float, request) -> bool:
    """Until every job has ended (True), `timeout` seconds passed or the client went away (False)."""
    deadline = time.monotonic() + timeout
    while any(j.state not in ("done", "failed", "cancelled") for j in jobs):
        if time.monotonic() >= deadline or await request.is_disconnected():
            return False
        await asyncio.sleep(POLL_S)
    return True


def default_output(job) -> str:
    """The file a GET without output_format gives: the job's first mesh format (else its first)."""
    formats = list((job.used_settings or job.settings).formats)
    return next((f for f in formats if f != "mp4"), formats[0] if formats else "glb")
