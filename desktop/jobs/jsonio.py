"""JSON files of a job folder: written readable (`json_bytes`, `jsonable`) and read back without trusting them
(`load_json`: a damaged file says what is wrong with it, and never raises)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

# Nesting a JSON text may have before it is parsed: a job's records, a request body, a batch item or a
# manifest event need 2-5 levels; the parser recurses, so a deeper text is refused before it is parsed
# (whatever the interpreter's recursion limit is at the time).
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_DEPTH_CHUNK = 1 << 20


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


# A job's JSON files hold a few KB: a larger one is damage (or not ours), never read into memory.
MAX_JSON_BYTES = 16 * 2 ** 20


def load_json(path: Path) -> tuple:
    """(parsed value, None); (None, None) when the file is missing; (None, what is wrong) when it cannot be
    read: not JSON (truncated, garbage, not UTF-8), nested too deep for the parser, too large, unreadable."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    if size > MAX_JSON_BYTES:
        return None, f"is {size:,} bytes, far larger than a job's record"
    try:
        with open(path, encoding="utf-8") as f:
            return load_json_text(f.read()), None
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    except UnicodeDecodeError:
        return None, "is not text (UTF-8)"
    except ValueError as err:
        return None, f"is not JSON ({err})"
    except MemoryError:
        return None, "is too large to read"


def read_json(path: Path):
    """The parsed file, None when it is missing or cannot be read (see load_json)."""
    return load_json(path)[0]
