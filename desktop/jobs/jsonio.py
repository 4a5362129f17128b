"""JSON files of a job folder: written readable (`json_bytes`, `jsonable`) and read back without trusting them
(`load_json`: a damaged file says what is wrong with it, and never raises; only a regular file is read, and no
further than MAX_JSON_BYTES: a symlink to /dev/zero or a FIFO is refused at once)."""
from __future__ import annotations

import json
from pathlib import Path

from trellis.core.inputfile import (MAX_JSON_DEPTH, InputFileError, json_depth,  # noqa: F401  (the app's names)
                                    load_json_text, read_json_file)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode("utf-8")


def jsonable(obj):
    """`obj` with every leaf JSON can hold (numpy / torch scalars as numbers, anything else as text)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    return str(obj)


# A job's JSON files hold a few KB: a larger one is damage (or not ours), never read into memory.
MAX_JSON_BYTES = 16 * 2 ** 20


def load_json(path: Path, max_bytes: int = MAX_JSON_BYTES, what: str = "a job's record") -> tuple:
    """(parsed value, None); (None, None) when the file is missing; (None, what is wrong) when it cannot be
    read: not a regular file, not JSON (truncated, garbage, not UTF-8), nested too deep for the parser, larger
    than `max_bytes` (`what` names what such a file holds), unreadable."""
    try:
        return read_json_file(path, max_bytes, what=what), None
    except FileNotFoundError:
        return None, None
    except InputFileError as err:         # not a regular file, too large, not UTF-8, not JSON, nested too deep
        return None, err.reason
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    except MemoryError:
        return None, "is too large to read"


def read_json(path: Path):
    """The parsed file, None when it is missing or cannot be read (see load_json)."""
    return load_json(path)[0]
