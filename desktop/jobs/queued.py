"""Queued jobs written down, so that no stop (Ctrl-C, SIGTERM, kill -9, a power cut) loses a job it accepted.

A job waits in memory until a worker takes it, and its folder is made only once it starts. So that a client
that got an id (the API's 202) can still ask about it after any stop, the runner writes each job down as it
accepts it: `<outputs>/.queue-<random>/<YYYYmmdd-HHMMSS>-<id8>/` (the time of submission), laid out as a job
folder (settings.json naming the job and its settings; the inputs copied: input.png, ..., input_mesh.<ext>).
A job that cannot be written down (a full disk, an outputs folder it may not write in) is refused
(NotRecordedError), never run unrecorded. Each runner has one `.queue-*` folder, owned by its process
(trellis.export.temp_dirs: an OS lock that the OS drops when the process ends) and removed whenever it holds no
record.

* The job's own folder holds its settings.json (it started), or the user cancelled it while it waited: its record
  is removed.
* It failed before making its folder (its input, its model, background removal, memory, the disk): the record gets
  error.json with that failure (state failed, its error_kind) and moves into the outputs folder, a job folder like
  any other, so that the failure is listed and the job run again after a restart too. Not with `keep_failed`
  False (the CLI: it reports each failure as it ends, and its inputs are the user's own files): the record goes.
* The app stops first (shutdown with a reason: Ctrl-C, SIGTERM, closing the window) and the job had not made
  its folder: the record gets error.json `state: interrupted` and moves into the outputs folder, a job folder
  like any other (listed, its files served, run again with one call: rerun.py).
* The process was killed: the next start (`recover`, from recovery.py) finds the `.queue-*` folder of a process
  that is gone and does the same for each record whose job has no folder of its own.

`settings_record` makes every settings.json's entries: a queued job's here, a started job's for its steps
(steps.settings_record), a batch item's with its own entries beside them.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Optional

from trellis.export import temp_dirs

from ..settings import device_changes, family_changes
from .folder import JOB_DIR, MESH_INPUT, JobFolder, atomic_path, sniff_extension, write_atomic
from .job import describe_input
from .meshes import MESH_FORMATS

QUEUE_PREFIX = ".queue-"

QUEUED_INTERRUPTED_MESSAGE = ("interrupted: the app stopped before this job could finish ({how}); its inputs and "
                              "settings are kept in its folder. Run it again (\"Use these settings\" in the "
                              "history; over REST: POST /v1/jobs/{job_id}/rerun).")


def interrupted_message(how: str, job_id: str) -> str:
    return QUEUED_INTERRUPTED_MESSAGE.format(how=how, job_id=job_id)


def interrupted_error(message: str) -> dict:
    """error.json of a job the app stopped before it made its folder."""
    return {"state": "interrupted", "error": message, "kind": "interrupted", "detail": None, "timings": {}}


class NotRecordedError(RuntimeError):
    """A job that could not be written down (queued.QueueRecords.add): refused, nothing queued. `error_kind` says
    why in ERROR_KINDS' words ("disk"); every surface that submits answers it (the REST API: 507)."""

    error_kind = "disk"

    def __init__(self, message: str, folder: str):
        super().__init__(message)
        self.folder = folder


def not_recorded_message(root: Path, err: OSError) -> str:
    """What to do when a job cannot be written down in the outputs folder `root` (a full disk in the words of a job
    that fails on one: failures.classify)."""
    why = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        cause = f"the outputs folder is full ({root}): free some disk space there or choose another outputs folder"
    else:
        cause = (f"it could not be written down in the outputs folder {root} ({why}): let this user write there or "
                 "choose another outputs folder")
    return (f"the job was not queued: {cause}, then submit it again. Nothing was kept (a job that is not written "
            "down would be lost by a stop of the app).")


def record_name(job) -> str:
    """The record's (and later, if the app stops first, the job folder's) name: submission time and id."""
    return f"{datetime.fromtimestamp(job.created).strftime('%Y%m%d-%H%M%S')}-{job.id[:8]}"


def settings_record(job, model_path: str, settings=None, device: Optional[str] = None,
                    versions: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """settings.json of `job`, the one place its entries are made. With `settings` (those it runs with: the seed drawn,
    lowered for `device`), everything needed to run it again, and the `versions` it ran with; without (a job not started
    yet), what its queue record knows: no device, the seed only where it was chosen. `extra`: entries the job's caller
    knows and the job does not (a batch item's name and key, where its input came from); they win."""
    s = job.settings
    used = s if settings is None else settings
    record = {"job_id": job.id, "kind": job.kind}
    if settings is None:
        record["queued"] = True
    if job.source_id:
        record["source_job"] = job.source_id
    if settings is not None or not s.randomize_seed:
        record["seed"] = used.seed
    record.update({"seed_was_random": s.randomize_seed, "model": model_path, "device": device,
                   "inputs": [describe_input(x) for x in job.inputs]})
    if job.prompt is not None:
        record["prompt"] = job.prompt
    if job.mesh is not None:
        record["mesh"] = job.mesh[0] if isinstance(job.mesh, tuple) else str(job.mesh)
    if job.family is not None:                  # the image model family that runs it (a rerun asks for it again)
        record["family"] = job.family
    record["created"] = datetime.fromtimestamp(job.created).isoformat(timespec="seconds")
    if settings is not None and job.started:        # the history's order: jobs started within one second differ here
        record["started"] = round(job.started, 6)
    if versions is not None:
        record["versions"] = dict(versions)
    record["settings"] = used.to_dict()
    if job.asked_settings is not None:
        record["changed_for_family"] = family_changes(job.asked_settings, s)
    if settings is not None:
        changed = {k: list(v) for k, v in device_changes(s, settings).items()}
        if changed:
            record["changed_for_device"] = changed
    record.update(extra or {})
    return record


def _write_inputs(folder: Path, job) -> None:
    """The job's images as input.<ext>, input_2.<ext>, ... and its 3-D model as input_mesh.<ext> (each atomic).
    An input path that is not a readable file is left out (the job fails on it when it starts)."""
    for i, x in enumerate(job.inputs):
        base = "input" if i == 0 else f"input_{i + 1}"
        if isinstance(x, (str, os.PathLike)):
            src = Path(os.path.expanduser(os.fspath(x)))
            if src.is_file():
                with atomic_path(folder / (base + src.suffix.lower()[:10])) as tmp:
                    shutil.copyfile(src, tmp)
        elif isinstance(x, (bytes, bytearray, memoryview)):
            write_atomic(folder / (base + sniff_extension(bytes(x[:16]))), bytes(x))
        elif hasattr(x, "save"):                       # PIL image
            with atomic_path(folder / (base + ".png")) as tmp:
                x.save(tmp, format="PNG")
    mesh = job.mesh
    if isinstance(mesh, tuple):                        # (file name, bytes) of an upload
        ext = os.path.splitext(str(mesh[0]))[1].lower()
        write_atomic(folder / (MESH_INPUT + (ext if ext in MESH_FORMATS else ".bin")), bytes(mesh[1]))
    elif mesh is not None and os.path.isfile(os.path.expanduser(os.fspath(mesh))):
        src = Path(os.path.expanduser(os.fspath(mesh)))
        ext = src.suffix.lower()
        with atomic_path(folder / (MESH_INPUT + (ext if ext in MESH_FORMATS else ".bin"))) as tmp:
            shutil.copyfile(src, tmp)


def _free_name(root: Path, name: str) -> Path:
    """`root/name`, or (taken by another job: the same id prefix in the same second) the first free second after."""
    target = root / name
    if not target.exists():
        return target
    stamp = datetime.strptime(name[:15], "%Y%m%d-%H%M%S").timestamp()
    for k in range(1, 3600):
        target = root / f"{datetime.fromtimestamp(stamp + k).strftime('%Y%m%d-%H%M%S')}{name[15:]}"
        if not target.exists():
            return target
    raise FileExistsError(f"no free folder name for {name} in {root}")


def to_job_folder(record: Path, root: Path, error: dict) -> Path:
    """Make a record a job folder of `root` that ended with `error` (error.json's entries: interrupted_error's, or a
    failure's) written first, then the folder moved; the folder."""
    JobFolder(record).write_error({**error, "marked": datetime.now().isoformat(timespec="seconds")})
    target = _free_name(root, record.name)
    os.rename(record, target)
    return target


class QueueRecords:
    """The records of one runner's accepted jobs (see the module doc). `add` raises NotRecordedError for a job it
    cannot write down (a full disk); `ended` never raises (a record it cannot turn into a folder waits for the next
    start)."""

    def __init__(self, outputs_dir, model_path: str):
        self.root = Path(outputs_dir)
        self.model_path = model_path
        self._lock = threading.Lock()
        self._owned: Optional[temp_dirs.OwnedDir] = None
        self._records: dict = {}          # job id -> its record folder
        self._busy = 0                    # records being written or removed (the folder must stay meanwhile)
        self._made_root = False           # the outputs folder was made for a record: it goes when left empty
        self.keep_failed = True           # a job failed before its folder keeps its record as that folder

    def add(self, job) -> None:
        """Write `job` down: its settings and inputs, in a record folder made atomically. NotRecordedError (nothing
        left behind) when it cannot be written: the caller must not queue it."""
        with self._lock:
            self._busy += 1
        try:
            with self._lock:
                if self._owned is None:
                    self._made_root = self._made_root or not self.root.exists()
                    self.root.mkdir(parents=True, exist_ok=True)
                    self._owned = temp_dirs.make(QUEUE_PREFIX, str(self.root))
                base = Path(self._owned.path)
            name = record_name(job)
            tmp = base / f".{name}.partial-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                _write_inputs(tmp, job)
                JobFolder(tmp).write_settings(settings_record(job, self.model_path))
                os.rename(tmp, base / name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._records[job.id] = base / name
        except OSError as err:
            raise NotRecordedError(not_recorded_message(self.root, err), str(self.root)) from None
        finally:
            with self._lock:
                self._busy -= 1
            self._drop_if_empty()

    def ended(self, job, failure: Optional[dict] = None) -> None:
        """`job` has its own folder now, or ended in this process: its record goes, unless it ended before it made
        its folder (no out_dir), stopped by the app (error_kind "interrupted") or with `failure` (its error.json's
        entries) where `keep_failed`: then the record becomes that folder, and `job.out_dir` names it."""
        with self._lock:
            record = self._records.pop(job.id, None)
            self._busy += 1               # until its record is gone, another job's end must not drop the folder
        try:
            kept = job.error_kind == "interrupted" or (failure is not None and self.keep_failed)
            if record is not None and not job.out_dir and kept:
                error = failure or interrupted_error(job.error or interrupted_message("the app stopped", job.id))
                job.out_dir = str(to_job_folder(record, self.root, error))
                job.files.update(JobFolder(job.out_dir).file_kinds())
            elif record is not None:
                shutil.rmtree(record, ignore_errors=True)
        except OSError as err:             # the record stays where it is: the next start marks it
            print(f"warning: job {job.id} ended before its folder and its record could not become one "
                  f"({err.strerror or err}); the next start makes it an interrupted job folder",
                  file=sys.stderr, flush=True)
        finally:
            with self._lock:
                self._busy -= 1
            self._drop_if_empty()

    def _drop_if_empty(self) -> None:
        with self._lock:
            if self._owned is None or self._records or self._busy:
                return
            owned, self._owned = self._owned, None
            try:
                if any(not n.startswith(".") for n in os.listdir(owned.path)):
                    owned.release()       # a record left behind: the next start takes it over
                    return
            except OSError:
                pass
            owned.remove()
            if self._made_root:           # jobs that left no folder of their own leave no outputs folder
                with contextlib.suppress(OSError):
                    self.root.rmdir()     # only when empty


# ---------------------------------------------------------------------------------------------
# At start: the records of processes that are gone
# ---------------------------------------------------------------------------------------------

def recover(root: Path, entries: list, how: str) -> tuple:
    """([job folders made], [leftovers removed]) from the `.queue-*` folders of `root` whose process is gone
    (`entries`: the outputs folder's listing). A record whose job has a folder of its own (it started) is dropped;
    every other becomes an interrupted job folder."""
    made, removed = [], []
    names = {p.name for p in entries}
    for queue in entries:
        if not queue.name.startswith(QUEUE_PREFIX) or not queue.is_dir():
            continue
        taken = temp_dirs.adopt(queue)
        if taken is None:
            if temp_dirs.owner_state(queue) != "unmarked" or _age(queue) < UNMARKED_AFTER_S:
                continue                  # its process runs (or is making it)
            taken = temp_dirs.OwnedDir(str(queue), None)
        kept = 0
        try:
            for record in sorted(queue.iterdir()):
                if record.name.startswith(".") or not JOB_DIR.match(record.name) or not record.is_dir() \
                        or _has_folder(root, names, record):
                    continue              # a record cut short (never accepted), or its job made its folder
                try:
                    made.append(to_job_folder(record, root,
                                              interrupted_error(interrupted_message(how, str(_job_id(record))))))
                except OSError:
                    kept += 1
        except OSError:
            kept += 1
        if kept:
            taken.release()               # tried again at the next start
        else:
            taken.remove()
            removed.append(str(queue))
    return made, removed


# A `.queue-*` folder never marked (a file system without locks) is taken as a dead process's after this long.
UNMARKED_AFTER_S = 3600.0


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _has_folder(root: Path, names: set, record: Path) -> bool:
    """Whether the record's job made a folder of its own (named after its start: the same id prefix)."""
    job_id = _job_id(record)
    suffix = "-" + record.name[16:]
    return any(name.endswith(suffix) and JOB_DIR.match(name) and _job_id(root / name) == job_id for name in names)


def _job_id(folder: Path):
    record = JobFolder(folder).settings_record()
    return record.get("job_id") if isinstance(record, dict) else None
