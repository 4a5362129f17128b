"""The learned stage times (stage_times.StageTimes) kept between the app's starts, so that its first job has an ETA:
one small JSON file in the per-user state folder (desktop.state_dir), never in the outputs folder.

    {"format": "trellis-desktop stage times", "version": 1,
     "devices": {"cpu": {"saved": <unix time>, "stages": {...}, "kinds": {...}},
                 "cuda:NVIDIA H200": {...}}}

Each device name (`device_key`) has its own entry: a GPU's times say nothing of the CPU's or another GPU's. A worker
loads its device's entry when it starts and writes it back after each job that ended well, atomically (a temp file,
then a rename), leaving the other devices' entries as they are. The file only ever helps: one that is missing,
unreadable, damaged or of another version is ignored (said once on stderr) and written anew by the next job; a
folder that cannot be written (read-only, full) costs the next start its first ETA, never a job (said once).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from .folder import write_atomic
from .jsonio import load_json
from .stage_times import StageTimes, checked_snapshot

__all__ = ["FILE_NAME", "FORMAT", "VERSION", "MAX_DEVICES", "MAX_BYTES", "StageTimesFile", "device_key"]

FILE_NAME = "stage_times.json"
FORMAT, VERSION = "trellis-desktop stage times", 1
# Devices kept (the most recently saved first): a machine has a few; a laptop's eGPU or a swapped card adds one.
MAX_DEVICES = 8
# A few KB per device: a larger file is not ours (or damaged), never read into memory.
MAX_BYTES = 256 * 1024

# One process's workers write the same file in turn (each rewrites the file with its own entry merged in).
WRITE_LOCK = threading.Lock()
# The paths whose write already failed once in this process: said once, not after every job.
WRITE_FAILED: set = set()


def device_key(device: str, gpu_name: Optional[str] = None) -> str:
    """The name a device's times are kept under: "cpu", "cuda:NVIDIA H200" (the GPU's model, not its index: the
    same card keeps its times when the GPUs are numbered otherwise)."""
    kind = str(device).split(":")[0]
    return f"{kind}:{gpu_name}" if gpu_name else kind


def read_entries(path: Path) -> tuple:
    """({device key: entry}, None) of the file at `path`; ({}, None) when there is none; ({}, what is wrong)."""
    data, wrong = load_json(path, MAX_BYTES, "the stage times it holds")
    if wrong or data is None:
        return {}, wrong
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}, "is not a file of stage times"
    if data.get("version") != VERSION:
        return {}, f"is of version {data.get('version')!r}, this app reads version {VERSION}"
    devices = data.get("devices")
    if not isinstance(devices, dict):
        return {}, "holds no devices"
    return devices, None


class StageTimesFile:
    """One device's entry in the stage times file at `path` (a folder's FILE_NAME)."""

    def __init__(self, path, key: str):
        self.path, self.key = Path(path), key

    def load(self, times: StageTimes) -> bool:
        """Fill `times` with this device's saved entry; False (said on stderr) when the file cannot be used."""
        try:
            entries, wrong = read_entries(self.path)
            entry = entries.get(self.key)
            if wrong is None and entry is not None:
                try:
                    times.restore(checked_snapshot(entry))
                    return True
                except ValueError as err:
                    wrong = f"holds damaged times for {self.key} ({err})"
        except Exception as err:          # whatever is wrong with the file, the app starts without it
            wrong = f"cannot be read ({err!r})"
        if wrong:
            print(f"trellis: the learned stage times in {self.path} are not used: it {wrong}; the first job estimates "
                  "its time from scratch and its end writes the file anew", file=sys.stderr, flush=True)
        return False

    def save(self, times: StageTimes) -> bool:
        """Write `times` as this device's entry (the others kept, the oldest beyond MAX_DEVICES dropped); False
        when the file cannot be written (said once per path): the job that learned them is not affected."""
        try:
            with WRITE_LOCK:
                entries = {}
                for key, entry in read_entries(self.path)[0].items():
                    try:
                        entries[key] = dict(checked_snapshot(entry), saved=float(entry.get("saved", 0)))
                    except (ValueError, TypeError):
                        pass          # a damaged entry of another device: its next save writes it anew
                others = sorted((k for k in entries if k != self.key), key=lambda k: -entries[k]["saved"])
                newest = [self.key] + others[:MAX_DEVICES - 1]
                entries[self.key] = dict(compact(times.snapshot()), saved=time.time())
                data = {"format": FORMAT, "version": VERSION, "devices": {k: entries[k] for k in sorted(newest)}}
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, json.dumps(data, separators=(",", ":")) + "\n")
                WRITE_FAILED.discard(str(self.path))
            return True
        except Exception as err:          # a read-only or full disk: the job has ended well all the same
            if str(self.path) not in WRITE_FAILED:
                WRITE_FAILED.add(str(self.path))
                why = err.strerror if isinstance(err, OSError) and err.strerror else repr(err)
                print(f"trellis: could not save the learned stage times to {self.path} ({why}); jobs go on, but the "
                      "first job after a restart estimates its time from scratch", file=sys.stderr, flush=True)
            return False


def compact(snapshot: dict) -> dict:
    """A snapshot with its seconds to 6 significant digits: the file stays a few KB."""
    stages = {s: [float(f"{rate:.6g}"), steps, count] for s, (rate, steps, count) in snapshot["stages"].items()}
    return {"stages": stages, "kinds": {k: compact(t) for k, t in snapshot.get("kinds", {}).items()}}
