"""A file as Blender's own importers see it: ``inspected(path)`` runs blender_inspect.py (beside this file) in
headless Blender and returns its JSON (materials, their wired maps, meshes, UV maps, faces)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("blender_inspect.py")


def inspected(path) -> dict:
    """What blender_inspect.py prints for `path` (a GLB or an OBJ); the test fails where Blender is not installed."""
    blender = shutil.which("blender")
    if blender is None:
        pytest.fail("Blender is not installed: `./run.sh test` installs Debian's blender package (as root)")
    # Blender's own Python with a plain environment: it finds its home from the first python3.x on PATH, so a
    # pyenv or venv Python there would hide the system's packages (numpy) from it; the system's folders only.
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR")}
    env["PATH"] = os.pathsep.join([os.path.dirname(blender), "/usr/bin", "/bin"])
    proc = subprocess.run([blender, "-b", "--factory-startup", "--python", str(SCRIPT), "--", str(path)],
                          capture_output=True, text=True, timeout=300, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("INSPECT ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[len("INSPECT "):])
