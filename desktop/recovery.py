"""What a stopped app left in the outputs folder: marked, cleaned and known again at the next start.

A job folder ends with `timings.json` (done) or `error.json` (failed, cancelled, interrupted). A
server killed mid-job (kill -9, a power cut, a closed console) leaves a folder with neither, maybe a
hidden partial file (`.model.partial-1a2b3c4d.glb`, `.obj-partial-…/`) and, in the temp folder, the
mesh decimation's `trellis_simplify_*` folder. `recover_outputs`, run by every JobRunner as it starts:

* marks each unfinished job folder interrupted (an `error.json` with `state: interrupted`; nothing of
  the folder is deleted but the hidden partial files),
* removes stale partial files and this app's temp folders that no running process uses,
* returns the jobs of the folders (done, failed, cancelled, interrupted), so that the API and the
  UI know them again after a restart.

Several processes may share one outputs folder (the UI and the API both default to `outputs`): while
a job runs, its process holds an OS lock on `<outputs>/.<folder name>.lock` (taken before the folder
is made, released once its final file is written; the OS drops it when the process dies, kill -9
included), and a folder whose lock is held elsewhere is left alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

# <YYYYmmdd-HHMMSS>-<first 8 hex digits of the job id>: the folders JobRunner makes.
JOB_DIR = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
TEMP_PREFIXES = ("trellis_simplify_",)      # temp folders of the export's background decimation
# A temp folder younger than this may belong to a job that is just starting in another process.
TEMP_GRACE_S = 60.0
# Where no process list can be read (not Linux), only temp folders older than this are removed.
TEMP_MAX_AGE_S = 3600.0

INTERRUPTED_MESSAGE = ("interrupted: the app stopped while this job ran ({how}); nothing of it was lost but "
                       "the files it had not finished. Run the job again (its settings.json has the settings "
                       "and seed).")

# File name -> kind in Job.files (as the worker names them).
_FILE_KINDS = {"model.glb": "glb", "model.ply": "ply", "model.obj": "obj", "model.mtl": "mtl",
               "model.png": "texture", "preview.mp4": "mp4", "settings.json": "settings",
               "timings.json": "timings", "error.json": "error", "preprocessed.png": "preprocessed"}


# ---------------------------------------------------------------------------------------------
# The running job's lock
# ---------------------------------------------------------------------------------------------

def lock_path(outputs_dir: Path, folder_name: str) -> Path:
    return Path(outputs_dir) / f".{folder_name}.lock"


def try_lock(path: Path) -> Optional[int]:
    """An open, exclusively locked file descriptor on `path` (created if missing); None when another
    process holds the lock (or the file cannot be made)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release_lock(fd: Optional[int], path: Path) -> None:
    """Drop a lock taken by try_lock and remove its file."""
    if fd is None:
        return
    if os.name == "nt":            # Windows cannot remove an open file
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The pass at start-up
# ---------------------------------------------------------------------------------------------

@dataclass
class Recovery:
    jobs: list = field(default_factory=list)          # Job objects of the folders, oldest first
    interrupted: list = field(default_factory=list)   # folders marked interrupted now
    removed: list = field(default_factory=list)       # partial files, stale locks and temp folders removed

    def summary(self) -> str:
        return (f"{len(self.jobs)} earlier job(s) in the outputs folder; {len(self.interrupted)} unfinished "
                f"marked interrupted; {len(self.removed)} leftover(s) removed")


def recover_outputs(outputs_dir, temp_dir: Optional[str] = None) -> Recovery:
    """Mark, clean and read back the job folders of `outputs_dir` (see the module doc). Never raises
    for what it finds on disk: an unreadable folder is skipped."""
    root = Path(outputs_dir)
    rec = Recovery()
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name) if root.is_dir() else []
    except OSError:
        entries = []
    folders = [p for p in entries if JOB_DIR.match(p.name) and p.is_dir()]
    names = {p.name for p in folders}
    for folder in folders:
        try:
            _recover_folder(root, folder, rec)
        except OSError:
            continue
    # Locks of jobs killed between taking the lock and making their folder.
    for p in entries:
        if p.name.startswith(".") and p.name.endswith(".lock") and p.name[1:-5] not in names \
                and JOB_DIR.match(p.name[1:-5]):
            fd = try_lock(p)
            if fd is not None:
                release_lock(fd, p)
                rec.removed.append(str(p))
    rec.removed += remove_stale_temp_dirs(temp_dir)
    rec.jobs.sort(key=lambda j: j.created)
    return rec


def _final_state(folder: Path) -> bool:
    return (folder / "timings.json").is_file() or (folder / "error.json").is_file()


def _recover_folder(root: Path, folder: Path, rec: Recovery) -> None:
    lock = lock_path(root, folder.name)
    if not _final_state(folder):
        fd = try_lock(lock)
        if fd is None:
            return                      # running in another process: not ours to touch
        try:
            if not _final_state(folder):    # (it may have finished while we looked)
                _mark_interrupted(folder, "the app was killed or the computer stopped")
                rec.interrupted.append(str(folder))
            rec.removed += _remove_partials(folder)
        finally:
            release_lock(fd, lock)
    else:
        if lock.exists():
            fd = try_lock(lock)
            if fd is None:
                return                  # its process is still writing its last files
            release_lock(fd, lock)
            rec.removed.append(str(lock))
        rec.removed += _remove_partials(folder)
    job = job_from_folder(folder)
    if job is not None:
        rec.jobs.append(job)


def _mark_interrupted(folder: Path, how: str) -> None:
    from .jobs import _json_bytes, write_atomic

    write_atomic(folder / "error.json", _json_bytes({
        "state": "interrupted", "error": INTERRUPTED_MESSAGE.format(how=how), "kind": "interrupted",
        "detail": None, "timings": {}, "marked": datetime.now().isoformat(timespec="seconds")}))


def _remove_partials(folder: Path) -> list:
    """The hidden partial files and folders that atomic writes leave when their process dies."""
    removed = []
    for p in folder.iterdir():
        if not (p.name.startswith(".") and "partial-" in p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        if not p.exists():
            removed.append(str(p))
    return removed


def remove_stale_temp_dirs(temp_dir: Optional[str] = None) -> list:
    """This app's temp folders (TEMP_PREFIXES) that no process works in any more."""
    base = Path(temp_dir or tempfile.gettempdir())
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(TEMP_PREFIXES) and p.is_dir()
                      and not p.is_symlink()]
    except OSError:
        return []
    if not candidates:
        return []
    in_use = _process_dirs()
    now = time.time()
    removed = []
    for p in candidates:
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        if in_use is None:
            stale = age > TEMP_MAX_AGE_S
        else:
            resolved = str(p.resolve())
            stale = age > TEMP_GRACE_S and not any(d == resolved or d.startswith(resolved + os.sep) for d in in_use)
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(str(p))
    return removed


def _process_dirs() -> Optional[set]:
    """The working folders of the running processes (the decimation child works in its temp folder);
    None where they cannot be read (no /proc)."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return None
    dirs = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                dirs.add(os.readlink(entry / "cwd"))
    return dirs


# ---------------------------------------------------------------------------------------------
# A folder -> a Job
# ---------------------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def folder_files(folder: Path) -> dict:
    """kind -> path of the finished files of a job folder (hidden partial files excluded)."""
    files = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        stem = p.stem
        if p.name in _FILE_KINDS:
            files[_FILE_KINDS[p.name]] = str(p)
        elif stem == "input" or re.fullmatch(r"input_\d+", stem):
            files[stem] = str(p)
        elif re.fullmatch(r"preprocessed_\d+", stem):
            files[stem] = str(p)
    return files


def job_from_folder(folder: Path):
    """The Job of a finished (or interrupted) job folder, as the API reports it; None when the
    folder has no readable settings.json naming its job."""
    from .jobs import ERROR_KINDS, Job, JobState, Progress
    from .settings import GenerationSettings

    record = _read_json(folder / "settings.json")
    if not isinstance(record, dict):
        return None
    job_id = record.get("job_id")
    if not isinstance(job_id, str) or not job_id.startswith(folder.name[-8:]):
        return None
    try:
        settings = GenerationSettings.from_dict(record.get("settings"))
    except (TypeError, ValueError):
        settings = GenerationSettings()
    files = folder_files(folder)
    inputs = [files[k] for k in sorted(files, key=lambda k: (len(k), k)) if k.startswith("input")]
    try:
        created = datetime.fromisoformat(str(record.get("created"))).timestamp()
    except ValueError:
        created = (folder / "settings.json").stat().st_mtime
    job = Job(id=job_id, inputs=inputs or list(record.get("inputs") or []), settings=settings,
              kind="export" if record.get("source_job") else "generate", source_id=record.get("source_job"),
              out_dir=str(folder), files=files, used_settings=settings, device=record.get("device"),
              created=created, started=created)
    error = _read_json(folder / "error.json")
    timings = _read_json(folder / "timings.json")
    if isinstance(timings, dict) and not isinstance(error, dict):
        job.state = JobState.DONE
        job.timings = timings
        job.finished = os.path.getmtime(folder / "timings.json")
        job.progress = Progress("done", 1, 1, 1.0, 0.0, float(timings.get("total") or 0.0), "")
    else:
        error = error if isinstance(error, dict) else {}
        state = str(error.get("state") or "failed")
        kind = str(error.get("kind") or ("cancelled" if state == "cancelled" else "internal"))
        job.state = JobState.CANCELLED if state in ("cancelled", "interrupted") else JobState.FAILED
        job.error_kind = "interrupted" if state == "interrupted" else kind if kind in ERROR_KINDS else "internal"
        job.error = str(error.get("error") or state)
        job.timings = error.get("timings") if isinstance(error.get("timings"), dict) else {}
        with contextlib.suppress(OSError):
            job.finished = os.path.getmtime(folder / "error.json")
    job._done.set()
    return job
