"""The tests' tree mirrors the source's (tests/trellis/export/ for trellis/export/, tests/desktop/api/ for desktop/api/,
tests/installer/ ...); tests/gpu/ holds what needs CUDA. What several test files share (runners, servers and free
ports, the browser app, small meshes, images and models) lives in tests/helpers/ and is imported by its full name
(``from tests.helpers.servers import LiveServer``: pytest.ini puts the repository's root on the path); a test module
never imports another one (tests/test_structure.py)."""
import itertools
import os
import sys

import pytest

from desktop.state_dir import STATE_DIR_ENV

# Under xdist, each worker's torch (and the servers and children it starts) gets its share of the cores: one OpenMP
# pool per worker on every core would oversubscribe them, and its spinning threads slow each other's tests down.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    if "torch" in sys.modules:                   # loaded before this file: its pool is sized already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(tryfirst=True)      # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Every test that uses a `browser` fixture (Playwright + Chromium: tests/desktop/ui/, tests/desktop/api/test_api_clients.py) is
    marked `browser`, so `-m "not browser"` leaves them out on a machine without one. (tests/gpu/conftest.py marks
    its tests `gpu`; `slow` is written on the tests themselves.)"""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


_STATE_DIRS = itertools.count()


def fresh_state_dir(tmp_path_factory) -> str:
    """A state folder of its own under the run's temp folder, not made until the app writes into it."""
    return str(tmp_path_factory.getbasetemp() / "state" / str(next(_STATE_DIRS)))


@pytest.fixture(scope="module", autouse=True)
def module_state_dir(tmp_path_factory):
    """The app's per-user state folder (desktop.state_dir) of a module's shared runners and servers: a test never
    reads or writes the real home's, and one module's learned stage times never reach another's first job."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STATE_DIR_ENV, fresh_state_dir(tmp_path_factory))
        yield


@pytest.fixture(autouse=True)
def state_folder(module_state_dir, monkeypatch, tmp_path_factory):
    """Each test's own state folder (apps it starts as children inherit it); returns its path (a str)."""
    folder = fresh_state_dir(tmp_path_factory)
    monkeypatch.setenv(STATE_DIR_ENV, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A tiny random-weight pipeline in the official folder layout, generated (never downloaded)."""
    from trellis.tools.tiny_pipeline import write_tiny_pipeline

    return write_tiny_pipeline(str(tmp_path_factory.mktemp("tiny_pipeline")), seed=0)


@pytest.fixture(scope="session")
def tiny_trellis2_dir(tmp_path_factory):
    """`python -m trellis.tools.tiny_pipeline --trellis2` output: a tiny random-weight TRELLIS.2 pipeline folder
    (the official pipeline.json and stems; its v1 structure decoder and DINOv3 inside it). Returns it (a str)."""
    from trellis.tools.tiny_trellis2_pipeline import write_trellis2_pipeline

    return write_trellis2_pipeline(str(tmp_path_factory.mktemp("tiny_trellis2")), seed=0)


@pytest.fixture(scope="session")
def tiny_text_models_dir(tmp_path_factory):
    """`python -m trellis.tools.tiny_pipeline --text` output: a models folder holding TRELLIS-text-tiny (its
    pipeline.json naming the decoders of TRELLIS-image-large and the CLIP of clip-vit-large-patch14 the
    published way), a tiny TRELLIS-image-large and a tiny CLIP. Returns that folder (a str)."""
    from trellis.tools.tiny_text_pipeline import write_tiny_text_pipeline

    out = tmp_path_factory.mktemp("tiny_text_models")
    write_tiny_text_pipeline(str(out), seed=0)
    return str(out)
