"""Where the repository's parts are, for a test at any depth of the tests' tree."""
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
ROOT_DIR = str(ROOT)                  # the same, as the text path the os.path-based tests join onto
DATA = TESTS / "data"
JS_DIR = TESTS / "js"
BENCHMARKS = ROOT / "benchmarks"
