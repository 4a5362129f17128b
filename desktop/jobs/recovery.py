"""What a stopped app left in the outputs folder: marked, cleaned and known again at the next start.

A job folder ends with `timings.json` (done) or `error.json` (failed, cancelled, interrupted). A
server killed mid-job (kill -9, a power cut, a closed console) leaves a folder with neither, maybe a
hidden partial file (`.preview.partial-1a2b3c4d.mp4`, `.obj-partial-…/`), in the temp folder the mesh
decimation's `trellis_simplify_*` folder, and the records of the jobs it had accepted but not started
(`.queue-*`, queued.py). `recover_outputs`, run by every JobRunner as it starts:

* makes each record of a dead process's queue an interrupted job folder (unless its job made its own),
* marks each unfinished job folder interrupted (an `error.json` with `state: interrupted`; nothing of
  the folder is deleted but the hidden partial files),
* removes stale partial files and the temp folders of processes that have ended,
* returns the jobs of the folders (done, failed, cancelled, interrupted), so that the API and the
  UI know them again after a restart. A folder whose records cannot be read (truncated, garbage, nested too
  deep, the wrong kind of JSON) never stops a start: it is listed as a job of error_kind "damaged", left as
  it is, with one warning line.

Several processes may share one outputs folder (the UI and the API both default to `outputs`): while
a job runs, its process holds an OS lock on `<outputs>/.<folder name>.lock` (taken before the folder
is made, released once its final file is written; the OS drops it when the process dies, kill -9
included), and a folder whose lock is held elsewhere is left alone; so are the queues and temp folders
of live processes (each owned through an OS lock too).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from trellis.export import temp_dirs

from ..families import FAMILIES
from ..settings import GenerationSettings, submitted_settings
from . import queued
from .folder import JOB_DIR, JobFolder, lock_path, release_lock, try_lock
from .job import ERROR_KINDS, JOB_KINDS, Job, JobState, Progress

# Temp folders of the export: the background decimation's (trellis.export.cleanup.pieces.TEMP_PREFIX, owned by
# their process) and xatlas's (unmarked; its child works inside it).
TEMP_PREFIXES = ("trellis_simplify_", "trellis_uv_")
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
    damaged: list = field(default_factory=list)       # (folder, what is wrong) listed as damaged

    def summary(self) -> str:
        return (f"{len(self.jobs)} earlier job(s) in the outputs folder; {len(self.interrupted)} unfinished "
                f"marked interrupted; {len(self.removed)} leftover(s) removed"
                + (f"; {len(self.damaged)} damaged folder(s) listed as they are" if self.damaged else ""))


KILLED = "the app was killed or the computer stopped"


def _listing(root: Path) -> list:
    try:
        return sorted(root.iterdir(), key=lambda p: p.name) if root.is_dir() else []
    except OSError:
        return []


def recover_outputs(outputs_dir, temp_dir: Optional[str] = None, warn=None) -> Recovery:
    """Mark, clean and read back the job folders of `outputs_dir` (see the module doc). Never raises
    for what it finds on disk. `warn(line)` (default: a line on stderr) hears of each damaged folder."""
    root = Path(outputs_dir)
    rec = Recovery()
    entries = _listing(root)
    try:
        made, gone = queued.recover(root, entries, KILLED)
    except OSError:                  # an unreadable queue: its records wait for the next start
        made, gone = [], []
    rec.interrupted += [str(p) for p in made]
    rec.removed += gone
    if made or gone:
        entries = _listing(root)
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
    say = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    for folder, problem in rec.damaged:
        say(f"warning: damaged job folder {folder} ({problem}): listed as damaged and left as it is")
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
                _mark_interrupted(jf, KILLED)
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
        if job.error_kind == "damaged":
            rec.damaged.append((str(folder), job.detail))


def _mark_interrupted(folder: JobFolder, how: str) -> None:
    folder.write_error({"state": "interrupted", "error": INTERRUPTED_MESSAGE.format(how=how), "kind": "interrupted",
                        "detail": None, "timings": {}, "marked": datetime.now().isoformat(timespec="seconds")})


def remove_stale_temp_dirs(temp_dir: Optional[str] = None) -> list:
    """This app's temp folders (TEMP_PREFIXES) whose process is gone. A folder marked by its owner
    (trellis.export.temp_dirs) goes as soon as that process has ended, however old or young, and never while
    it runs; an unmarked one (another tool's, an older version's) only once older than TEMP_GRACE_S and no
    process works in it (older than TEMP_MAX_AGE_S where the processes' folders cannot be read)."""
    base = Path(temp_dir or tempfile.gettempdir())
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(TEMP_PREFIXES) and p.is_dir()
                      and not p.is_symlink()]
    except OSError:
        return []
    removed, unmarked = [], []
    for p in candidates:
        state = temp_dirs.owner_state(p)
        if state == "gone":
            if temp_dirs.remove_if_gone(p):
                removed.append(str(p))
        elif state == "unmarked":
            unmarked.append(p)
    if not unmarked:
        return removed
    in_use = _process_dirs()
    now = time.time()
    for p in unmarked:
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
    """The working folders of the running processes (a tool may work inside its temp folder); None where they
    cannot be read (no /proc)."""
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

DAMAGED_MESSAGE = ("damaged job folder: {problems}. Its files are left as they are (download them from the "
                   "job's files); the job cannot be shown or run again from them")


def job_from_folder(folder: Path):
    """The Job of a finished (or interrupted) job folder, as the API reports it: named by its settings.json's
    job id (by the folder's name when that is missing or not this folder's); error_kind "damaged" when a record
    of it cannot be read. None only when the folder itself cannot be listed."""
    jf = JobFolder(folder)
    try:
        values, damage = jf.records()
        files = jf.file_kinds()
    except OSError:
        return None
    try:
        return _job(jf, values, damage, files)
    except Exception as err:               # readable records holding values of the wrong kinds
        damage.append(f"its records cannot be read ({type(err).__name__}: {err})")
        return _job(jf, {"settings": None, "error": None, "timings": None}, damage, files)


def _job(jf: JobFolder, values: dict, damage: list, files: dict) -> Job:
    folder = jf.path
    record = values["settings"] or {}
    job_id = record.get("job_id")
    if not (isinstance(job_id, str) and job_id.startswith(folder.name[-8:]) and job_id.isalnum()):
        job_id = folder.name
    try:
        used = GenerationSettings.from_dict(record.get("settings"))
    except Exception:                        # an older app's fields, or values out of today's ranges
        used = GenerationSettings()
    inputs = [files[k] for k in sorted(files, key=lambda k: (len(k), k)) if k.startswith("input")]
    created = _created(record, folder)
    source = record.get("source_job") if isinstance(record.get("source_job"), str) else None
    kind = record.get("kind") if record.get("kind") in JOB_KINDS else "export" if source else "generate"
    prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
    device = record.get("device") if isinstance(record.get("device"), str) else None
    listed = record.get("inputs") if isinstance(record.get("inputs"), list) else []
    job = Job(id=job_id, inputs=inputs or [str(x) for x in listed], settings=submitted_settings(used, record),
              kind=kind, source_id=source, prompt=prompt, mesh=files.get("mesh"), out_dir=str(folder), files=files,
              used_settings=used, device=device, created=created, started=created,
              family=record.get("family") if record.get("family") in FAMILIES else None)
    error, timings = values["error"], values["timings"]
    if damage:
        job.state, job.error_kind = JobState.FAILED, "damaged"
        job.detail = "; ".join(damage)
        job.error = DAMAGED_MESSAGE.format(problems=job.detail)
        job.finished = created
    elif timings is not None and error is None:
        job.state = JobState.DONE
        job.timings = timings
        job.finished = jf.modified("timings")
        total = timings.get("total")
        total = float(total) if isinstance(total, (int, float)) and not isinstance(total, bool) else 0.0
        job.progress = Progress("done", 1, 1, 1.0, 0.0, total, "")
        warnings = timings.get("warnings")
        job.warnings = [w for w in warnings if isinstance(w, str)] if isinstance(warnings, list) else []
    else:
        error = error or {}
        state = str(error.get("state") or "failed")
        kind = str(error.get("kind") or ("cancelled" if state == "cancelled" else "internal"))
        job.state = JobState.CANCELLED if state in ("cancelled", "interrupted") else JobState.FAILED
        job.error_kind = "interrupted" if state == "interrupted" else kind if kind in ERROR_KINDS else "internal"
        job.error = str(error.get("error") or state)
        job.timings = error.get("timings") if isinstance(error.get("timings"), dict) else {}
        job.finished = jf.modified("error")
    job.mark_ended()
    return job


def _created(record: dict, folder: Path) -> float:
    """When the job was submitted: settings.json's `created`, else the folder name's stamp, else its mtime."""
    for text, fmt in ((record.get("created"), None), (folder.name[:15], "%Y%m%d-%H%M%S")):
        try:
            return (datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)).timestamp()
        except (TypeError, ValueError, OverflowError, OSError):
            continue
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0
