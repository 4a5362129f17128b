"""A test's own `child(...)` run in a fresh Python: for checks that change a module-level table (a new row of
desktop.settings_table, say) before anything that reads it is imported, which one process cannot undo."""
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.repo import ROOT


def run_child(test_file, *args, timeout=300) -> subprocess.CompletedProcess:
    """`child(*args)` of the test module at `test_file`, imported by its dotted name from the repository's root in
    a new interpreter; returns the finished process (text output captured)."""
    module = ".".join(Path(test_file).resolve().relative_to(ROOT).with_suffix("").parts)
    code = f"import {module} as t; t.child(*{args!r})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
