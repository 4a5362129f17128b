"""The runner: takes jobs (submit_request, submit: images, submit_export, rerun), keeps the decoded results
that later exports need, cancels, warms up and shuts down. Its queue (jobqueue.py) is served by one worker thread
per device (worker.py), each loading its pipelines once, lazily (models.py), and running one job at a time
through steps.py.

The servers start a background warm-up (`start_warmup`, warmup.py): each worker loads its pipeline at once and,
on a GPU, runs one tiny generation. It is the worker's own first task, so a job submitted meanwhile waits for the
load (never a second one) and cuts the tiny run short at its next step; `cancel_warmup` and `shutdown` stop it
the same way.
"""
from __future__ import annotations

import collections
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import torch
from trellis.export import NOT_REGULAR_FILE

from ..options import DEFAULT_MODEL
from ..settings import EXPORT_FIELDS, GenerationSettings
from . import kept_sampling, queued, recovery, rerun
from .folder import JobFolder
from .job import Job, JobState, NoResultError, UnknownJobError
from .jobqueue import Entry, JobQueue
from .request import JobRequest, job_for
from ..families import budget_floor, family_of_result
from .models import Models
from .warmup import warm_steps  # noqa: F401  (tests read it here)
from .worker import Worker


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_devices(devices: list) -> None:
    """ValueError with the fix when a requested device does not exist here."""
    for dev in devices:
        try:
            d = torch.device(dev)
        except RuntimeError:
            raise ValueError(f"unsupported device {dev!r}: use cpu, cuda or cuda:N") from None
        if d.type == "cpu":
            continue
        if d.type != "cuda":
            raise ValueError(f"unsupported device {dev!r}: use cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise ValueError(f"device {dev!r} requested but CUDA is not available here (no NVIDIA GPU, no driver, "
                             "or a CPU-only PyTorch); use the CPU instead (--device cpu).")
        count = torch.cuda.device_count()
        if d.index is not None and d.index >= count:
            raise ValueError(f"device {dev!r} requested but this computer has {count} GPU(s) "
                             f"(numbered 0..{count - 1}).")


class JobRunner:
    """Queue + workers. `gpus` (a list of CUDA ordinals) starts one worker per GPU; otherwise one
    worker runs on `device` (default "cuda" when available, else "cpu"). `keep_results`: how many
    decoded results of `keep_result` jobs stay in memory for exports (the oldest is dropped first).
    `on_progress(job, progress)`, if given, is called in the worker's thread on every progress report
    (`Progress`), e.g. to watch how often progress moves. On a CPU a job runs with
    `settings.for_device("cpu")` (smaller bake renders and preview; settings.json records the change).

    On start (`recover=True`) the outputs folder is put in order (recovery.py): folders of jobs that
    never finished are marked interrupted, stale partial and temp files removed, and the earlier jobs
    are listed again (`get`, `list`; `self.recovery` says what was done). Each accepted job is written down
    at once (`self.records`, queued.py), so that one still waiting when the app stops is known after it as an
    interrupted job; `rerun(job_id)` queues an ended job again.

    The workers read `queue` (jobqueue.JobQueue: the waiting jobs, the runner's record of each, the lock),
    `models` (models.Models: the model paths and factories), `records`, `outputs_dir` and `on_progress`, and
    hand kept results to `store_result`. With `max_queued`, a job submitted while that many wait is refused with
    jobqueue.QueueFullError (a RuntimeError), before anything is written (the servers' bound; batches queue all)."""

    def __init__(self, model_path: str = DEFAULT_MODEL, outputs_dir="outputs", device: Optional[str] = None,
                 gpus: Optional[list] = None, pipeline_factory: Optional[Callable] = None, keep_results: int = 1,
                 on_progress: Optional[Callable] = None, recover: bool = True, text_model: Optional[str] = None,
                 text_pipeline_factory: Optional[Callable] = None, max_queued: Optional[int] = None):
        # Prompts: this text pipeline (folder or hub repo) for every size, or (None) the size's published one.
        self.models = Models(model_path, text_model, pipeline_factory, text_pipeline_factory)
        self.model_path, self.text_model = self.models.model_path, self.models.text_model
        self.on_progress = on_progress
        self.keep_results = max(0, int(keep_results))
        self.outputs_dir = Path(outputs_dir).expanduser().resolve()
        if gpus:
            self.devices = [f"cuda:{int(g)}" for g in gpus]
        else:
            self.devices = [device or default_device()]
        if pipeline_factory is None:
            check_devices(self.devices)
        self.queue = JobQueue(max_waiting=max_queued)
        self._jobs: dict = {}
        self._kept: collections.OrderedDict = collections.OrderedDict()    # job id -> its kept result
        self.recovery = recovery.recover_outputs(self.outputs_dir) if recover else recovery.Recovery()
        self.records = queued.QueueRecords(self.outputs_dir, self.model_path)     # accepted jobs, on disk
        for job in self.recovery.jobs:
            self._jobs[job.id] = job
        self._workers = []
        for i, dev in enumerate(self.devices):
            w = Worker(self, dev, name=f"trellis-worker-{i}")
            self._workers.append(w)
            w.thread.start()

    # ------------------------------------------------------------------ public API
    def submit(self, images, settings: Optional[GenerationSettings] = None, keep_result: bool = False,
               family: Optional[str] = None) -> Job:
        """Queue an image job: one image, or several views of one object (`submit_request` of those images)."""
        return self.submit_request(JobRequest(images=images, settings=settings, keep_result=keep_result,
                                              family=family, kind="generate"))

    def submit_request(self, request: JobRequest) -> Job:
        """Queue the job `request` asks for (request.py: images, a prompt, or a new look for a 3-D model). Returns
        at once. RequestError (a ValueError) says what is missing or wrong. With `keep_result`, the decoded result
        stays in memory after the job for `submit_export`. An image job's `family`: "trellis" or "trellis2" (None:
        the model's own); the other family's pipeline replaces the loaded one when the job starts (the job fails
        with what to do where it is not installed). A new look's `family` makes the look (None: TRELLIS v1, colour;
        "trellis2": PBR materials from an image); one that makes none, a prompt it cannot take or a family not
        installed here is refused at once (FamilyRefusal / ValueError). Its file is checked when the job starts
        (meshes.check_mesh; callers that want to refuse a bad file at once call it first). The job is request.job_for's,
        as a batch item's is."""
        job = job_for(request, self.models.folder_for, self.models.family)
        self._enqueue(Entry(job))
        return job

    def text_model_for(self, size: str) -> str:
        """The text pipeline a job of `size` uses: --text-model when given, else the published one of that size
        (in the app's models folder once downloaded: models.Models.load_text)."""
        return self.models.text_model_for(size)

    def submit_export(self, source_id: str, **changes) -> Job:
        """Queue an export job: files written from the result of the ended job `source_id` — kept in memory
        (keep_result), or else read from its folder's result.npz (any finished job, also of an earlier run, and one
        stopped or failed after its sampling: kept_sampling.py) — with
        the source's settings changed by `changes` (only the fields of EXPORT_FIELDS, e.g. formats,
        texture_size, simplify). Raises UnknownJobError, NoResultError (the source has not ended, or neither
        memory nor its folder holds its result) or ValueError (a bad change)."""
        sampling = sorted(set(changes) - set(EXPORT_FIELDS))
        if sampling:
            raise ValueError(f"an export cannot change {', '.join(sampling)} (only {', '.join(EXPORT_FIELDS)}); "
                             "submit a new job to sample again")
        with self.queue.lock:
            source = self._jobs.get(source_id)
            if source is None:
                raise UnknownJobError(f"no job {source_id!r}")
            base = source.used_settings
            if source.kind == "export":
                # An export's result is its source's: exported again from there, with the export's settings.
                origin = self._jobs.get(source.source_id) if source.source_id else None
                if origin is None:
                    raise NoResultError(f"job {source_id} is an export of job {source.source_id}, which is not "
                                        "known here (its folder was moved or removed)")
                source = origin
            result = self._kept.get(source.id)
        source_id = source.id
        source_folder = None
        if result is None:
            refusal = kept_sampling.export_refusal(source)    # a stopped job's finished sampling exports too
            if refusal:
                raise NoResultError(refusal)
            kept = JobFolder(Path(source.out_dir)) if source.out_dir else None
            path = kept.file("result") if kept is not None else None
            if path is None or not path.is_file():
                if path is not None and path.exists():
                    # the export command's words (result_file.read_members'), without the path: REST answers them too
                    raise NoResultError(f"job {source_id} cannot be exported: its result.npz is not a usable kept "
                                        f"result: {NOT_REGULAR_FILE}; run the job again")
                raise NoResultError(f"job {source_id} has no result to export: not in memory, and its folder keeps "
                                    "no result.npz (a job of an older version, or the file was removed); run the "
                                    "job again")
            source_folder = kept
        if base is None:
            raise NoResultError(f"job {source_id} has no recorded settings to export with")
        settings = base.replace(**changes)
        # the family whose result this is (in memory, else its result.npz), and its memory floor for the export
        family = family_of_result(result) if result is not None else source_folder.result_family()
        settings, warning = budget_floor(family, settings)
        job = Job(id=uuid.uuid4().hex, inputs=list(source.inputs), settings=settings, kind="export",
                  source_id=source_id, family=family.name)
        if warning:
            job.warn(warning)
        self._enqueue(Entry(job, device=source.device if result is not None else None, source_result=result,
                            source_folder=source_folder))
        return job

    def submit_export_from(self, folder, **changes) -> Job:
        """`submit_export` of the job whose folder is `folder`, also one outside this runner's outputs folder (the
        CLI's `export JOB_FOLDER`): the folder's job becomes known to this runner first."""
        source = recovery.job_from_folder(Path(folder)) if Path(folder).is_dir() else None
        if source is None or not JobFolder(Path(folder)).file("settings").is_file():
            raise UnknownJobError(f"{folder} is not a job folder (no settings.json)")
        with self.queue.lock:
            known = self._jobs.setdefault(source.id, source)
        return self.submit_export(known.id, **changes)

    def release_result(self, job_id: str) -> bool:
        """Drop a kept result (its memory is freed once no export job uses it). False if none was kept."""
        with self.queue.lock:
            if self._kept.pop(job_id, None) is None:
                return False
            self._jobs[job_id].result_kept = False
        return True

    def store_result(self, job: Job, result: dict) -> None:
        """Keep the decoded result of a finished `keep_result` job for exports (its worker calls it); the oldest
        kept result goes beyond `keep_results`."""
        if self.keep_results == 0:
            return
        with self.queue.lock:
            self._kept[job.id] = result
            job.result_kept = True
            while len(self._kept) > self.keep_results:
                old, _ = self._kept.popitem(last=False)
                self._jobs[old].result_kept = False

    def fast_paths(self) -> dict:
        """Per device, one line: whether the renderers' fast kernels run there and, if not, why they do not
        (`trellis.fastpaths.describe`; a kernel that failed in this process shows as switched off)."""
        from trellis import fastpaths

        return {dev: fastpaths.describe(dev) for dev in self.devices}

    def say_fast_paths(self, stream=None) -> None:
        """The fast-path line of every device, once, for the log of a starting server."""
        for dev, line in self.fast_paths().items():
            print(f"device {dev}: {line}", file=stream or sys.stderr, flush=True)
        from trellis.core import backends

        override = backends.attention_override_line()
        if override:
            print(override, file=stream or sys.stderr, flush=True)

    def start_warmup(self, precision: str = "auto", offload: str = "auto", forward: Optional[bool] = None) -> None:
        """Warm up in the background, now: every worker loads its pipeline and then (`forward`; default: on a
        GPU only, where kernels compile on first use) runs one tiny generation with this precision / offload,
        the servers' defaults. Returns at once. A job submitted meanwhile waits for the load and stops the tiny
        run at its next step; a failed warm-up only logs a warning (the first job then loads and reports)."""
        with self.queue.wakeup:
            if self.queue.stopping:
                return
            self.queue.warm_cancel.clear()
            for w in self._workers:
                if w.pipeline is None or forward is not False:
                    w.warm_request = (precision, offload, forward)
            self.queue.wakeup.notify_all()

    def cancel_warmup(self) -> None:
        """Stop a background warm-up at its next step (a load under way finishes first)."""
        with self.queue.lock:
            self.queue.warm_cancel.set()
            for w in self._workers:
                w.warm_request = None

    @property
    def warming_up(self) -> bool:
        """True while a worker is asked to warm up or is warming up."""
        return any(w.warm_request is not None or w.warming for w in self._workers)

    @property
    def model_loaded(self) -> bool:
        """True once a worker has loaded the pipeline."""
        return any(w.pipeline is not None for w in self._workers)

    @property
    def loaded_family(self) -> str:
        """The image family loaded now (the first worker's that holds a pipeline; before any, the model's own)."""
        return next((f for f in (w.pipelines.image_family for w in self._workers) if f), self.models.family)

    def families(self) -> list:
        """The image families a job can ask for here: the model's own, and the other one where it is installed."""
        return self.models.families()

    def rerun(self, job_id: str) -> Job:
        """Queue the ended job `job_id` again: its inputs, settings and seed (rerun.py)."""
        return rerun.rerun(self, job_id)

    def _enqueue(self, entry: Entry) -> None:
        job = entry.job
        if self.queue.stopping:
            raise RuntimeError("the job runner is shut down")
        with self.queue.lock:
            self.queue.check_room()         # a full queue (max_queued) refuses before anything is written
        self.records.add(job)               # written down first: known after any stop once accepted
        with self.queue.lock:
            try:
                if self.queue.stopping:
                    raise RuntimeError("the job runner is shut down")
                self.queue.put(entry)
            except RuntimeError:            # stopped, or filled up meanwhile: never accepted
                job.state = JobState.CANCELLED
                self.records.ended(job)
                raise
            self._jobs[job.id] = job

    def get(self, job_id: str) -> Optional[Job]:
        with self.queue.lock:
            return self._jobs.get(job_id)

    def list(self) -> list:
        with self.queue.lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def queue_position(self, job_id: str) -> Optional[int]:
        """0 for the next job to start, None when not queued."""
        return self.queue.position(job_id)

    def cancel(self, job_id: str) -> bool:
        """Queued: removed from the queue (state cancelled). Running: stops at the next step. Returns
        False for an unknown or already finished job."""
        with self.queue.lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in JobState.FINISHED:
                return False
            job.request_cancel()
            if job.state != JobState.QUEUED:
                return True
            entry = self.queue.unqueue(job_id)
            job.error = job.error_kind = "cancelled"
            if entry.interrupted:
                job.error, job.error_kind = entry.interrupted, "interrupted"
            job.finished = time.time()
            self.queue.ended(job_id)
            # Before the state shows it ended: whoever sees it ended sees its record gone (or its folder made).
            self.records.ended(job)
            job.state = JobState.CANCELLED
        job.mark_ended()
        return True

    def shutdown(self, cancel: bool = True, wait: bool = True, timeout: Optional[float] = None,
                 reason: Optional[str] = None) -> None:
        """Stop the workers. With `cancel`, queued jobs are cancelled and running ones asked to stop;
        otherwise the queue is worked off first. With `reason` (e.g. "the server received SIGTERM"),
        those jobs end as interrupted (error_kind "interrupted", error.json `state: interrupted`)
        rather than cancelled."""
        with self.queue.wakeup:
            self.queue.stopping = True
            self.queue.warm_cancel.set()
            waiting = list(self.queue.waiting) if cancel else []
            running = [e for e in self.queue.live.values() if e.job.state == JobState.RUNNING] if cancel else []
            if reason:
                for entry in waiting:
                    entry.interrupted = queued.interrupted_message(reason, entry.job.id)
                for entry in running:
                    entry.interrupted = recovery.INTERRUPTED_MESSAGE.format(how=reason)
            self.queue.wakeup.notify_all()
        for entry in waiting + running:
            self.cancel(entry.job.id)
        for job_id in list(self._kept):
            self.release_result(job_id)
        if wait:
            for w in self._workers:
                w.thread.join(timeout)

    @property
    def stopped(self) -> bool:
        """True once every worker has ended (after shutdown: the queue is empty and no job runs)."""
        return not any(w.thread.is_alive() for w in self._workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

