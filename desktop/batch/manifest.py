"""The batch's record in its outputs folder, and how an item's folder lands there exactly once.

    OUT/manifest.jsonl       one JSON event a line, appended by the driver only: "batch" (a run started),
                             "planned" (an item and the seed it will use), "retry", "done", "failed"
    OUT/summary.json         the last run's counts, throughput and failures
    OUT/<item name>/         a finished item: a job folder (settings.json, model.glb, timings.json, ...)
    OUT/.batch-work/         items being made: <name>.<token>/ (moved to OUT/<name> when complete)

An item's folder is made in .batch-work and moved onto OUT/<name> in one rename, which fails when OUT/<name>
already exists: whoever moves first wins, a second attempt of the same item (a worker presumed dead that
was not, a retry after a driver crash) finds the folder there and throws its copy away. So an item is in
OUT once or not at all, never half. The manifest says what was decided; the folders are the truth it is
checked against on a rerun: an item is finished when the manifest says done AND its folder is complete
(settings.json naming this item, timings.json, every requested file), or when its complete folder is there
though the manifest missed the news (the driver died between the rename and the line). Everything else is
done again: failed items, items that were running, folders with a file missing (those are moved to
.batch-work/replaced-<name>.<token> first, nothing is deleted). A damaged manifest line (torn by a crash,
not JSON, nested absurdly deep) is skipped and counted; a damaged settings.json makes its folder
incomplete. A manifest that cannot be written (a full disk) raises OutputError: the driver stops and
says so. No torch here.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import time
import uuid
from pathlib import Path

from ..jobs import folder as job_folder
from .files import load_json_text, read_json_file, what_it_is

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"          # the last run's summary table, as JSON
WORK_DIR = ".batch-work"
OWNER = ".owner.json"            # in a work folder while its item is made: who makes it (pid, host, device)
ITEM_KEY = "batch_item"          # the entry of settings.json that says which batch item a folder is


def source_key(kind: str, source: str) -> str:
    """What identifies an item's input across reruns (its kind and image path or prompt; a look's mesh path and
    image path: items.Item.identity)."""
    # surrogateescape: a path's bytes that are not UTF-8 (kept by Python as surrogates) hash as those bytes
    return hashlib.sha256(f"{kind}\0{source}".encode("utf-8", "surrogateescape")).hexdigest()[:16]


class OutputError(RuntimeError):
    """The outputs folder cannot be written (a full disk, a manifest that is not a file); the message says
    what to do."""


class Manifest:
    """The append-only event log. Only the driver writes it; each line is written whole and fsynced at
    once, so a crash loses at most the line being written, which the reader skips."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / MANIFEST
        self.events = []
        self.damaged = 0               # lines skipped: torn, not JSON, nested too deep, not an event
        self._check_is_file()
        if self.path.is_file():
            with open(self.path, "rb") as f:
                for line in f.read().splitlines():
                    try:
                        event = load_json_text(line.decode("utf-8"))
                    except ValueError:             # UnicodeDecodeError included
                        event = None
                    if isinstance(event, dict):
                        self.events.append(event)
                    elif line.strip():
                        self.damaged += 1
        self._file = None
        self._created = False

    def _check_is_file(self) -> None:
        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            return
        if not stat.S_ISREG(mode):
            raise OutputError(f"{self.path} is {what_it_is(mode)}, not the batch's record: move it away or choose "
                              "another -o")

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_is_file()
        try:
            torn = False
            if self.path.is_file() and self.path.stat().st_size:
                with open(self.path, "rb") as f:          # a line cut by a crash: start on a fresh line
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            self._created = not self.path.exists()
            self._file = open(self.path, "ab", buffering=0)
        except OSError as err:
            raise self._error(err) from None
        if torn:
            self._write(b"\n")

    def close(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        with contextlib.suppress(OSError):
            if self._created and self.path.stat().st_size == 0:
                self.path.unlink()                 # nothing could be written: leave no empty record

    def append(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self.events.append(record)
        if self._file is not None:
            self._write((json.dumps(record, default=str) + "\n").encode("utf-8"))
        return record

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view):]
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
        except OSError as err:
            raise self._error(err) from None

    def _error(self, err: OSError) -> OutputError:
        full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG)
        fix = ("free some disk space there or choose another -o" if full
               else "make it writable or choose another -o")
        return OutputError(f"cannot write the batch's record {self.path}: {err.strerror or err}; {fix}, then run the "
                           "same command again (finished items are kept)")

    def last(self) -> dict:
        """item name -> its last event (planned, retry, done, failed)."""
        latest = {}
        for e in self.events:
            if isinstance(e.get("item"), str):
                latest[e["item"]] = e
        return latest

    def planned_seeds(self) -> dict:
        """item name -> (source key, seed) of its latest "planned" event: a rerun keeps the seed."""
        return {e["item"]: (e.get("key"), e.get("seed")) for e in self.events
                if e.get("event") == "planned" and isinstance(e.get("item"), str)}


# ---------------------------------------------------------------------------------------------
# Item folders
# ---------------------------------------------------------------------------------------------

def expected_files(formats) -> list:
    """The file names a complete item folder has for `formats` (besides settings and timings)."""
    names = [job_folder.NAMES[f] for f in formats if f in job_folder.NAMES]
    if "obj" in formats:
        names += list(job_folder.OBJ_PARTS[1:])
    return names


def folder_item_key(path: Path):
    """The batch item key recorded in a folder's settings.json (None when there is none)."""
    record = read_json_file(Path(path) / job_folder.SETTINGS)
    if isinstance(record, dict) and isinstance(record.get(ITEM_KEY), dict):
        return record[ITEM_KEY].get("key")
    return None


def folder_problem(path: Path, key: str):
    """None when `path` is this item's complete folder; else what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    if folder_item_key(path) != key:
        return "not this item's folder"
    record = read_json_file(path / job_folder.SETTINGS)
    settings = record.get("settings") if isinstance(record, dict) else None
    formats = settings.get("formats") if isinstance(settings, dict) else None
    formats = [f for f in formats if isinstance(f, str)] if isinstance(formats, list) else []
    missing = [n for n in [job_folder.TIMINGS, *expected_files(formats)] if not (path / n).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


def new_work_folder(out_dir, name: str) -> Path:
    work = Path(out_dir) / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def write_owner(path: Path, device: str) -> None:
    """Who is making this work folder (the tests kill this pid mid-item; people read it after a crash)."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "device": device, "started": time.time()}
    job_folder.write_atomic(Path(path) / OWNER, json.dumps(record))


def commit(work: Path, final: Path) -> bool:
    """Move the complete work folder onto `final` in one rename. False (and the work folder removed) when
    `final` exists already: another attempt of this item landed first."""
    with contextlib.suppress(OSError):
        (Path(work) / OWNER).unlink()
    try:
        if os.path.lexists(final):
            raise FileExistsError(final)
        os.rename(work, final)       # POSIX: fails on a non-empty target; Windows: on any existing target
        return True
    except OSError:
        if not os.path.lexists(final):
            raise
        shutil.rmtree(work, ignore_errors=True)
        return False


def set_aside(out_dir, final: Path) -> Path:
    """Move an incomplete or foreign folder out of the way (into .batch-work), never deleting it."""
    work = Path(out_dir) / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    dest = work / f"replaced-{Path(final).name}.{uuid.uuid4().hex[:8]}"
    os.rename(final, dest)
    return dest


def write_files(out_dir, name: str, files: dict) -> Path:
    """A work folder filled with {relative name: bytes} (what a worker without the shared folder returns)."""
    path = new_work_folder(out_dir, name)
    for rel, data in files.items():
        target = path / rel
        if target.resolve().parent != path.resolve():
            raise ValueError(f"unexpected file name {rel!r} from a worker")
        job_folder.write_atomic(target, data)
    return path


def read_files(path: Path) -> dict:
    """{name: bytes} of a finished work folder's files (no sub-folders: a job folder has none)."""
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file() and p.name != OWNER}


def clean_work(out_dir) -> list:
    """Remove the work folders that no live process is making (left by a crash or a killed worker); the
    folders set aside (replaced-*) stay. Called by the driver before and after a run."""
    work = Path(out_dir) / WORK_DIR
    removed = []
    if not work.is_dir():
        return removed
    for p in work.iterdir():
        if p.name.startswith("probe-") and not p.is_dir():     # a Ray run's probe file, left by a crash
            with contextlib.suppress(OSError):
                p.unlink()
        if p.name.startswith("replaced-") or not p.is_dir():
            continue
        owner = read_json_file(p / OWNER)
        owner = owner if isinstance(owner, dict) else {}
        if owner.get("host") == socket.gethostname() and _alive(owner.get("pid")):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(str(p))
    with contextlib.suppress(OSError):
        work.rmdir()                 # only when empty
    return removed


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
