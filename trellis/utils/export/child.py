"""Child Python processes for the export's native steps (fast-simplification, xatlas).

Those libraries hold the GIL for seconds and cannot be interrupted (xatlas can even crash), so they run
in a child of the same interpreter and environment, started in a temporary folder (so nothing in the
caller's working directory shadows a module: the temp root itself where ``-P`` keeps it off sys.path, as
the pooled decimation children do), fed and read through ``.npz`` files in a folder of the caller's (the
decimation's is owned by its process, ``trellis.utils.owned_dirs``, not by a child's working folder). The
callers poll the child, so the GPU work of the caller goes on meanwhile, and kill it on cancel or timeout.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Optional


# Python 3.11+ ``-P``: the working folder is not put on the child's sys.path, so any folder may be its working
# folder (nothing there can shadow a module); older Pythons need an empty folder of its own.
SAFE_PATH = sys.version_info >= (3, 11)


def start(code: str, args, cwd: str, keep_stderr: bool = False,
          stdin: bool = False) -> Optional[subprocess.Popen]:
    """``python -c code *args`` in ``cwd`` (``-P`` first where the Python has it; with ``stdin``, a pipe the
    caller writes to as ``proc.stdin``); None when no child can be started here (the caller then does the
    work itself)."""
    try:
        return subprocess.Popen([sys.executable, *(["-P"] if SAFE_PATH else []), "-c", code, *map(str, args)],
                                cwd=cwd,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL)
    except OSError:
        return None


def stop(proc: Optional[subprocess.Popen]) -> None:
    """Kill ``proc`` if it still runs and reap it (nothing for None)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
