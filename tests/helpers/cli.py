"""`python -m desktop ...` in a subprocess from the repository's root, as a user runs it, and the job folders it
leaves."""
import os
import subprocess
import sys

from tests.helpers.repo import ROOT_DIR as ROOT

# Small everything: 2 + 2 steps, an 8-frame 64² preview, a 64² texture baked from 4 views.
SMALL = ["--steps", "2", "--texture-size", "64", "--set", "video_frames=8", "--set", "video_resolution=64",
         "--set", "fill_holes=false", "--set", "bake_views=4", "--set", "bake_resolution=64"]


def desktop(*args, timeout=180, prefix=(), **kw):
    """The finished `python -m desktop ARGS` (output captured as text); `prefix` wraps the command (unshare ...)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([*prefix, sys.executable, "-m", "desktop", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def job_folders(out):
    """The job folders under `out`, sorted (none when it does not exist)."""
    return sorted(os.path.join(out, d) for d in os.listdir(out)) if os.path.isdir(out) else []
