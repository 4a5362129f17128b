"""A worker: one thread on one device that takes jobs off the runner's queue, one at a time, and runs each through
its step (steps.py) with the job's context (context.JobContext, made here); then records how the job ended
(timings.json, or error.json with the failure's kind and message: failures.py). Asked to, between jobs, it warms
up (warmup.py). A failure of any kind fails that job only: the worker goes on with the next one.
"""
from __future__ import annotations

import contextlib
import sys
import time
import traceback
from typing import Optional

import torch

from trellis.core.concurrency import new_thread

from ..state_dir import state_dir
from ..families import DEFAULT_FAMILY, get_family
from . import steps
from .budget import job_memory
from .context import JobContext
from .failures import classify_failure, drop_tracebacks
from .folder import JobFolder, jsonable
from .job import Job, JobState, Progress
from .jobqueue import WARMUP, Entry
from .models import DevicePipelines
from .stage_times import StageTimes
from .stage_times_file import FILE_NAME, StageTimesFile, device_key
from .warmup import warm_up

# The steps of the kinds no image family runs; a generation, an export and a new look take their family's
# (`family_step`: a new look its look module's `variant`; one from a prompt, of no family, v1's, which runs the text model).
STEPS = {"text": steps.generate_text}
FAMILY_KINDS = ("generate", "export", "variant")
# The same steps of a generation or text job in two phases, for a batch: the first samples and returns the second, which
# writes the files (a family's steps without a two-phase generation run it in one: its first phase returns None).
PHASES = {"text": steps.text_in_phases}


def family_step(job: Job, phases: bool = False):
    """The step that runs `job`: of a generation or an export, its family's (families: each declares the module of
    its steps); of another kind, the kind's own. `phases`: a batch's two-phase step."""
    if job.kind not in FAMILY_KINDS:
        return (PHASES if phases else STEPS)[job.kind]
    import importlib

    family = get_family(job.family or DEFAULT_FAMILY)
    module = importlib.import_module(family.look_steps_module or family.steps_module if job.kind == "variant"
                                     else family.steps_module)
    if phases and job.kind == "generate":
        return getattr(module, "generate_in_phases", module.generate)
    return getattr(module, job.kind)


def gpu_name(device: str) -> Optional[str]:
    """The model of the CUDA GPU `device` names ("NVIDIA H200"); None for another device or one it cannot tell."""
    if not str(device).startswith("cuda"):
        return None
    try:
        return torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None
    except Exception:                     # no driver, a wrong index: the times are kept under "cuda" alone
        return None


class Worker:
    """`runner`: the JobRunner whose queue it serves; it reads the runner's public parts only (its queue, models,
    records, outputs folder, progress listener, kept results)."""

    def __init__(self, runner, device: str, name: str):
        self.runner, self.device = runner, device
        self.queue = runner.queue
        self.pipelines = DevicePipelines(runner.models, device)
        self.warm_request = None           # (precision, offload, forward) of a warm-up asked for
        self.warming = False
        self.warmup_timings: dict = {}     # seconds of the last warm-up: load_model, warm_run
        self.stage_times = StageTimes()    # this device's measured stage times: the next job's ETA
        self.stage_times_file: Optional[StageTimesFile] = None     # where they are kept (the thread's start)
        self.thread = new_thread(self.loop, name)

    @property
    def pipeline(self):
        """The image pipeline once loaded, else None."""
        return self.pipelines.image_pipeline

    # ------------------------------------------------------------------ loop
    def loop(self) -> None:
        if self.device.startswith("cuda") and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.set_device(torch.device(self.device))
        # ... as the app's earlier runs on this device left them, so its first job has an ETA too; read here, not in
        # the constructor: naming the GPU starts CUDA, which the app's start need not wait for
        self.stage_times_file = StageTimesFile(state_dir() / FILE_NAME, device_key(self.device, gpu_name(self.device)))
        self.stage_times_file.load(self.stage_times)
        while True:
            entry = self.queue.take(self.device, lambda: self.warm_request is not None)
            if entry is None:
                return
            if entry is WARMUP:
                self.warm()
                continue
            try:
                self.run(entry)
            except BaseException as err:       # never let the worker die
                print(f"trellis worker: internal error on job {entry.job.id}: {err!r}", file=sys.stderr)
                entry.job.error_kind = "internal"
                self.finish(entry, JobState.FAILED, f"internal error: {err}")

    def run(self, entry: Entry) -> None:
        job = entry.job
        job.device = self.device
        t_start = time.perf_counter()
        try:
            with job_memory(self.device, job.settings, job.timings):
                family_step(job)(self.context(entry), job)
        except BaseException as err:
            self.fail(entry, err)
            return
        finally:
            job.timings.setdefault("total", time.perf_counter() - t_start)
        if job.warnings:
            job.timings["warnings"] = list(job.warnings)
        self.write_timings(job)
        self.stage_times_file.save(self.stage_times)     # a job that ended well: what it taught outlives the app
        self.finish(entry, JobState.DONE)

    def context(self, entry: Entry) -> JobContext:
        """What the job's step needs: its models on this device, its folder, progress, cancel, a kept result."""
        job, runner = entry.job, self.runner
        # The folder of the job's image family (its steps are that family's: family_step).
        model_path = runner.models.folder_for(job.family) or runner.models.model_path

        def pipeline(which: str, progress) -> tuple:
            if which == "image":
                return self.pipelines.image(job, progress, job.family), model_path
            if which == "look":             # the family's new-look pipeline (TRELLIS.2's texturing)
                return self.pipelines.look(job, progress, job.family)
            return self.pipelines.text(job, which.split(":", 1)[1], progress)

        def folder() -> JobFolder:
            # Once its settings are written the folder names the job: its queue record can go (queued.py).
            entry.folder = JobFolder.create(runner.outputs_dir, job, on_settings=lambda: runner.records.ended(job))
            return entry.folder

        source = runner.get(job.source_id) if job.source_id else None
        if entry.source_result is None and entry.source_folder is not None:
            entry.source_result = entry.source_folder.read_result(self.device)
        return JobContext(device=self.device, model_path=model_path, outputs_dir=runner.outputs_dir,
                          pipeline=pipeline, background_remover=self.pipelines.background_remover, folder=folder,
                          cancelled=lambda: job.cancel_requested, keep=lambda result: runner.store_result(job, result),
                          lock=self.queue.lock, on_progress=runner.on_progress, source_result=entry.source_result,
                          source_files=dict(source.files) if source else {}, stage_times=self.stage_times)

    def finish(self, entry: Entry, state: str, error: Optional[str] = None, detail: Optional[str] = None) -> None:
        job = entry.job
        # Its final file is written: the folder is no longer this process's to finish.
        if entry.folder is not None:
            entry.folder.release()
        failure = None
        if not job.out_dir and (state == JobState.FAILED or job.error_kind == "interrupted"):
            # Ended before its folder: its queue record becomes that folder, so a restart still lists and reruns it.
            failure = {"state": "interrupted" if job.error_kind == "interrupted" else state, "error": error,
                       "kind": job.error_kind or "internal", "detail": detail, "timings": jsonable(job.timings)}
        self.runner.records.ended(job, failure)
        with self.queue.lock:
            job.state, job.error, job.detail = state, error, detail
            job.finished = time.time()
            entry.source_result = None        # an export job no longer needs the result it exported
            self.queue.ended(job.id)
            if state == JobState.DONE:
                job.progress = Progress("done", 1, 1, 1.0, 0.0, job.progress.elapsed_s, "")
        job.mark_ended()

    def fail(self, entry: Entry, err: BaseException) -> None:
        job = entry.job
        folder = JobFolder(job.out_dir) if job.out_dir else None
        error_file = str(folder.file("error")) if folder else None
        at = job.progress
        stage = at.label.lower() + (f" ({at.detail})" if at.detail else "") if at.stage not in ("queued", "done") else ""
        kind, message = classify_failure(err, self.runner.outputs_dir, self.device, error_file,
                                         vram_budget=job.settings.vram_budget, stage=stage)
        if entry.interrupted and kind not in ("oom", "disk"):
            # Stopped by the app's shutdown (whatever the stop broke on the way, e.g. an encoder child).
            kind, message = "interrupted", entry.interrupted
        state = JobState.CANCELLED if kind in ("cancelled", "interrupted") else JobState.FAILED
        detail = None
        if kind == "internal":
            detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        job.error_kind = kind
        # The tracebacks' frames hold the run's tensors: drop them before freeing memory.
        drop_tracebacks(err)
        del err
        if kind == "oom":
            self.pipelines.free_memory()
        if folder is not None:
            try:
                job.files.update(folder.write_error({"state": "interrupted" if kind == "interrupted" else state,
                                                     "error": message, "kind": kind, "detail": detail,
                                                     "timings": jsonable(job.timings)}))
            except OSError:
                pass          # e.g. the disk is full: the message still reaches the caller
        self.finish(entry, state, message, detail)

    def write_timings(self, job: Job) -> None:
        if not job.out_dir:
            return
        try:
            job.files.update(JobFolder(job.out_dir).write_timings(job.timings))
        except OSError:
            pass          # the assets are written; a missing timings file is not worth failing the job

    # ------------------------------------------------------------------ background warm-up
    def warm(self) -> None:
        """The warm-up asked for (warmup.warm_up); a job waiting for this worker, cancel or shutdown cuts it short."""
        with self.queue.lock:
            request, self.warm_request = self.warm_request, None
            self.warming = request is not None
        if request is None:
            return
        done = {}
        try:
            done = warm_up(self.pipelines, request, lambda: self.queue.warm_cancel.is_set() or self.queue.stopping,
                           lambda: self.queue.waits_for(self.device))
        finally:
            # A new load replaces the last warm-up's seconds; a warm run alone adds to them.
            self.warmup_timings = done if "load_model" in done else {**self.warmup_timings, **done}
            with self.queue.lock:
                self.warming = False
