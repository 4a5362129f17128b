"""The export's child processes keep their freed heap (``processes.CHILD_HEAP``): a warm child's second pass over
the same arrays reuses its pages instead of faulting in fresh ones. Real children of this interpreter, their page
faults read from the kernel (glibc on Linux: other C libraries ignore the settings)."""
from __future__ import annotations

import os
import sys

import pytest

from trellis.export import processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                                reason="glibc's heap settings, not set by hand")

# Allocates and frees twelve 1 MiB arrays twenty times (the chart layout's pattern: many mid-sized temporaries,
# below numpy's huge-page size), then again: prints the page faults of the second pass.
_TWICE = """
import resource, sys
import numpy as np
def once():
    for _ in range(20):
        arrays = [np.ones(1 << 17) for _ in range(12)]     # written: every page touched
        del arrays
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
once()
sys.stderr.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def second_pass_faults(monkeypatch, heap: dict) -> int:
    monkeypatch.setattr(processes, "CHILD_HEAP", heap)
    proc = processes.start(_TWICE, (), processes.working_folder(os.getcwd()), keep_stderr=True)
    assert proc is not None
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return int(err.decode().strip().splitlines()[-1])


def test_children_keep_their_heap_between_passes(monkeypatch):
    pages = 20 * 12 * (1 << 20) // 4096        # the second pass's arrays, page by page
    kept = second_pass_faults(monkeypatch, dict(processes.CHILD_HEAP))
    fresh = second_pass_faults(monkeypatch, {})
    assert fresh > pages // 2                  # glibc's default: the freed heap is given back, then faulted in again
    assert kept < pages // 20                  # the heap kept: the pages are reused


def test_a_heap_setting_of_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "4096")
    env = processes.child_environment()
    assert env["MALLOC_TOP_PAD_"] == "4096"
    assert env["MALLOC_MMAP_THRESHOLD_"] == processes.CHILD_HEAP["MALLOC_MMAP_THRESHOLD_"]
