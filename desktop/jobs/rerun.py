"""Run an ended job again in one call: the same inputs and settings, and the seed it used (so the same asset),
from its folder (an earlier run's job, an interrupted one, one that never started before a stop) or, for a job
of this run that made no folder, from memory. `JobRunner.rerun(job_id)` and `POST /v1/jobs/{id}/rerun`."""
from __future__ import annotations

import os

from .job import Job, JobState, NoResultError, RerunError, UnknownJobError
from .request import JobRequest


def rerun(runner, job_id: str) -> Job:
    """Queue a new job like the ended job `job_id`; UnknownJobError, or RerunError saying why it cannot be."""
    job = runner.get(job_id)
    if job is None:
        raise UnknownJobError(f"no job {job_id!r}")
    if job.state not in JobState.FINISHED:
        raise RerunError(f"job {job_id} is {job.state}: only a job that has ended can be run again")
    if job.error_kind == "damaged":
        raise RerunError(f"job {job_id} cannot be run again: {job.error}")
    if job.kind == "export":
        # the same files again from the same source: its result in memory or in its folder (NoResultError if gone)
        from ..settings import EXPORT_FIELDS
        try:
            return runner.submit_export(job.source_id, **{k: getattr(job.settings, k) for k in EXPORT_FIELDS})
        except (UnknownJobError, NoResultError) as err:
            raise RerunError(f"job {job_id} is an export of job {job.source_id}, which cannot be exported again: "
                             f"{err}") from err
    settings = job.settings
    used = job.used_settings
    if used is not None and not used.randomize_seed:
        settings = settings.replace(seed=used.seed, randomize_seed=False)
    files = dict(job.files)
    images = [files[k] for k in sorted(files, key=lambda k: (len(k), k))
              if k == "input" or (k.startswith("input_") and k[6:].isdigit())] or list(job.inputs)
    mesh = files.get("mesh") or job.mesh
    missing = [str(x) for x in images + ([mesh] if isinstance(mesh, str) else [])
               if isinstance(x, str) and not os.path.isfile(x)]
    if missing:
        raise RerunError(f"job {job_id} cannot be run again: its input file(s) are gone ({', '.join(missing)})")
    if job.kind == "text":
        if not job.prompt:
            raise RerunError(f"job {job_id} cannot be run again: its prompt is not recorded")
        request = JobRequest(prompt=job.prompt)
    elif job.kind == "variant":
        if mesh is None or (job.prompt is None and not images):
            raise RerunError(f"job {job_id} cannot be run again: its 3-D model or its look is not recorded")
        photo = images[:1] if job.prompt is None else []          # a look from a photo: the family that made it
        request = JobRequest(mesh=mesh, prompt=job.prompt, images=photo, family=job.family if photo else None)
    else:
        if not images:
            raise RerunError(f"job {job_id} cannot be run again: its input images are not recorded")
        request = JobRequest(images=images, family=job.family)
    return runner.submit_request(request.replace(settings=settings, keep_result=job.keep_result))
