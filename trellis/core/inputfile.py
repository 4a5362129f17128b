"""Files read as input, never trusted: a regular file only, read no further than a bound, JSON depth-checked.

A FIFO would block the reader until some other process writes to it, a device such as /dev/zero never ends, a
folder cannot be read, and the size a path claims (os.path.getsize is 0 for a device) says nothing of what a read
returns. So a file is opened without waiting (O_NONBLOCK: a FIFO's open returns at once), its type is checked on
the opened descriptor (a symlink swapped in between the check and the open cannot get past it), and it is read in
chunks that stop one byte past the bound. JSON's parser recurses, so a text nested deeper than a bound is refused
before it is parsed. Every refusal is an InputFileError (an OSError and a ValueError: a caller that catches either
for a file it cannot use catches it) whose `reason` says what is wrong in a user's words.
"""
from __future__ import annotations

import json
import os
import re
import stat

__all__ = ["InputFileError", "NotRegularFileError", "FileTooLargeError", "MAX_JSON_DEPTH", "MAX_CONFIG_BYTES",
           "kind_of", "open_regular", "read_regular", "json_depth", "load_json_text", "read_json_file"]

# Nesting a JSON text may have before it is parsed: a job's records, a ckpt's args, a pipeline.json, a request body
# need 2-5 levels; a deeper text is refused before the recursive parser sees it (whatever the recursion limit).
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
# A model's config (pipeline.json, a ckpt JSON) holds a few KB; a larger one is damaged or not a config.
MAX_CONFIG_BYTES = 4 * 2 ** 20
_DEPTH_CHUNK = 1 << 20
_READ_CHUNK = 1 << 20


class InputFileError(OSError, ValueError):
    """A file that cannot be used as input: "<path> <reason>". `path` and `reason` for a caller's own words."""

    def __init__(self, path, reason: str):
        super().__init__(f"{os.fspath(path)} {reason}")
        self.path, self.reason = os.fspath(path), reason

    def __str__(self) -> str:
        return self.args[0]


class NotRegularFileError(InputFileError):
    """The path names a FIFO, a device, a socket or a folder (or a symlink to one), not a regular file."""


class FileTooLargeError(InputFileError):
    """The file holds more bytes than a file of its kind ever does."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, in a user's words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _refuse(path, mode: int):
    raise NotRegularFileError(path, f"is not a regular file (it is {kind_of(mode)})")


def open_regular(path, text: bool = False):
    """The open file `path` (binary, or UTF-8 text), only if it is a regular file: NotRegularFileError at once
    otherwise, without blocking on a FIFO. FileNotFoundError / PermissionError as open() raises them."""
    try:
        mode = os.stat(path).st_mode          # refused before any open: opening some devices has effects
    except ValueError as err:                 # a NUL in the name
        raise InputFileError(path, f"cannot be read ({err})") from None
    if not stat.S_ISREG(mode):
        _refuse(path, mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode           # the file opened, whatever the path names now
        if not stat.S_ISREG(mode):
            _refuse(path, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    if text:
        import io

        return io.TextIOWrapper(f, encoding="utf-8")
    return f


def read_regular(path, max_bytes: int, what: str = "a file of its kind") -> bytes:
    """The bytes of the regular file `path`, read in chunks and stopped past `max_bytes` (FileTooLargeError): a
    file that grows while it is read, or claims another size, is never read further than that."""
    parts, total = [], 0
    with open_regular(path) as f:
        while True:
            part = f.read(min(_READ_CHUNK, max_bytes + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
            if total > max_bytes:
                raise FileTooLargeError(path, f"is larger than {_size(max_bytes)}, far larger than {what}")
    return b"".join(parts)


def _size(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n >> 10} KB" if n >= 1 << 10 else f"{n} bytes"


def json_depth(text) -> int:
    """The deepest nesting of [ and { in a JSON text (str or bytes; outside its strings), without parsing it.
    C-speed passes only: a request body may hold 256 MB of base64."""
    import numpy as np

    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    skeleton = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw))
    a = np.frombuffer(skeleton, np.uint8)
    depth = deepest = 0
    for start in range(0, len(a), _DEPTH_CHUNK):       # in chunks: the running depth of one chunk at a time
        part = a[start:start + _DEPTH_CHUNK]
        steps = np.where((part == ord("[")) | (part == ord("{")), np.int32(1), np.int32(-1))
        running = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def load_json_text(text, max_depth: int = MAX_JSON_DEPTH):
    """json.loads, refusing (ValueError) a text nested deeper than `max_depth` before parsing it."""
    if json_depth(text) > max_depth:
        raise ValueError(f"JSON nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def read_json_file(path, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "a file of its kind"):
    """The parsed JSON of the regular file `path`. InputFileError says what is wrong (not a regular file, larger
    than `max_bytes`, not UTF-8, not JSON, nested deeper than `max_depth`); FileNotFoundError / PermissionError
    as open() raises them."""
    raw = read_regular(path, max_bytes, what)
    try:
        return load_json_text(raw.decode("utf-8"), max_depth)
    except UnicodeDecodeError:
        raise InputFileError(path, "is not text (UTF-8)") from None
    except ValueError as err:
        raise InputFileError(path, f"is not JSON ({err})") from None
