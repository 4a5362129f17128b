"""The per-user state folder (desktop/state_dir.py) each system's way, and the tests' own (tests/conftest.py)."""
import os
import subprocess
import sys
from pathlib import Path

from desktop.state_dir import STATE_DIR_ENV, state_dir


def test_the_state_folder_on_each_system():
    linux = {"HOME": "/home/ada"}
    assert state_dir(linux, windows=False) == Path("/home/ada/.local/state/trellis-desktop")
    assert state_dir(dict(linux, XDG_STATE_HOME="/var/xdg"), windows=False) == Path("/var/xdg/trellis-desktop")
    # a relative XDG_STATE_HOME is invalid (the XDG spec): the default holds
    assert state_dir(dict(linux, XDG_STATE_HOME="rel/state"), windows=False) == \
        Path("/home/ada/.local/state/trellis-desktop")
    windows = {"LOCALAPPDATA": r"C:\Users\ada\AppData\Local", "XDG_STATE_HOME": "/ignored"}
    assert state_dir(windows, windows=True) == Path(r"C:\Users\ada\AppData\Local") / "TrellisDesktop"
    assert state_dir({"USERPROFILE": "/users/ada"}, windows=True) == Path("/users/ada/AppData/Local/TrellisDesktop")
    # the variable wins everywhere, and ~ in it is the user's home
    for system in (False, True):
        assert state_dir(dict(windows, **linux, TRELLIS_STATE_DIR="/srv/state"), windows=system) == Path("/srv/state")
    assert state_dir({STATE_DIR_ENV: "~/st"}, windows=False) == Path(os.path.expanduser("~/st"))
    assert state_dir({STATE_DIR_ENV: ""}, windows=False) == Path(os.path.expanduser("~/.local/state/trellis-desktop"))


def test_tests_and_the_apps_they_start_never_use_the_real_home(state_folder, tmp_path_factory):
    assert state_dir() == Path(state_folder)
    assert Path(state_folder).is_relative_to(tmp_path_factory.getbasetemp())
    child = subprocess.run([sys.executable, "-c", "from desktop.state_dir import state_dir; print(state_dir())"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert child.stdout.strip() == state_folder
