"""Folders owned by the process that made them, so that another process can tell a live one from a leftover.

A folder made by ``make(prefix, dir)`` holds ``.owner``: a file its process keeps open with an OS lock
(``fcntl.flock``; ``msvcrt.locking`` on Windows) for the folder's lifetime, its pid written once the lock is
held. The OS drops the lock when the process ends, however it ends (kill -9 and power cuts included), so

    owner_state(folder)   "alive": its process still holds the lock
                          "gone": it was locked and no process holds it now: a leftover, safe to remove
                          "unmarked": no lock was ever taken (another tool's folder, a file system without
                          locks, the instant between making the folder and locking it)

needs no process table (none on Windows) and cannot be fooled by a reused pid. ``adopt(folder)`` takes a
leftover over (the caller holds its lock while it cleans it up), ``remove_if_gone(folder)`` removes one.

The lock file is opened without inheritance (a child process started by subprocess never holds it; a forked
copy of the process that has not exec'd does, and the folder then lives as long as it), and the pid is written
only after the lock is taken, so a non-empty ``.owner`` means that a lock was held on it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from typing import Optional

OWNER = ".owner"


def _lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting; False when another open file holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class OwnedDir:
    """A folder whose lock this process holds: ``path``; ``remove()`` drops the lock and deletes the folder,
    ``release()`` only drops the lock (the folder then reads as "gone" to every process)."""

    def __init__(self, path: str, fd: Optional[int]):
        self.path = path
        self._fd = fd

    def __repr__(self) -> str:
        return f"OwnedDir({self.path!r})"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def remove(self) -> None:
        # The lock file is closed first: Windows cannot delete an open file.
        self.release()
        shutil.rmtree(self.path, ignore_errors=True)


def _mark(folder: str) -> Optional[int]:
    """The locked, pid-marked ``.owner`` of a new ``folder``; None where no lock can be taken there."""
    path = os.path.join(folder, OWNER)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return None
    if not _lock(fd):
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)           # left unmarked: the age rules of the callers apply
        return None
    with contextlib.suppress(OSError):
        os.write(fd, f"{os.getpid()} {time.time():.3f}\n".encode())
    return fd


def make(prefix: str, dir: Optional[str] = None) -> OwnedDir:
    """A new folder (``tempfile.mkdtemp(prefix=prefix, dir=dir)``) owned by this process until ``remove()``."""
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    try:
        return OwnedDir(path, _mark(path))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _open_owner(folder: str) -> Optional[int]:
    """An fd on ``folder``'s marked ``.owner`` (None when there is none or it is empty: unmarked)."""
    path = os.path.join(folder, OWNER)
    try:
        if os.path.getsize(path) == 0:
            return None
        return os.open(path, os.O_RDWR)
    except OSError:
        return None


def adopt(folder: str) -> Optional[OwnedDir]:
    """``folder`` taken over from its owner that is gone (this process now holds its lock); None when its owner
    is alive or it is unmarked."""
    fd = _open_owner(os.fspath(folder))
    if fd is None:
        return None
    if not _lock(fd):
        os.close(fd)
        return None
    return OwnedDir(os.fspath(folder), fd)


def owner_state(folder: str) -> str:
    """"alive", "gone" or "unmarked" (see the module doc)."""
    fd = _open_owner(os.fspath(folder))
    if fd is None:
        return "unmarked"
    try:
        return "gone" if _lock(fd) else "alive"
    finally:
        os.close(fd)


def remove_if_gone(folder: str) -> bool:
    """Remove ``folder`` when its owner is gone; True when it was removed."""
    taken = adopt(folder)
    if taken is None:
        return False
    taken.remove()
    return not os.path.exists(taken.path)
