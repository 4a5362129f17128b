"""One batch worker: a device, the pipelines loaded on it once, and items made as the app's jobs, two at a time.

`ItemWorker.process(task)` makes one item: the app's job of it (desktop/jobs: the same Job, JobContext, steps and
settings.json, through the app worker's dispatch ``family_step``, so that each item takes its family's steps) in a
folder in OUT/.batch-work, then moved onto OUT/<name> (manifest.commit), or, for a worker that cannot see the outputs
folder (a Ray node without the shared disk), its files returned as bytes. It is thread-safe and meant to be called
from two threads at once (two local threads, or a Ray actor with max_concurrency=2): overlap.Overlap writes one item's
files while the next one samples.

A task is a plain dict (it crosses process boundaries):
    name, kind ("image" | "prompt" | "look"), source (image path or prompt), mesh (a look's 3-D model path), family
    (the model family the item asked for; absent: the family of `model`), data (the image's bytes, for a look
    (image bytes, mesh bytes); None: read the paths), settings (GenerationSettings.to_dict(), the seed fixed), explicit
    (the settings the user set), seed_was_random, key (manifest.source_key), model, text_model (None: the published
    one of the settings' text_model_size), out (the outputs folder), return_files (True: return the files, write
    nothing in out)

A look item is the app's new-look job (the runner's JobRequest of kind "variant", the user's mesh kept) of its
family's look step (TRELLIS v1: colour, TRELLIS.2: PBR materials); an image item may name the other family too.

and the answer is a dict: state "done" | "failed", name, plus `duplicate` (another attempt had landed
first), files (return_files), kind and error (failed), retry (whether another attempt may succeed),
seconds {"sample", "waited" (sampled, for the writer), "export"}, device, pid, host.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from ..settings import GenerationSettings
from . import manifest
from .files import special_file_problem
from ..jobs.overlap import Overlap

# Failures that another attempt cannot fix (the same input fails the same way).
FINAL_KINDS = ("input", "empty", "model", "background_removal", "cancelled")


def _never() -> bool:
    return False


def item_memory(device: str, settings: GenerationSettings) -> dict:
    """timings.json's "memory" of a batch item: its VRAM budget and the device's peak since the worker's first item
    (items overlap: one's export runs beside the next one's sampling)."""
    import torch

    from trellis.core.device import memory_budget, peak_memory

    dev = torch.device(device)
    peaks = peak_memory(dev) or {"peak_allocated": None, "peak_reserved": None}
    return {"vram_budget_gib": settings.vram_budget, "held_to_bytes": memory_budget(dev),
            "peak_allocated_bytes": peaks["peak_allocated"], "peak_reserved_bytes": peaks["peak_reserved"],
            "peak_since": "worker"}


def item_job(task: dict):
    """The app's job of one item, from the runner's own request -> job step (jobs.request.job_for): a prompt is a text
    request, an image an image request, a look a new-look request of its mesh and image, each of the item's family
    (none named: the family of `model`, for a look too); the values the user set marked (for_device never lowers
    those). What its family cannot make, a family not installed here or a request that is wrong is an InputError: that
    item fails, not the batch. An image or mesh path that names a pipe or a device fails here: it would block the
    sampling, and every item behind it."""
    from ..families import family_folder, family_of_model
    from ..jobs.job import InputError
    from ..jobs.request import JobRequest, job_for

    settings = dataclasses.replace(GenerationSettings.from_dict(task["settings"]),
                                   explicit=frozenset(task.get("explicit") or ()))
    model = task["model"]
    own = family_of_model(model).name
    if task["kind"] == "prompt":
        request = JobRequest(prompt=task["source"], settings=settings, kind="text")
    else:
        look = task["kind"] == "look"
        data = task.get("data")
        image, mesh = (tuple(data) if look else (data, None)) if data is not None else (None, None)
        paths = ((task["source"], image, "an image file"), (task.get("mesh"), mesh, "a 3-D model file"))
        for path, given, what in paths:
            problem = special_file_problem(path, what) if path is not None and given is None else None
            if problem:
                raise InputError(problem)
        source = task["source"] if image is None else image
        family = task.get("family") or own
        if look:                                  # a mesh sent as bytes keeps its path as its name (settings.json)
            request = JobRequest(images=[source], mesh=task["mesh"] if mesh is None else (task["mesh"], mesh),
                                 settings=settings, family=family, kind="variant")
        else:
            request = JobRequest(images=[source], settings=settings, family=family, kind="generate")
    try:
        return job_for(request, lambda name: family_folder(name, model), own, refuse_not_installed=True)
    except ValueError as err:                     # FamilyRefusal, RequestError: the item's input, never the batch's
        raise InputError(str(err)) from None


def item_record(task: dict) -> dict:
    """settings.json's entries of a batch item besides its job's (JobContext.record): which item it is, whether its
    seed was drawn (by the driver: the job's own settings hold it fixed) and, for an image or a look, the path its
    image came from (a Ray worker is given its bytes; a look's step records its mesh's)."""
    record = {manifest.ITEM_KEY: {"name": task["name"], "key": task["key"], "kind": task["kind"]},
              "seed_was_random": bool(task.get("seed_was_random"))}
    if task["kind"] in ("image", "look"):
        record["inputs"] = [task["source"]]
    return record


class ItemWorker:
    def __init__(self, device: str, threads: int | None = None):
        self.device = device
        self.pid, self.host = os.getpid(), socket.gethostname()
        if threads:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        if device.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_device(torch.device(device))
        self.overlap = Overlap(device)
        self._models = None           # (model, text model) of the pipelines
        self._pipelines = None        # jobs.models.DevicePipelines, as an app worker's: each loaded once
        self._budget = None           # (the VRAM budget held to,) once an item set it

    # ------------------------------------------------------------------ one item
    def process(self, task: dict, data: bytes | None = None) -> dict:
        from ..jobs.failures import classify_failure, drop_tracebacks

        if data is not None:
            task = {**task, "data": data}
        answer = {"name": task["name"], "device": self.device, "pid": self.pid, "host": self.host,
                  "seconds": {}}
        to_return = bool(task.get("return_files"))
        work = None
        if not to_return and os.path.lexists(os.path.join(task["out"], task["name"])):
            # Landed already (this is a retry of an attempt whose worker was presumed dead): nothing to do.
            return {**answer, "state": "done", "duplicate": True}
        try:
            start = time.perf_counter()
            if to_return:
                work = tempfile.mkdtemp(prefix=f"trellis-batch-{task['name']}.")
            else:
                work = manifest.new_work_folder(task["out"], task["name"])
                manifest.write_owner(work, self.device)
            job = item_job(task)
            # A VRAM budget is the whole job's: such an item runs alone.
            alone = job.settings.vram_budget is not None and self.overlap.streams is not None
            answer["seconds"] = self.overlap.run(lambda: self.first_phase(task, job, work), alone=alone)
            self.write_timings(job, work, start)
            if to_return:
                answer["files"] = manifest.read_files(work)
            else:
                answer["duplicate"] = not manifest.commit(work, os.path.join(task["out"], task["name"]))
            answer["state"], answer["warnings"] = "done", list(job.warnings)
        except BaseException as err:          # an item's failure is the item's, never the worker's
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            kind, message = classify_failure(err, task.get("out"), self.device,
                                             vram_budget=task["settings"].get("vram_budget"))
            answer.update(state="failed", kind=kind, error=message, retry=kind not in FINAL_KINDS)
            drop_tracebacks(err)
            del err
            self.overlap.free_memory()
        finally:
            if work is not None and os.path.isdir(work):
                shutil.rmtree(work, ignore_errors=True)
        return answer

    def first_phase(self, task: dict, job, work):
        """The job's first phase (under the sampling's lock): the device held to the item's VRAM budget, then the
        app's steps up to the sampling. Returns the second phase (the files), or None."""
        from ..jobs.worker import family_step

        self.hold_budget(job.settings)
        job.device = self.device
        return family_step(job, phases=True)(self.context(task, job, work), job)

    def context(self, task: dict, job, work):
        """The job's context: this worker's pipelines (of the job's family: item_job checked it is installed), the
        item's work folder (made already) and its entries of settings.json; nothing is kept for exports and nothing
        cancels it (Ctrl-C stops the worker)."""
        from ..families import family_folder
        from ..jobs.context import JobContext
        from ..jobs.folder import JobFolder

        pipelines = self.pipelines(task)
        model_path = family_folder(job.family, task["model"]) if job.family else task["model"]

        def pipeline(which: str, progress) -> tuple:
            if which == "image":
                return pipelines.image(job, progress, job.family), model_path
            if which == "look":             # the family's new-look pipeline (TRELLIS.2's texturing)
                return pipelines.look(job, progress, job.family)
            return pipelines.text(job, which.split(":", 1)[1], progress)

        return JobContext(device=self.device, model_path=model_path, outputs_dir=Path(work).parent,
                          pipeline=pipeline, background_remover=pipelines.background_remover,
                          folder=lambda: JobFolder(work), cancelled=_never, keep=lambda result: None,
                          record=item_record(task))

    def write_timings(self, job, work, start: float) -> None:
        """timings.json, as the app's worker writes it after the step: the whole item's seconds, its memory."""
        from ..jobs.folder import JobFolder

        job.timings["total"] = time.perf_counter() - start
        job.timings["memory"] = item_memory(self.device, job.settings)
        job.files.update(JobFolder(work).write_timings(job.timings))

    # ------------------------------------------------------------------ pipelines, once each
    def pipelines(self, task: dict):
        """The pipelines of the task's models on this device (jobs.models.DevicePipelines: each loaded on first use,
        one text model at a time, only the one in use on the GPU)."""
        models = (task["model"], task.get("text_model"))
        if self._pipelines is None or self._models != models:
            from ..jobs.models import DevicePipelines, Models

            self._pipelines = None            # the old ones go first
            self._pipelines, self._models = DevicePipelines(Models(*models), self.device), models
        return self._pipelines

    def hold_budget(self, settings: GenerationSettings) -> None:
        """The device held to the item's VRAM budget, set again only when it changed (the app's worker sets it per
        job; here two items share the device, and the peak is the worker's since its first item)."""
        from trellis.core.device import start_peak_window

        from ..jobs.budget import hold_to_budget

        if self._budget != (settings.vram_budget,):
            hold_to_budget(self.device, settings)
            if self._budget is None:
                start_peak_window(self.device)
            self._budget = (settings.vram_budget,)
