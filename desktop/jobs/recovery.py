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
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from ..settings import GenerationSettings
from .folder import JOB_DIR, JobFolder, lock_path, release_lock, try_lock
from .job import ERROR_KINDS, JOB_KINDS, Job, JobState, Progress

TEMP_PREFIXES = ("trellis_simplify_",)      # temp folders of the export's background decimation
# A temp folder younger than this may belong to a job that is just starting in another process.
TEMP_GRACE_S = 60.0
# Where no process list can be read (not Linux), only temp folders older than this are removed.
TEMP_MAX_AGE_S = 3600.0

INTERRUPTED_MESSAGE = ("interrupted: the app stopped while this job ran ({how}); nothing of it was lost but "
                       "the files it had not finished. Run the job again (its settings.json has the settings "
                       "and seed).")


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


def _recover_folder(root: Path, folder: Path, rec: Recovery) -> None:
    lock = lock_path(root, folder.name)
    jf = JobFolder(folder)
    if not jf.is_final():
        fd = try_lock(lock)
        if fd is None:
            return                      # running in another process: not ours to touch
        try:
            if not jf.is_final():    # (it may have finished while we looked)
                _mark_interrupted(jf, "the app was killed or the computer stopped")
                rec.interrupted.append(str(folder))
            rec.removed += jf.remove_partials()
        finally:
            release_lock(fd, lock)
    else:
        if lock.exists():
            fd = try_lock(lock)
            if fd is None:
                return                  # its process is still writing its last files
            release_lock(fd, lock)
            rec.removed.append(str(lock))
        rec.removed += jf.remove_partials()
    job = job_from_folder(folder)
    if job is not None:
        rec.jobs.append(job)


def _mark_interrupted(folder: JobFolder, how: str) -> None:
    folder.write_error({"state": "interrupted", "error": INTERRUPTED_MESSAGE.format(how=how), "kind": "interrupted",
                        "detail": None, "timings": {}, "marked": datetime.now().isoformat(timespec="seconds")})


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

def job_from_folder(folder: Path):
    """The Job of a finished (or interrupted) job folder, as the API reports it; None when the
    folder has no readable settings.json naming its job."""
    jf = JobFolder(folder)
    record = jf.settings_record()
    if record is None:
        return None
    job_id = record.get("job_id")
    if not isinstance(job_id, str) or not job_id.startswith(folder.name[-8:]):
        return None
    try:
        settings = GenerationSettings.from_dict(record.get("settings"))
    except (TypeError, ValueError):
        settings = GenerationSettings()
    files = jf.file_kinds()
    inputs = [files[k] for k in sorted(files, key=lambda k: (len(k), k)) if k.startswith("input")]
    try:
        created = datetime.fromisoformat(str(record.get("created"))).timestamp()
    except ValueError:
        created = jf.created_fallback()
    kind = record.get("kind") if record.get("kind") in JOB_KINDS else "export" if record.get("source_job") \
        else "generate"
    prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
    job = Job(id=job_id, inputs=inputs or list(record.get("inputs") or []), settings=settings,
              kind=kind, source_id=record.get("source_job"), prompt=prompt, mesh=files.get("mesh"),
              out_dir=str(folder), files=files, used_settings=settings, device=record.get("device"),
              created=created, started=created)
    error = jf.error()
    timings = jf.timings()
    if timings is not None and error is None:
        job.state = JobState.DONE
        job.timings = timings
        job.finished = jf.modified("timings")
        job.progress = Progress("done", 1, 1, 1.0, 0.0, float(timings.get("total") or 0.0), "")
        job.warnings = [str(w) for w in timings.get("warnings") or [] if isinstance(w, str)]
    else:
        error = error or {}
        state = str(error.get("state") or "failed")
        kind = str(error.get("kind") or ("cancelled" if state == "cancelled" else "internal"))
        job.state = JobState.CANCELLED if state in ("cancelled", "interrupted") else JobState.FAILED
        job.error_kind = "interrupted" if state == "interrupted" else kind if kind in ERROR_KINDS else "internal"
        job.error = str(error.get("error") or state)
        job.timings = error.get("timings") if isinstance(error.get("timings"), dict) else {}
        job.finished = jf.modified("error")
    job._done.set()
    return job
