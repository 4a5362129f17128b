"""The last resort of every `python -m desktop` command: an error nothing else caught is said in one line, with where
its full report (the traceback) was written, and the command exits 1; a user never sees a traceback.

Reports go to `crash-reports/` in the per-user state folder (desktop.state_dir), else the system's temp folder; the
newest MAX_REPORTS are kept. The same goes for an error that ends a thread of the command (threading.excepthook).
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

__all__ = ["MAX_REPORTS", "REPORTS_FOLDER", "write_report", "write_text_report", "said_in_one_line",
           "install_thread_hook"]

REPORTS_FOLDER = "crash-reports"
MAX_REPORTS = 20
EXIT_FAILED = 1


def _folders() -> list:
    from .state_dir import state_dir

    folders = []
    try:
        folders.append(state_dir() / REPORTS_FOLDER)
    except Exception:                    # noqa: BLE001  (a broken environment: the temp folder still takes it)
        pass
    folders.append(Path(tempfile.gettempdir()) / f"trellis-desktop-{REPORTS_FOLDER}")
    return folders


def write_report(command: str, err: BaseException, where: str = "") -> str | None:
    """Write `err`'s traceback (and what ran) to a new report file; its path, or None when no folder takes it."""
    return write_text_report(command, "".join(traceback.format_exception(type(err), err, err.__traceback__)), where)


def write_text_report(command: str, details: str, where: str = "") -> str | None:
    """Write `details` (a traceback's text) and what ran to a new report file; its path, or None when no folder
    takes it."""
    text = (f"python -m desktop {command}{f' ({where})' if where else ''}\n"
            f"argv: {sys.argv!r}\npython {sys.version.split()[0]} on {sys.platform}\n"
            f"time: {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{details}")
    name = f"{command or 'desktop'}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident() % 10000}.txt"
    for folder in _folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8", errors="backslashreplace")
            _prune(folder)
            return str(path)
        except OSError:
            continue
    return None


def _prune(folder: Path) -> None:
    """Keep the newest MAX_REPORTS reports: a command that fails in a loop never fills the disk."""
    try:
        reports = sorted(folder.glob("*.txt"), key=lambda p: p.stat().st_mtime)
        for old in reports[:-MAX_REPORTS]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def said_in_one_line(command: str, err: BaseException, where: str = "") -> str:
    """The line a user reads for an error nothing else caught, its report written first."""
    path = write_report(command, err, where)
    what = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    kind = type(err).__name__
    report = f"the full report is in {path}" if path else "no report could be written (the state and temp folders " \
                                                          "cannot be written)"
    if isinstance(err, MemoryError):
        head = "out of memory: close other programs, or try a smaller job"
    else:
        head = f"unexpected error ({kind}{f': {what}' if what else ''})"
    inside = f" in {where}" if where else ""
    return (f"error: {head}{inside}; {report}. Please include it when you report this problem.")


def install_thread_hook(command: str) -> None:
    """An error that ends one of the command's threads is said in one line (its report written), not as a
    traceback."""
    def hook(args):
        if args.exc_type is SystemExit:
            return
        thread = args.thread.name if args.thread is not None else "a thread"
        err = args.exc_value if args.exc_value is not None else args.exc_type()
        try:
            print(said_in_one_line(command, err, f"thread {thread}"), file=sys.stderr, flush=True)
        except Exception:                # noqa: BLE001  (stderr closed: nothing more can be said)
            pass
    threading.excepthook = hook
