"""Reading what a batch is given, and what it finds in its outputs folder, defensively.

Only regular files are opened: a pipe (FIFO), socket or device named in a list, or given as the list,
would block the reader forever or never end. JSON is depth-checked before it is parsed: the parser
recurses, and a line nested a few thousand levels deep ends in RecursionError. No torch here.
"""
from __future__ import annotations

import os
import stat

from ..jobs.jsonio import MAX_JSON_DEPTH, json_depth, load_json_text  # noqa: F401  (the batch reads them here)

# A job folder's settings.json or a work folder's owner file is a few KB; a larger one is not ours.
JSON_FILE_MAX_BYTES = 16 << 20


class NotAFileError(OSError):
    """The path names something other than a regular file (a folder, a pipe, a socket, a device)."""


def what_it_is(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def special_file_problem(path: str, what: str = "an image file"):
    """None when `path` is a regular file, or is missing or unreadable (the reader says so itself); else
    what it is instead, as a message. Nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return f"{path} is {what_it_is(mode)}, not {what}; give {what}"


def read_regular(path, limit: int, what: str = "a file") -> bytes:
    """The bytes of the regular file `path` (at most `limit`). Raises NotAFileError for anything else,
    without waiting on it: the open does not block and the type is checked on the opened file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotAFileError(f"{path} is {what_it_is(mode)}, not {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise NotAFileError(f"{path} is larger than {limit >> 20} MB: too large to be {what}")
    return data


def read_json_file(path, limit: int = JSON_FILE_MAX_BYTES):
    """The parsed JSON of a regular file; None when it is missing, not a regular file, too large, not
    UTF-8 or not JSON (a damaged folder is then treated as incomplete, never as a crash or a hang)."""
    try:
        return load_json_text(read_regular(path, limit).decode("utf-8"))
    except (OSError, ValueError):
        return None
