"""The per-user folder where the app keeps what it learned about this machine between its starts (e.g. how long each
stage of a job takes here, for the first job's ETA): never the outputs folder, which holds job folders only.

    $TRELLIS_STATE_DIR                            when set (tests, containers, portable installs)
    %LOCALAPPDATA%\\TrellisDesktop                 on Windows
    $XDG_STATE_HOME/trellis-desktop               elsewhere; ~/.local/state/trellis-desktop by default

No heavy import: the servers' `--help` stays instant. Nothing here creates the folder: its writer does, when it
first has something to keep.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

__all__ = ["STATE_DIR_ENV", "state_dir"]

STATE_DIR_ENV = "TRELLIS_STATE_DIR"


def state_dir(env: Optional[Mapping] = None, windows: Optional[bool] = None) -> Path:
    """The state folder that `env` (default os.environ) names, on Windows or not (default: this system's)."""
    env = os.environ if env is None else env
    windows = os.name == "nt" if windows is None else windows
    if env.get(STATE_DIR_ENV):
        return Path(os.path.expanduser(env[STATE_DIR_ENV]))
    if windows:
        home = env.get("USERPROFILE") or os.path.expanduser("~")
        return Path(env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")) / "TrellisDesktop"
    home = env.get("HOME") or os.path.expanduser("~")
    # The XDG spec: a relative $XDG_STATE_HOME is invalid and ignored.
    xdg = env.get("XDG_STATE_HOME", "")
    return Path(xdg if os.path.isabs(xdg) else os.path.join(home, ".local", "state")) / "trellis-desktop"
