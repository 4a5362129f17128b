"""The page's header names the outputs folder as people read it: the home folder as ~, the whole path its
tooltip (a long /home/<user>/... line said little and wrapped the header)."""
import os

from desktop.ui.status import home_path
from tests.helpers.recorder import Recorder


def fake_home(monkeypatch, home):
    home.mkdir()
    for name in ("HOME", "USERPROFILE"):              # os.path.expanduser's on POSIX and on Windows
        monkeypatch.setenv(name, str(home))


def test_a_path_under_home_starts_with_a_tilde(monkeypatch, tmp_path):
    home = tmp_path / "home"
    fake_home(monkeypatch, home)
    assert home_path(home / "trellis" / "out") == os.path.join("~", "trellis", "out")
    assert home_path(home) == "~"
    assert home_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    assert home_path(tmp_path / "home2" / "out") == str(tmp_path / "home2" / "out")      # a sibling named alike
    assert home_path("outputs") == "outputs"                                             # relative: as given


def test_the_header_shows_the_short_path_with_the_whole_one_as_its_tooltip(monkeypatch, tmp_path):
    from desktop import ui

    home = tmp_path / "home"
    fake_home(monkeypatch, home)
    out = home / "trellis-outputs"
    app = ui.TrellisApp(Recorder(out))
    try:
        header = app.header_text()
    finally:
        app.close()
    short = os.path.join("~", "trellis-outputs")
    assert header.endswith(f'outputs: <code title="{out}">{short}</code>'), header
    assert header.count(str(out)) == 1
