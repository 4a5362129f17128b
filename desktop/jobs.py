"""Job runner: a FIFO queue of image-to-3D jobs served by one worker thread per GPU.

    runner = JobRunner("microsoft/TRELLIS-image-large", "outputs", gpus=[0, 1])
    job = runner.submit(["photo.png"], GenerationSettings.from_preset("fast"))
    job.wait()                 # or poll job.state / job.progress
    job.files["glb"]           # <outputs>/<YYYYmmdd-HHMMSS>-<id8>/model.glb

Each worker loads the pipeline once, lazily, on its first job, and switches precision / offloading per
job without reloading. A job's folder receives, as they are finished (each written atomically: a temp
file then a rename, so a failure never leaves a half-written file): the input image(s),
`settings.json` (every parameter and the seed actually used), `preprocessed.png`, `preview.mp4`,
`model.ply`, `model.glb`, `model.obj` (+ `model.mtl`, `model.png`) as requested, and `timings.json`
(or `error.json` when the job failed or was cancelled). The folder is made once the input image is
read and the model is loaded, so a wrong file or a missing model leaves no folder behind. A failure of
any kind fails that job only (`Job.error`, a message for the user; `Job.error_kind`, one of
ERROR_KINDS): the worker goes on with the next one.

Preview first, asset later: a job submitted with `keep_result=True` keeps its decoded result (the
Gaussians and the mesh) in memory once it is done; `runner.submit_export(job.id, texture_size=2048)`
then queues an export job that writes other files (GLB, OBJ, PLY, MP4) from that result without
sampling again, into a folder of its own. Only the `keep_results` most recent results are kept.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import gc
import json
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import torch

from trellis.utils.cancel import Cancelled

from . import recovery
from .settings import EXPORT_FIELDS, GenerationSettings

DEFAULT_MODEL = "microsoft/TRELLIS-image-large"


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (DONE, FAILED, CANCELLED)


# User-facing names of the stages a job goes through, in order.
STAGE_LABELS = {
    "queued": "Waiting",
    "starting": "Starting",
    "load": "Loading model (once)",
    "preprocess": "Preparing image",
    "condition": "Reading image",
    "sparse_structure": "Sampling structure",
    "slat": "Sampling details",
    "decode": "Decoding",
    "video": "Rendering preview",
    "encode": "Encoding preview",
    "ply": "Writing PLY",
    "bake": "Baking texture",
    "glb": "Writing GLB",
    "obj": "Writing OBJ",
    "done": "Done",
}

# Rough share of the run time of each stage (for the overall fraction and the ETA).
_STAGE_WEIGHTS = {"preprocess": 2, "condition": 1, "sparse_structure": 12, "slat": 20, "decode": 4,
                  "video": 8, "encode": 1, "ply": 1, "bake": 30, "glb": 1, "obj": 1}


class InputError(ValueError):
    """The input image cannot be used (wrong type, broken, giant, fully transparent, ...)."""


class ModelLoadError(RuntimeError):
    """The pipeline could not be loaded (message says how to fix it)."""


class UnknownJobError(LookupError):
    """No job has this id."""


class NoResultError(RuntimeError):
    """An export was asked of a job whose decoded result is not (or no longer) in memory."""


@dataclass
class Progress:
    stage: str = "queued"
    step: int = 0
    total: int = 0
    fraction: float = 0.0          # of the whole job, 0..1
    eta_s: Optional[float] = None  # seconds left, None while unknown
    elapsed_s: float = 0.0
    message: str = ""

    @property
    def label(self) -> str:
        return STAGE_LABELS.get(self.stage, self.stage)


@dataclass
class Job:
    id: str
    inputs: list                      # what was submitted: paths (str), PIL images or bytes (images and
                                      # bytes become the path of their copy once the job folder is made)
    settings: GenerationSettings      # as submitted; `used_settings` holds the seed actually used
    kind: str = "generate"            # "generate" (image -> files) or "export" (a kept result -> files)
    source_id: Optional[str] = None   # export jobs: the job whose result they export
    keep_result: bool = False         # keep the decoded result in memory for later exports
    state: str = JobState.QUEUED
    progress: Progress = field(default_factory=Progress)
    error: Optional[str] = None       # user-facing message when failed
    error_kind: Optional[str] = None  # one of ERROR_KINDS
    detail: Optional[str] = None      # traceback of an unexpected failure
    out_dir: Optional[str] = None
    files: dict = field(default_factory=dict)     # kind -> absolute path
    timings: dict = field(default_factory=dict)
    used_settings: Optional[GenerationSettings] = None
    device: Optional[str] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None

    def __post_init__(self):
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._result: Optional[dict] = None         # {"gaussian", "mesh"} while kept (keep_result)
        self._source_result: Optional[dict] = None  # export jobs: the result they export
        self._affinity: Optional[str] = None        # export jobs run on the device that holds the result
        self._interrupted: Optional[str] = None     # why the app stopped it (JobRunner.shutdown(reason=))
        self._folder_lock = None                    # (fd, path) of the running job's lock (recovery.py)

    @property
    def result_kept(self) -> bool:
        """True while the decoded result is in memory (an export can be made from it)."""
        return self._result is not None

    @property
    def seed(self) -> Optional[int]:
        return self.used_settings.seed if self.used_settings else None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished_ok(self) -> bool:
        return self.state == JobState.DONE

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job is done, failed or cancelled; False on timeout."""
        return self._done.wait(timeout)

    def to_dict(self) -> dict:
        p = asdict(self.progress)
        p["label"] = self.progress.label
        return {"id": self.id, "kind": self.kind, "source_id": self.source_id, "state": self.state,
                "progress": p, "error": self.error,
                "error_kind": self.error_kind, "out_dir": self.out_dir,
                "files": dict(self.files), "timings": _snapshot(self.timings), "device": self.device,
                "inputs": [_describe_input(x) for x in self.inputs],
                "settings": (self.used_settings or self.settings).to_dict(), "seed": self.seed,
                "created": self.created, "started": self.started, "finished": self.finished,
                "keep_result": self.keep_result, "result_kept": self.result_kept}


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path next to `final` (same extension, so writers that pick the format from
    the name still work); on success it is renamed onto `final`, on failure removed."""
    final = Path(final)
    tmp = final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"the writer produced no file for {final.name}")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_atomic(path: Path, data) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode("utf-8")


def _describe_input(x) -> str:
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"<{len(x)} bytes>"
    return f"<{type(x).__name__}>"


# ---------------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------------

def _is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


def _is_disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return True
        err = err.__cause__ or err.__context__
    return False


# Kinds of failure (Job.error_kind), for callers that react differently (HTTP status, retry advice).
# "interrupted": the app was stopped (Ctrl-C, SIGTERM, ...) or killed while the job ran or waited.
ERROR_KINDS = ("input", "empty", "oom", "disk", "model", "background_removal", "cancelled", "interrupted",
               "internal")


def classify_failure(err: BaseException, outputs_dir, device: str, error_file: Optional[str] = None) -> tuple:
    """(kind, user-facing message) for an exception that ended a job; `error_file`: where its details
    are written (an unexpected error's message points there), None when the job has no folder."""
    from trellis.pipelines import EmptyStructureError
    from trellis.pipelines.preprocess import BackgroundRemovalUnavailable

    if isinstance(err, Cancelled):
        return "cancelled", "cancelled"
    if isinstance(err, InputError):
        return "input", f"bad input: {err}"
    if isinstance(err, EmptyStructureError):
        return "empty", str(err)
    if _is_oom(err):
        if str(device).startswith("cuda"):
            return "oom", ("out of GPU memory: try the low-vram preset (--preset low-vram), a smaller texture "
                           "size or fewer steps, and close other programs that use the GPU. The memory was freed; "
                           "the app keeps running.")
        return "oom", ("out of memory: close other programs, or try the fast preset (--preset fast) or a smaller "
                       "texture size. The memory was freed; the app keeps running.")
    if _is_disk_full(err):
        return "disk", (f"the outputs folder is full ({outputs_dir}): free some disk space there or choose "
                        "another outputs folder, then try again.")
    if isinstance(err, ModelLoadError):
        return "model", str(err)
    if isinstance(err, BackgroundRemovalUnavailable):
        return "background_removal", str(err)
    if isinstance(err, OSError) and err.filename:
        return "internal", f"could not write or read {err.filename}: {err.strerror or err}"
    where = f" The details are in {error_file}." if error_file else ""
    return "internal", f"unexpected error ({type(err).__name__}: {err}).{where}"


def _model_load_message(model: str, err: BaseException) -> str:
    if isinstance(err, RuntimeError) and "DINOv2" in str(err):     # the image encoder's own download
        return f"could not load the image encoder of the model: {err}"
    from trellis.models import WeightsFileError

    if isinstance(err, OSError) and not isinstance(err, WeightsFileError) and err.filename \
            and not isinstance(err, FileNotFoundError):
        err = WeightsFileError(err.filename, err.strerror or str(err), err.errno)  # e.g. pipeline.json unreadable
    if isinstance(err, WeightsFileError):
        again = (f"re-download it with `python -m installer weights --repair` (the app's own model files) "
                 f"or `hf download {DEFAULT_MODEL} --local-dir {model}`")
        if err.errno in (errno.EACCES, errno.EPERM):
            again = f"let this user read it (e.g. chmod -R a+rX {model}), or {again}"
        return f"could not load the model from {model}: {err}; {again}."
    local = os.path.exists(model) or os.path.isabs(model) or model.startswith(".")
    if local:
        return (f"could not load the model from {model}: {str(err).rstrip('.?!')}. The folder must hold pipeline.json and ckpts/ "
                f"(a copy of {DEFAULT_MODEL}).")
    return (f"could not load the model {model!r} ({type(err).__name__}: {err}). Check the internet connection "
            f"and try again, or download the model with `hf download {model} --local-dir DIR` (on any computer "
            f"with internet access, then copy DIR here) and pass --model DIR.")


# ---------------------------------------------------------------------------------------------
# Input images
# ---------------------------------------------------------------------------------------------

def prepare_image(image, remove_background: bool, remover=None, check_only: bool = False):
    """Any input -> the 518² RGB image the pipeline conditions on. Raises InputError.

    With `check_only`, an image that needs background removal is only loaded (the removal itself,
    slow and possibly a model download, is skipped) and None is returned for it."""
    from PIL import Image

    from trellis.pipelines import preprocess as pre

    try:
        img = pre.load_image(image)
        if pre.has_real_alpha(img):          # no removal needed: crop to the alpha as usual
            return pre.crop_and_composite(img, "the image's transparency leaves no solid object")
        if not remove_background:
            return img.convert("RGB")
        if check_only:
            pre.check_aspect(img.width, img.height, "The image")     # as preprocess_image will
            return None
        return pre.preprocess_image(img, remover=remover or pre.get_default_remover())
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError) as err:
        raise InputError(str(err)) from None
    except Image.DecompressionBombError as err:      # a size no check above foresaw: still the input's
        raise InputError(f"the image is too large to process ({err}); downscale it and try again") from None
    except PermissionError as err:
        raise InputError(f"cannot read {err.filename}: permission denied") from None


def check_image(image, remove_background: bool = True) -> None:
    """Raise InputError when `image` cannot be used (not an image, damaged, too large, fully
    transparent), in well under a second and without the model: callers such as the REST API refuse
    a bad upload at once instead of queueing a job that would fail."""
    prepare_image(image, remove_background, check_only=True)


# ---------------------------------------------------------------------------------------------
# Progress tracking
# ---------------------------------------------------------------------------------------------

class _ProgressTracker:
    """Turns (stage, step, total) reports into the job's overall fraction and ETA (elapsed / fraction)."""

    def __init__(self, job: Job, stages: list, lock: threading.Lock, listener: Optional[Callable] = None):
        self.job, self.lock, self.listener = job, lock, listener
        self.weights = {s: _STAGE_WEIGHTS.get(s, 1) for s in stages}
        self.order = list(stages)
        self.total_weight = float(sum(self.weights.values())) or 1.0
        self.t0 = time.perf_counter()
        self.substages: dict = {}

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        inner = min(step, total) / total if total else 0.0
        if stage in _MULTI_STEP and message:
            # Exports report their own sub-stages, each counting from 0: spread them over the stage.
            names = self.substages.setdefault(stage, [])
            if message not in names:
                names.append(message)
            inner = (names.index(message) + inner) / max(_MULTI_STEP[stage], len(names))
        if stage in self.order:
            done = sum(self.weights[s] for s in self.order[:self.order.index(stage)])
            fraction = (done + self.weights[stage] * inner) / self.total_weight
        else:
            fraction = self.job.progress.fraction
        fraction = max(fraction, self.job.progress.fraction)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        with self.lock:
            self.job.progress = progress = Progress(stage, step, total, fraction, eta, elapsed, message)
        if self.listener is not None:
            self.listener(self.job, progress)


# Stages whose progress comes as several sub-stages, and about how many there are.
_MULTI_STEP = {"bake": 8}     # simplify, visibility, remove_invisible, fill_holes, uv_unwrap, observe, bake, inpaint


def _export_stages(settings: GenerationSettings) -> list:
    """The stages that write the requested files, in the order they run (see _Worker._write_outputs)."""
    fmt = set(settings.formats)
    stages = ["ply"] if "ply" in fmt else []
    stages += ["video", "encode"] if "mp4" in fmt else []
    # GLB and OBJ share one bake (clean-up, UV unwrap, texture), then each is written from it.
    return stages + (["bake"] if fmt & {"glb", "obj"} else []) + [s for s in ("glb", "obj") if s in fmt]


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------

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
    are listed again (`get`, `list`; `self.recovery` says what was done)."""

    def __init__(self, model_path: str = DEFAULT_MODEL, outputs_dir="outputs", device: Optional[str] = None,
                 gpus: Optional[list] = None, pipeline_factory: Optional[Callable] = None, keep_results: int = 1,
                 on_progress: Optional[Callable] = None, recover: bool = True):
        self.model_path = os.fspath(model_path)
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
        self.recovery = recovery.recover_outputs(self.outputs_dir) if recover else recovery.Recovery()
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

    @property
    def model_loaded(self) -> bool:
        """True once a worker has loaded the pipeline."""
        return any(w.pipeline is not None for w in self._workers)

    def _enqueue(self, job: Job) -> None:
        with self._wakeup:
            if self._stopping:
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
            if job.state == JobState.QUEUED:
                self._queue.remove(job)
                job.state = JobState.CANCELLED
                job.error = job.error_kind = "cancelled"
                if job._interrupted:
                    job.error, job.error_kind = job._interrupted, "interrupted"
                job.finished = time.time()
                job._source_result = None
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
            queued = list(self._queue) if cancel else []
            running = [j for j in self._jobs.values() if j.state == JobState.RUNNING] if cancel else []
            if reason:
                for job in queued + running:
                    job._interrupted = recovery.INTERRUPTED_MESSAGE.format(how=reason)
            self._wakeup.notify_all()
        for job in queued + running:
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
    def _next_job(self, device: Optional[str] = None) -> Optional[Job]:
        """The first queued job this worker may run (export jobs are bound to their result's device)."""
        with self._wakeup:
            while True:
                job = next((j for j in self._queue if j._affinity in (None, device)), None)
                if job is not None:
                    break
                if self._stopping:
                    return None
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
            if _is_oom(err) or _is_disk_full(err):
                raise
            raise ModelLoadError(_model_load_message(self.model_path, err)) from err
        return pipeline.to(device)


class _Worker:
    def __init__(self, runner: JobRunner, device: str, name: str):
        self.runner, self.device = runner, device
        self.pipeline = None
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        if self.device.startswith("cuda") and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.set_device(torch.device(self.device))
        while True:
            job = self.runner._next_job(self.device)
            if job is None:
                return
            try:
                self._run_job(job)
            except BaseException as err:       # never let the worker die
                print(f"trellis worker: internal error on job {job.id}: {err!r}", file=sys.stderr)
                self._finish(job, JobState.FAILED, f"internal error: {err}")

    def _finish(self, job: Job, state: str, error: Optional[str] = None, detail: Optional[str] = None) -> None:
        # Its final file is written: the folder is no longer this process's to finish.
        if job._folder_lock is not None:
            recovery.release_lock(*job._folder_lock)
            job._folder_lock = None
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
            if job.kind == "export":
                self._export(job)
            else:
                self._generate(job)
        except BaseException as err:
            self._fail(job, err)
            return
        finally:
            job.timings.setdefault("total", time.perf_counter() - t_start)
        self._write_timings(job, job.out_dir and Path(job.out_dir))
        self._finish(job, JobState.DONE)

    def _fail(self, job: Job, err: BaseException) -> None:
        error_file = str(Path(job.out_dir) / "error.json") if job.out_dir else None
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
        _drop_tracebacks(err)
        del err
        if kind == "oom":
            self._free_memory()
        if job.out_dir:
            try:
                write_atomic(Path(job.out_dir) / "error.json",
                             _json_bytes({"state": "interrupted" if kind == "interrupted" else state,
                                          "error": message, "kind": kind, "detail": detail,
                                          "timings": _jsonable(job.timings)}))
                job.files["error"] = str(Path(job.out_dir) / "error.json")
            except OSError:
                pass          # e.g. the disk is full: the message still reaches the caller
        self._finish(job, state, message, detail)

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda") and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ one job
    def _generate(self, job: Job) -> None:
        runner = self.runner
        settings = job.settings.with_seed().for_device(self.device)
        job.used_settings = settings
        stages = ["preprocess", "condition", "sparse_structure", "slat", "decode"] + _export_stages(settings)
        progress = _ProgressTracker(job, stages, runner._lock, runner.on_progress)
        cancel = job._cancel.is_set

        # 1. The input first: a bad image fails in a second, before the model is loaded and before
        #    anything is written (a wrong file leaves no folder behind).
        progress("preprocess", 0, 1)
        t = time.perf_counter()
        remover = self.pipeline._remover if self.pipeline is not None else None
        images = [prepare_image(x, settings.preprocess, remover) for x in job.inputs]
        job.timings["preprocess"] = time.perf_counter() - t
        if cancel():
            raise Cancelled()

        # 2. The model, once per worker; precision / offload switched per job without reloading.
        pipeline = self._ensure_pipeline(job, progress)
        pipeline.set_memory_policy(precision=settings.precision, offload=settings.offload)
        if cancel():
            raise Cancelled()
        progress.restart_clock()

        # 3. The job folder: inputs, settings and the preprocessed image(s).
        out = self._make_job_dir(job)
        job.out_dir = str(out)
        self._copy_inputs(job, out)
        write_atomic(out / "settings.json", _json_bytes(self._settings_record(job, settings)))
        job.files["settings"] = str(out / "settings.json")
        for i, img in enumerate(images):
            name = "preprocessed.png" if i == 0 else f"preprocessed_{i + 1}.png"
            with atomic_path(out / name) as tmp:
                img.save(tmp, format="PNG")
            job.files["preprocessed" if i == 0 else f"preprocessed_{i + 1}"] = str(out / name)
        progress("preprocess", 1, 1)

        # 4. Sampling. A result kept for later exports has both decodings, whatever this job writes.
        decode = ["gaussian", "mesh"] if job.keep_result else settings.decode_formats
        run_args = dict(seed=settings.seed, formats=decode, preprocess_image=False,
                        sparse_structure_sampler_params={"steps": settings.ss_steps, "cfg_strength": settings.ss_cfg},
                        slat_sampler_params={"steps": settings.slat_steps, "cfg_strength": settings.slat_cfg},
                        progress=lambda stage, i, n: progress(stage, i, n), cancel=cancel)
        t = time.perf_counter()
        try:
            if len(images) == 1:
                outputs = pipeline.run(images[0], **run_args)
            else:
                outputs = pipeline.run_multi_image(images, mode=settings.multi_image_mode, **run_args)
        finally:
            job.timings["pipeline"] = {"seconds": time.perf_counter() - t,
                                       "stages": list(getattr(pipeline, "last_stats", []))}
            job.timings["memory_policy"] = asdict(pipeline.memory_policy)
        gaussian = outputs["gaussian"][0] if "gaussian" in outputs else None
        mesh = outputs["mesh"][0] if "mesh" in outputs else None
        del outputs

        # 5. Exports (each file atomic).
        self._write_outputs(job, out, settings, gaussian, mesh, progress, cancel)
        if job.keep_result:
            runner._store_result(job, {"gaussian": gaussian, "mesh": mesh})

    def _export(self, job: Job) -> None:
        """An export job: the files of `job.settings.formats` from the result of job.source_id."""
        settings = job.used_settings = job.settings.for_device(self.device)
        progress = _ProgressTracker(job, _export_stages(settings), self.runner._lock, self.runner.on_progress)
        cancel = job._cancel.is_set
        result = job._source_result
        if cancel():
            raise Cancelled()
        out = self._make_job_dir(job)
        job.out_dir = str(out)
        source = self.runner.get(job.source_id)
        for key, path in (source.files.items() if source else ()):
            if key.startswith(("input", "preprocessed")) and os.path.isfile(path):
                dest = out / os.path.basename(path)
                with atomic_path(dest) as tmp:
                    shutil.copyfile(path, tmp)
                job.files[key] = str(dest)
        write_atomic(out / "settings.json", _json_bytes(self._settings_record(job, settings)))
        job.files["settings"] = str(out / "settings.json")
        self._write_outputs(job, out, settings, result["gaussian"], result["mesh"], progress, cancel)

    def _write_outputs(self, job: Job, out: Path, settings: GenerationSettings, gaussian, mesh, progress,
                       cancel) -> None:
        """The requested files, cheapest first (so that something useful lands early), each atomic."""
        fmt = set(settings.formats)
        simplified = None
        if fmt & {"glb", "obj"} and settings.simplify > 0 and ("ply" in fmt or "mp4" in fmt):
            # The mesh decimation (CPU, seconds on a million faces) runs in a child process while the
            # PLY and the preview video are written (GPU); the bake then takes its result.
            from trellis.utils.mesh_cleanup import BackgroundSimplify

            simplified = BackgroundSimplify(mesh.vertices, mesh.faces, settings.simplify)
        try:
            self._write_files(job, out, settings, gaussian, mesh, progress, cancel, fmt, simplified)
        finally:
            if simplified is not None:
                simplified.close()

    def _write_files(self, job, out, settings, gaussian, mesh, progress, cancel, fmt, simplified) -> None:
        if "ply" in fmt:
            self._timed(job, "ply", lambda: self._write_ply(gaussian, out / "model.ply", progress))
            job.files["ply"] = str(out / "model.ply")
        if "mp4" in fmt:
            self._timed(job, "mp4", lambda: self._write_video(gaussian, out / "preview.mp4", settings, progress,
                                                              cancel))
            job.files["mp4"] = str(out / "preview.mp4")
        if "glb" in fmt or "obj" in fmt:
            from trellis.utils import postprocessing_utils as post

            bake = dict(simplify=settings.simplify, fill_holes=settings.fill_holes,
                        texture_size=settings.texture_size, verbose=False, bake_mode=settings.bake_mode,
                        cancel=cancel, nviews=settings.bake_views, render_resolution=settings.bake_resolution,
                        simplified=simplified)
            baked = self._timed(job, "bake", lambda: post.bake_textured_mesh(
                gaussian, mesh, progress=lambda s, i, n: progress("bake", i, n, s), **bake))
            job.timings["export_bake_stages"] = _jsonable(baked[4])
            if "glb" in fmt:
                self._timed(job, "glb", lambda: self._write_glb(baked, out / "model.glb", progress))
                job.files["glb"] = str(out / "model.glb")
            if "obj" in fmt:
                self._timed(job, "obj", lambda: self._write_obj(baked, out / "model.obj", progress))
                job.files.update({"obj": str(out / "model.obj"), "mtl": str(out / "model.mtl"),
                                  "texture": str(out / "model.png")})

    def _timed(self, job: Job, name: str, fn):
        t = time.perf_counter()
        try:
            return fn()
        finally:
            job.timings.setdefault("export", {})[name] = time.perf_counter() - t

    def _ensure_pipeline(self, job: Job, progress):
        if self.pipeline is None:
            progress("load", 0, 1)
            t = time.perf_counter()
            self.pipeline = self.runner._factory(self.device)
            job.timings["load_model"] = time.perf_counter() - t
        return self.pipeline

    # ------------------------------------------------------------------ job folder
    def _make_job_dir(self, job: Job) -> Path:
        root = self.runner.outputs_dir
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(job.started or time.time()).strftime("%Y%m%d-%H%M%S")
        out = root / f"{stamp}-{job.id[:8]}"
        # The lock first: another process's recovery pass then never takes this folder for a dead job's.
        lock = recovery.lock_path(root, out.name)
        fd = recovery.try_lock(lock)
        job._folder_lock = (fd, lock) if fd is not None else None
        try:
            out.mkdir()
        except BaseException:
            if job._folder_lock is not None:
                recovery.release_lock(*job._folder_lock)
                job._folder_lock = None
            raise
        return out

    def _settings_record(self, job: Job, settings: GenerationSettings) -> dict:
        source = {"source_job": job.source_id} if job.kind == "export" else {}
        return {"job_id": job.id, **source, "seed": settings.seed, "seed_was_random": job.settings.randomize_seed,
                "model": self.runner.model_path, "device": self.device,
                "inputs": [_describe_input(x) for x in job.inputs],
                "created": datetime.fromtimestamp(job.created).isoformat(timespec="seconds"),
                "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
                "settings": settings.to_dict(), **self._device_changes(job, settings)}

    def _device_changes(self, job: Job, settings: GenerationSettings) -> dict:
        """{"changed_for_device": {field: [submitted, used]}} for the fields `for_device` replaced."""
        from .settings import CPU_VALUES

        changed = {k: [getattr(job.settings, k), getattr(settings, k)] for k in CPU_VALUES
                   if getattr(job.settings, k) != getattr(settings, k)}
        return {"changed_for_device": changed} if changed else {}

    def _copy_inputs(self, job: Job, out: Path) -> None:
        for i, x in enumerate(job.inputs):
            base = "input" if i == 0 else f"input_{i + 1}"
            if isinstance(x, (str, os.PathLike)):
                src = Path(os.path.expanduser(os.fspath(x)))
                dest = out / (base + src.suffix.lower()[:10])
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
            elif isinstance(x, (bytes, bytearray, memoryview)):
                dest = out / (base + _sniff_extension(bytes(x[:16])))
                write_atomic(dest, bytes(x))
            elif hasattr(x, "save"):                  # PIL image
                dest = out / (base + ".png")
                with atomic_path(dest) as tmp:
                    x.save(tmp, format="PNG")
            else:
                continue
            job.files[base] = str(dest)
            if not isinstance(x, (str, os.PathLike)):
                # From now on the copy stands for it: a long-running server (the REST API) then holds
                # no upload in memory once its job has started.
                job.inputs[i] = str(dest)

    # ------------------------------------------------------------------ exports
    def _write_ply(self, gaussian, path: Path, progress) -> None:
        progress("ply", 0, 1)
        with atomic_path(path) as tmp:
            gaussian.save_ply(tmp)
        progress("ply", 1, 1)

    def _write_video(self, gaussian, path: Path, settings: GenerationSettings, progress, cancel) -> None:
        from trellis.utils.render_utils import render_video, save_video

        frames = render_video(gaussian, resolution=settings.video_resolution, num_frames=settings.video_frames,
                              verbose=False, progress=lambda i, n: progress("video", i, n), cancel=cancel)["color"]
        with atomic_path(path) as tmp:
            save_video(frames, tmp, fps=settings.video_fps, progress=lambda i, n: progress("encode", i, n),
                       cancel=cancel)

    def _write_glb(self, baked, path: Path, progress) -> None:
        from trellis.utils.export import make_glb_mesh

        progress("glb", 0, 1)
        with atomic_path(path) as tmp:
            make_glb_mesh(*baked[:4]).export(tmp)
        progress("glb", 1, 1)

    def _write_obj(self, baked, path: Path, progress) -> None:
        from trellis.utils.export import save_obj

        progress("obj", 0, 1)
        # save_obj writes model.obj + model.mtl + model.png: into a hidden temp folder, then moved.
        tmp_dir = path.parent / f".obj-partial-{uuid.uuid4().hex[:8]}"
        tmp_dir.mkdir()
        moved = []
        try:
            save_obj(*baked[:4], str(tmp_dir / path.name))
            files = sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".obj")     # the .obj last
            for f in files:
                os.replace(f, path.parent / f.name)
                moved.append(path.parent / f.name)
        except BaseException:
            for f in moved:
                with contextlib.suppress(OSError):
                    f.unlink()
            raise
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        progress("obj", 1, 1)

    def _write_timings(self, job: Job, out: Optional[Path]) -> None:
        if out is None:
            return
        try:
            write_atomic(out / "timings.json", _json_bytes(_jsonable(job.timings)))
            job.files["timings"] = str(out / "timings.json")
        except OSError:
            pass          # the assets are written; a missing timings file is not worth failing the job


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return str(obj)


def _snapshot(d: dict) -> dict:
    """A copy of a dict the worker may be adding to (dict() copies without releasing the GIL, so
    another thread can iterate the copy safely), nested dicts included."""
    return {k: _snapshot(v) if isinstance(v, dict) else v for k, v in dict(d).items()}


def _drop_tracebacks(err: BaseException) -> None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        err.__traceback__ = None
        err = err.__cause__ or err.__context__


def _sniff_extension(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return ".tif"
    return ".bin"
