"""docs/CODE_MAP.md stays a map of this tree: every path it names exists, and every package of the library, of its
export and of the app is on it (a new package is added to the map with the change that makes it)."""
import re

from tests.helpers.repo import ROOT

MAP = ROOT / "docs" / "CODE_MAP.md"


def missing_paths() -> list:
    """The paths a row names that exist neither from the repository's root nor inside the row's own path (a row's
    second column names files of its first: `request.py` of `desktop/jobs/`)."""
    missing, seen = [], 0
    for line in MAP.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        where, what = line.split("|")[1:3]
        bases = [ROOT / p for p in re.findall(r"`([\w./-]+)`", where)]
        for name in re.findall(r"`([\w./-]+)`", where + what):
            seen += 1
            if not any((base / name).exists() for base in [ROOT, *bases]):
                missing.append(name)
    assert seen > 40
    return missing


def test_every_path_on_the_map_exists():
    missing = missing_paths()
    assert missing == [], f"docs/CODE_MAP.md names paths that do not exist: {missing}"


def test_every_package_is_on_the_map():
    text = MAP.read_text(encoding="utf-8")
    packages = [p.parent.relative_to(ROOT).as_posix() for parent in ("trellis", "trellis/export", "desktop")
                for p in (ROOT / parent).glob("*/__init__.py")]
    assert "desktop/jobs" in packages and "trellis/export/uv" in packages
    absent = sorted(p for p in packages if f"`{p}/`" not in text and f"(`{p.rsplit('/', 1)[1]}/`)" not in text)
    assert absent == [], f"packages missing from docs/CODE_MAP.md: {absent}"
    for top in ("installer", "extensions", "benchmarks", "tests", "docs"):
        assert f"`{top}/`" in text, top
