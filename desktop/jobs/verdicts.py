"""A check's verdict on a file, remembered for the file as it stands, so that a file checked twice is read once:
the page checks a 3-D model when it is uploaded and again when Generate is pressed, and a 135 MB OBJ takes seconds.

    VERDICTS = FileVerdicts(remembered=(InputError,))
    ext = VERDICTS.check(path, check_file, limits)     # check_file(path) runs only for a new or changed file

A verdict belongs to the path and the file it names then: its device and inode, size and modification time (ns),
and `limits` (what else the verdict depends on). A file written, replaced or touched since is checked again, and a
file that changes while it is being checked is not remembered. A refusal of a type in `remembered` is remembered
too and raised again as a new exception with the same words; any other error (a read that failed, no memory) is
not. The memory is small (the last few files) and safe to share between threads; checks run outside its lock, so
two threads checking one new file at once both read it.
"""
from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict

__all__ = ["FileVerdicts"]


class FileVerdicts:
    """The last `size` verdicts of one check on files (see the module doc): a memory a check, as its key is the
    file and the limits, not the check."""

    def __init__(self, remembered: tuple = (), size: int = 8):
        self.remembered, self.size = tuple(remembered), size
        self._lock = threading.Lock()
        self._kept: OrderedDict = OrderedDict()     # (path, limits) -> (file's stamp, result, refusal or None)

    def check(self, path, check, limits=()):
        """check(path)'s result, or its refusal raised: remembered from an earlier call on the same unchanged file
        with the same `limits`, else worked out now."""
        key = (os.path.abspath(os.fspath(path)), limits)
        stamp = _stamp(path)
        if stamp is None:                           # gone or no regular file: the check says what is wrong
            return check(path)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == stamp:
                self._kept.move_to_end(key)
        if kept is not None and kept[0] == stamp:
            return _replayed(kept[1], kept[2])
        result, refusal = None, None
        try:
            result = check(path)
        except self.remembered as err:
            refusal = (type(err), err.args)
        if _stamp(path) == stamp:                   # unchanged while it was read: the verdict is the file's
            with self._lock:
                self._kept[key] = (stamp, result, refusal)
                self._kept.move_to_end(key)
                while len(self._kept) > self.size:
                    self._kept.popitem(last=False)
        return _replayed(result, refusal)

    def __len__(self) -> int:
        return len(self._kept)

    def forget(self) -> None:
        with self._lock:
            self._kept.clear()


def _stamp(path):
    """(device, inode, size, modification time in ns) of a regular file; None for anything else."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def _replayed(result, refusal):
    if refusal is not None:
        kind, args = refusal
        raise kind(*args)
    return result
