"""The queue and its workers: a FIFO of jobs served by one worker thread per device.

The runner takes jobs (submit, submit_export), keeps the decoded results that later exports need, and
cancels or shuts down; each worker loads the pipeline once, lazily, and runs one job at a time through
steps.py (generate, export), then records how it ended (timings.json, or error.json with the failure's
kind and message: failures.py).

The servers start a background warm-up (`start_warmup`): each worker loads its pipeline at once and, on a GPU,
runs one tiny generation to bring up CUDA, cuBLAS and the Triton kernels, while the user is still picking an
image. It is the worker's own first task, so a job submitted meanwhile waits for the load (never a second
one) and cuts the tiny run short at its next step; `cancel_warmup` and `shutdown` stop it the same way.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import os
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable, Optional

import torch

from trellis.core.callbacks import Cancelled

from ..options import DEFAULT_MODEL
from ..settings import EXPORT_FIELDS, GenerationSettings, check_prompt
from . import queued, recovery, rerun, steps
from .failures import classify_failure, drop_tracebacks, is_disk_full, is_oom, model_load_message
from .folder import JobFolder, jsonable
from .job import Job, JobState, ModelLoadError, NoResultError, Progress, UnknownJobError
from .warmup import warm_run, warm_steps  # noqa: F401  (warm_steps: tests read it here)


_WARMUP = object()                          # what _next_job hands a worker that is asked to warm up


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_devices(devices: list) -> None:
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
    interrupted job; `rerun(job_id)` queues an ended job again."""

    def __init__(self, model_path: str = DEFAULT_MODEL, outputs_dir="outputs", device: Optional[str] = None,
                 gpus: Optional[list] = None, pipeline_factory: Optional[Callable] = None, keep_results: int = 1,
                 on_progress: Optional[Callable] = None, recover: bool = True, text_model: Optional[str] = None,
                 text_pipeline_factory: Optional[Callable] = None):
        self.model_path = os.fspath(model_path)
        # Prompts: this text pipeline (folder or hub repo) for every size, or (None) the size's published one.
        self.text_model = os.fspath(text_model) if text_model else None
        self._text_factory = text_pipeline_factory or self._load_text_pipeline
        self.on_progress = on_progress
        self.keep_results = max(0, int(keep_results))
        self.outputs_dir = Path(outputs_dir).expanduser().resolve()
        if gpus:
            self.devices = [f"cuda:{int(g)}" for g in gpus]
        else:
            self.devices = [device or _default_device()]
        if pipeline_factory is None:
            _check_devices(self.devices)
        self._factory = pipeline_factory or self._load_pipeline
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: collections.deque = collections.deque()
        self._jobs: dict = {}
        self._kept: collections.OrderedDict = collections.OrderedDict()    # job id -> job holding a result
        self._stopping = False
        self._warm_cancel = threading.Event()
        self.recovery = recovery.recover_outputs(self.outputs_dir) if recover else recovery.Recovery()
        self.records = queued.QueueRecords(self.outputs_dir, self.model_path)     # accepted jobs, on disk
        for job in self.recovery.jobs:
            self._jobs[job.id] = job
        self._workers = []
        for i, dev in enumerate(self.devices):
            w = _Worker(self, dev, name=f"trellis-worker-{i}")
            self._workers.append(w)
            w.thread.start()

    # ------------------------------------------------------------------ public API
    def submit(self, images, settings: Optional[GenerationSettings] = None, keep_result: bool = False) -> Job:
        """Queue one job: one image, or several views of one object. Returns at once. With
        `keep_result`, the decoded result stays in memory after the job for `submit_export`."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("submit needs at least one image")
        settings = settings or GenerationSettings()
        if not isinstance(settings, GenerationSettings):
            raise TypeError("settings must be a GenerationSettings")
        job = Job(id=uuid.uuid4().hex, inputs=images, settings=settings, keep_result=bool(keep_result))
        self._enqueue(job)
        return job

    def submit_text(self, prompt: str, settings: Optional[GenerationSettings] = None,
                    keep_result: bool = False) -> Job:
        """Queue a text job (a prompt -> a 3-D asset). ValueError for an empty or absurd prompt."""
        job = Job(id=uuid.uuid4().hex, inputs=[], settings=self._checked(settings), kind="text",
                  prompt=check_prompt(prompt), keep_result=bool(keep_result))
        self._enqueue(job)
        return job

    def submit_variant(self, mesh, settings: Optional[GenerationSettings] = None, prompt: Optional[str] = None,
                       image=None, keep_result: bool = False) -> Job:
        """Queue a new-look job: `mesh` (a path, or (file name, bytes) of an upload) keeps its shape and gets the
        look of `prompt` or of `image` (exactly one). The file is checked when the job starts (meshes.check_mesh;
        callers that want to refuse a bad file at once call it first)."""
        if (prompt is None) == (image is None):
            raise ValueError("a new look needs a prompt or an image (one of them, not both)")
        if mesh is None or (isinstance(mesh, tuple) and (len(mesh) != 2 or not isinstance(mesh[1], (bytes, bytearray)))):
            raise ValueError("a new look needs a 3-D model: a file path, or (file name, bytes)")
        job = Job(id=uuid.uuid4().hex, inputs=[] if image is None else [image], settings=self._checked(settings),
                  kind="variant", prompt=None if prompt is None else check_prompt(prompt), mesh=mesh,
                  keep_result=bool(keep_result))
        self._enqueue(job)
        return job

    @staticmethod
    def _checked(settings) -> GenerationSettings:
        settings = settings or GenerationSettings()
        if not isinstance(settings, GenerationSettings):
            raise TypeError("settings must be a GenerationSettings")
        return settings

    def text_model_for(self, size: str) -> str:
        """The text pipeline a job of `size` uses: --text-model when given, else the published one of that size
        (in the app's models folder once downloaded, see _load_text_pipeline)."""
        if self.text_model:
            return self.text_model
        from installer.weights import text_repo

        return text_repo(size)

    def submit_export(self, source_id: str, **changes) -> Job:
        """Queue an export job: files written from the kept result of the finished job `source_id`,
        with the source's settings changed by `changes` (only the fields of EXPORT_FIELDS, e.g.
        formats, texture_size, simplify). Raises UnknownJobError, NoResultError (the source is not
        done, or its result is not or no longer kept) or ValueError (a bad change)."""
        sampling = sorted(set(changes) - set(EXPORT_FIELDS))
        if sampling:
            raise ValueError(f"an export cannot change {', '.join(sampling)} (only {', '.join(EXPORT_FIELDS)}); "
                             "submit a new job to sample again")
        with self._lock:
            source = self._jobs.get(source_id)
            if source is None:
                raise UnknownJobError(f"no job {source_id!r}")
            result = source._result
        if result is None:
            if source.state != JobState.DONE:
                raise NoResultError(f"job {source_id} is {source.state}: only a finished job can be exported")
            if not source.keep_result:
                raise NoResultError(f"job {source_id} did not keep its result (submit it with keep_result)")
            raise NoResultError(f"the result of job {source_id} is no longer in memory (a newer result replaced "
                                "it); run the job again")
        settings = source.used_settings.replace(**changes)
        job = Job(id=uuid.uuid4().hex, inputs=list(source.inputs), settings=settings, kind="export",
                  source_id=source_id)
        job._source_result = result
        job._affinity = source.device
        self._enqueue(job)
        return job

    def release_result(self, job_id: str) -> bool:
        """Drop a kept result (its memory is freed once no export job uses it). False if none was kept."""
        with self._lock:
            job = self._kept.pop(job_id, None)
            if job is None:
                return False
            job._result = None
        return True

    def fast_paths(self) -> dict:
        """Per device, one line: whether the renderers' fast kernels run there and, if not, why they do not
        (`trellis.fastpaths.describe`; a kernel that failed in this process shows as switched off)."""
        from trellis import fastpaths

        return {dev: fastpaths.describe(dev) for dev in self.devices}

    def say_fast_paths(self, stream=None) -> None:
        """The fast-path line of every device, once, for the log of a starting server."""
        for dev, line in self.fast_paths().items():
            print(f"device {dev}: {line}", file=stream or sys.stderr, flush=True)

    def start_warmup(self, precision: str = "auto", offload: str = "auto", forward: Optional[bool] = None) -> None:
        """Warm up in the background, now: every worker loads its pipeline and then (`forward`; default: on a
        GPU only, where kernels compile on first use) runs one tiny generation with this precision / offload,
        the servers' defaults. Returns at once. A job submitted meanwhile waits for the load and stops the tiny
        run at its next step; a failed warm-up only logs a warning (the first job then loads and reports)."""
        with self._wakeup:
            if self._stopping:
                return
            self._warm_cancel.clear()
            for w in self._workers:
                if w.pipeline is None or forward is not False:
                    w.warm_request = (precision, offload, forward)
            self._wakeup.notify_all()

    def cancel_warmup(self) -> None:
        """Stop a background warm-up at its next step (a load under way finishes first)."""
        with self._wakeup:
            self._warm_cancel.set()
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

    def rerun(self, job_id: str) -> Job:
        """Queue the ended job `job_id` again: its inputs, settings and seed (rerun.py)."""
        return rerun.rerun(self, job_id)

    def _enqueue(self, job: Job) -> None:
        if self._stopping:
            raise RuntimeError("the job runner is shut down")
        self.records.add(job)               # written down first: known after any stop once accepted
        job._on_folder = lambda: self.records.ended(job)        # its own folder names it from then on
        with self._wakeup:
            if self._stopping:
                job.state = JobState.CANCELLED
                self.records.ended(job)
                raise RuntimeError("the job runner is shut down")
            self._jobs[job.id] = job
            self._queue.append(job)
            self._wakeup.notify_all()        # all: a job bound to one device must reach its worker

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def queue_position(self, job_id: str) -> Optional[int]:
        """0 for the next job to start, None when not queued."""
        with self._lock:
            for i, j in enumerate(self._queue):
                if j.id == job_id:
                    return i
        return None

    def cancel(self, job_id: str) -> bool:
        """Queued: removed from the queue (state cancelled). Running: stops at the next step. Returns
        False for an unknown or already finished job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state in JobState.FINISHED:
                return False
            job._cancel.set()
            if job.state != JobState.QUEUED:
                return True
            self._queue.remove(job)
            job.error = job.error_kind = "cancelled"
            if job._interrupted:
                job.error, job.error_kind = job._interrupted, "interrupted"
            job.finished = time.time()
            job._source_result = None
            # Before the state shows it ended: whoever sees it ended sees its record gone (or its folder made).
            self.records.ended(job)
            job.state = JobState.CANCELLED
        job._done.set()
        return True

    def shutdown(self, cancel: bool = True, wait: bool = True, timeout: Optional[float] = None,
                 reason: Optional[str] = None) -> None:
        """Stop the workers. With `cancel`, queued jobs are cancelled and running ones asked to stop;
        otherwise the queue is worked off first. With `reason` (e.g. "the server received SIGTERM"),
        those jobs end as interrupted (error_kind "interrupted", error.json `state: interrupted`)
        rather than cancelled."""
        with self._wakeup:
            self._stopping = True
            self._warm_cancel.set()
            waiting = list(self._queue) if cancel else []
            running = [j for j in self._jobs.values() if j.state == JobState.RUNNING] if cancel else []
            if reason:
                for job in waiting:
                    job._interrupted = queued.interrupted_message(reason, job.id)
                for job in running:
                    job._interrupted = recovery.INTERRUPTED_MESSAGE.format(how=reason)
            self._wakeup.notify_all()
        for job in waiting + running:
            self.cancel(job.id)
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

    # ------------------------------------------------------------------ used by the workers
    def _next_job(self, device: Optional[str] = None, worker: Optional["_Worker"] = None):
        """The first queued job this worker may run (export jobs are bound to their result's device); _WARMUP when
        the worker is asked to warm up and no job waits for it."""
        with self._wakeup:
            while True:
                job = next((j for j in self._queue if j._affinity in (None, device)), None)
                if job is not None:
                    break
                if self._stopping:
                    return None
                if worker is not None and worker.warm_request is not None:
                    return _WARMUP
                self._wakeup.wait()
            self._queue.remove(job)
            job.state = JobState.RUNNING
            job.started = time.time()
            job.progress = Progress("starting")
            return job

    def _store_result(self, job: Job, result: dict) -> None:
        if self.keep_results == 0:
            return
        with self._lock:
            job._result = result
            self._kept[job.id] = job
            while len(self._kept) > self.keep_results:
                _, old = self._kept.popitem(last=False)
                old._result = None

    def _load_pipeline(self, device: str):
        from trellis.pipelines import TrellisImageTo3DPipeline

        try:
            pipeline = TrellisImageTo3DPipeline.from_pretrained(self.model_path)
        except Exception as err:
            if is_oom(err) or is_disk_full(err):
                raise
            raise ModelLoadError(model_load_message(self.model_path, err)) from err
        return pipeline.to(device)

    def _load_text_pipeline(self, device: str, size: str, progress=None):
        """The text pipeline of `size`. The app's own install (TRELLIS_MODEL_DIR set by the launcher) downloads
        the published files into its models folder on first use, each checked against the hub's sha256, with
        the job's progress; elsewhere the library finds them (a folder, the Hugging Face cache, or the hub)."""
        from trellis.pipelines import TrellisTextTo3DPipeline

        source = self.text_model_for(size)
        models_dir = os.environ.get("TRELLIS_MODEL_DIR")
        try:
            if not self.text_model and models_dir:
                source = str(self._fetch_text_model(Path(models_dir), size, progress))
            pipeline = TrellisTextTo3DPipeline.from_pretrained(source)
        except Exception as err:
            if is_oom(err) or is_disk_full(err) or isinstance(err, Cancelled):
                raise
            raise ModelLoadError(text_model_message(source, err)) from err
        return pipeline.to(device), source

    @staticmethod
    def _fetch_text_model(models_dir: Path, size: str, progress=None) -> Path:
        from installer import weights

        done: dict = {}

        def hook(label, got, total):
            # Cancel stops a long download (the partial file is kept: the next text job resumes it).
            if getattr(getattr(progress, "job", None), "cancel_requested", False):
                raise Cancelled()
            done[label] = (got, total or got)
            if progress is not None:
                mb = sum(g for g, _ in done.values()) // 2 ** 20
                progress("download", mb, max(mb, sum(t for _, t in done.values()) // 2 ** 20, 1), label)
        try:
            return weights.ensure_text_model(models_dir, size, hook=hook)
        except weights.WeightsError as err:
            raise ModelLoadError(str(err)) from None


def text_model_message(source: str, err: BaseException) -> str:
    if isinstance(err, ModelLoadError):
        return str(err)
    return (f"could not load the text model {source}: {str(err).rstrip('.')}. Check the internet connection (the "
            f"text model is downloaded on its first use), or pass --text-model FOLDER pointing at a downloaded "
            f"copy (e.g. `hf download {source} --local-dir FOLDER`).")


class _Worker:
    def __init__(self, runner: JobRunner, device: str, name: str):
        self.runner, self.device = runner, device
        self.pipeline = None
        self.text_pipeline, self.text_source = None, None
        self.warm_request = None           # (precision, offload, forward) of a warm-up asked for
        self.warming = False
        self.warmup_timings: dict = {}     # seconds of the last warm-up: load_model, warm_run
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        if self.device.startswith("cuda") and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.set_device(torch.device(self.device))
        while True:
            job = self.runner._next_job(self.device, self)
            if job is None:
                return
            if job is _WARMUP:
                self._warm_up()
                continue
            try:
                self._run_job(job)
            except BaseException as err:       # never let the worker die
                print(f"trellis worker: internal error on job {job.id}: {err!r}", file=sys.stderr)
                self._finish(job, JobState.FAILED, f"internal error: {err}")

    def _finish(self, job: Job, state: str, error: Optional[str] = None, detail: Optional[str] = None) -> None:
        # Its final file is written: the folder is no longer this process's to finish.
        JobFolder.release(job)
        if job.error_kind == "interrupted" and not job.out_dir:
            job.error = error                 # stopped before its folder: its record becomes that folder
        self.runner.records.ended(job)
        with self.runner._lock:
            job.state, job.error, job.detail = state, error, detail
            job.finished = time.time()
            job._source_result = None         # an export job no longer needs the result it exported
            if state == JobState.DONE:
                job.progress = Progress("done", 1, 1, 1.0, 0.0, job.progress.elapsed_s, "")
        job._done.set()

    def _run_job(self, job: Job) -> None:
        job.device = self.device
        t_start = time.perf_counter()
        try:
            run = {"export": steps.export, "text": steps.generate_text, "variant": steps.generate_variant}
            run.get(job.kind, steps.generate)(self, job)
        except BaseException as err:
            self._fail(job, err)
            return
        finally:
            job.timings.setdefault("total", time.perf_counter() - t_start)
        if job.warnings:
            job.timings["warnings"] = list(job.warnings)
        self._write_timings(job)
        self._finish(job, JobState.DONE)

    def _fail(self, job: Job, err: BaseException) -> None:
        folder = JobFolder(job.out_dir) if job.out_dir else None
        error_file = str(folder.file("error")) if folder else None
        kind, message = classify_failure(err, self.runner.outputs_dir, self.device, error_file)
        if job._interrupted and kind not in ("oom", "disk"):
            # Stopped by the app's shutdown (whatever the stop broke on the way, e.g. an encoder child).
            kind, message = "interrupted", job._interrupted
        state = JobState.CANCELLED if kind in ("cancelled", "interrupted") else JobState.FAILED
        detail = None
        if kind == "internal":
            detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        job.error_kind = kind
        # The tracebacks' frames hold the run's tensors: drop them before freeing memory.
        drop_tracebacks(err)
        del err
        if kind == "oom":
            self._free_memory()
        if folder is not None:
            try:
                job.files.update(folder.write_error({"state": "interrupted" if kind == "interrupted" else state,
                                                     "error": message, "kind": kind, "detail": detail,
                                                     "timings": jsonable(job.timings)}))
            except OSError:
                pass          # e.g. the disk is full: the message still reaches the caller
        self._finish(job, state, message, detail)

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda") and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()


    # ------------------------------------------------------------------ background warm-up
    def _job_waiting(self) -> bool:
        with self.runner._lock:
            return any(j._affinity in (None, self.device) for j in self.runner._queue)

    def _warm_up(self) -> None:
        """Load the pipeline, then (on a GPU) one tiny generation; stops early for a job, cancel or shutdown."""
        runner = self.runner
        with runner._lock:
            request, self.warm_request = self.warm_request, None
            self.warming = request is not None
        if request is None:
            return
        precision, offload, forward = request
        forward = self.device.startswith("cuda") if forward is None else forward

        def stop() -> bool:
            return runner._warm_cancel.is_set() or runner._stopping

        step = "loading the model"
        try:
            if not stop():
                # The GLB export's decimation children import numpy and fast-simplification (0.5 s on a busy GPU
                # host): started now, they wait warm in the library's pool for the first export.
                from trellis.export import warm_processes
                warm_processes()
            if self.pipeline is None and not stop():
                t = time.perf_counter()
                self.pipeline = runner._factory(self.device)
                self.warmup_timings = {"load_model": time.perf_counter() - t}
                print(f"device {self.device}: model loaded in {self.warmup_timings['load_model']:.1f} s "
                      "(background warm-up)", file=sys.stderr, flush=True)
            if forward and self.pipeline is not None and not stop() and not self._job_waiting():
                step = "warming the kernels"
                t = time.perf_counter()
                pipeline = self._activate(self.pipeline)
                pipeline.set_memory_policy(precision=precision, offload=offload)
                warm_run(pipeline, cancel=lambda: stop() or self._job_waiting())
                self.warmup_timings["warm_run"] = time.perf_counter() - t
                print(f"device {self.device}: kernels warmed in {self.warmup_timings['warm_run']:.1f} s "
                      "(background warm-up)", file=sys.stderr, flush=True)
        except Cancelled:
            pass                                   # a job, cancel_warmup or shutdown came first
        except BaseException as err:               # never fatal: the first job loads and reports for itself
            print(f"warning: background warm-up on {self.device} stopped while {step}: {err}", file=sys.stderr,
                  flush=True)
            drop_tracebacks(err)
            del err
        finally:
            with runner._lock:
                self.warming = False
            self._free_memory()

    def ensure_pipeline(self, job: Job, progress):
        """The worker's pipeline, loaded on its first job."""
        if self.pipeline is None:
            progress("load", 0, 1)
            t = time.perf_counter()
            self.pipeline = self.runner._factory(self.device)
            job.timings["load_model"] = time.perf_counter() - t
        return self._activate(self.pipeline)

    def ensure_text_pipeline(self, job: Job, size: str, progress):
        """(the text pipeline for `size`, what it was loaded from), loaded on first use; another size replaces it."""
        wanted = self.runner.text_model_for(size)
        if self.text_pipeline is None or self.text_source != wanted:
            self.text_pipeline = None
            self._free_memory()
            progress("load", 0, 1)
            t = time.perf_counter()
            loaded = self.runner._text_factory(self.device, size, progress)
            # A factory gives the pipeline, or (pipeline, where it was loaded from).
            self.text_pipeline, source = loaded if isinstance(loaded, tuple) else (loaded, wanted)
            self.text_source, self.text_loaded_from = wanted, source
            job.timings["load_model"] = time.perf_counter() - t
        return self._activate(self.text_pipeline), self.text_loaded_from

    def _activate(self, pipeline):
        """On a GPU only one pipeline (image or text) stays there: the other waits in CPU memory."""
        if self.device.startswith("cuda"):
            for other in (self.pipeline, self.text_pipeline):
                if other is not None and other is not pipeline and getattr(other, "device", None) is not None \
                        and other.device.type != "cpu":
                    other.to("cpu")
            if str(pipeline.device) != str(torch.device(self.device)):
                pipeline.to(self.device)
        return pipeline

    def _write_timings(self, job: Job) -> None:
        if not job.out_dir:
            return
        try:
            job.files.update(JobFolder(job.out_dir).write_timings(job.timings))
        except OSError:
            pass          # the assets are written; a missing timings file is not worth failing the job
