"""A finished job's destination limits as its export.json says them (``trellis.export.check_limits``), for every
surface alike: the CLI's lines and its `--strict` exit status, the API's `limits` field, the page's badge."""
from __future__ import annotations

import os
import threading

from .jsonio import load_json

__all__ = ["job_limits", "report_limits", "missed_limits"]

_CACHE: dict = {}           # export.json path -> ((mtime_ns, size), limits): the API asks on every status poll
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 256


def job_limits(job):
    """{destination, met, checks, reasons} of the job's export.json, or None (no export.json, no destination, or
    one that cannot be read)."""
    path = (job.files or {}).get("report")
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        hit = _CACHE.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    report, wrong = load_json(path)        # a regular file, bounded: a job folder's files are not trusted
    if wrong or report is None:
        return None
    limits = report_limits(report)
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[path] = (key, limits)
    return limits


def report_limits(report):
    """{destination, met, checks, reasons} of an export.json's dict, or None where it checked no limits."""
    limits = report.get("limits") if isinstance(report, dict) else None
    if not isinstance(limits, dict) or not isinstance(limits.get("met"), bool):
        return None
    checks = [c for c in limits.get("checks") or [] if isinstance(c, dict)]
    reasons = [str(r) for r in limits.get("reasons") or []]
    return {"destination": report.get("destination"), "met": limits["met"], "checks": checks, "reasons": reasons}


def missed_limits(limits) -> list:
    """The text of each limit missed (an export.json from before the checks: its reasons)."""
    if not limits:
        return []
    if limits["checks"]:
        return [str(c.get("text", c.get("limit"))) for c in limits["checks"] if not c.get("met")]
    return list(limits["reasons"])
