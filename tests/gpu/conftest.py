"""GPU-only checks: every fast kernel against its PyTorch twin (skipped without CUDA).

Run on a GPU machine whenever a kernel or a GPU path changes: ``python -m pytest tests/gpu -q``.
The kernels under test are chosen by ``trellis.fastpaths``; these tests switch the fast paths on and off
with ``fastpaths.set_enabled`` and compare the outputs.
"""
import pytest
import torch

from trellis import fastpaths


@pytest.hookimpl(tryfirst=True)      # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    here = [item for item in items if "tests/gpu/" in str(item.fspath).replace("\\", "/")]
    for item in here:
        item.add_marker(pytest.mark.gpu)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (tests/gpu: fast kernels vs their PyTorch twins)")
    for item in here:
        item.add_marker(skip)


@pytest.fixture
def fast_on():
    """Yields a function that runs ``fn`` with the fast paths forced on or off."""
    def run(fast, fn, *args, **kwargs):
        fastpaths.set_enabled(fast)
        try:
            return fn(*args, **kwargs)
        finally:
            fastpaths.set_enabled(None)
    return run


@pytest.fixture(params=fastpaths.BACKENDS)
def backend(request, monkeypatch):
    """Each test using this runs once per kernel backend, with TRELLIS_FAST_PATHS naming it."""
    monkeypatch.setenv(fastpaths.ENV_VAR, request.param)
    return request.param


@pytest.fixture
def need_kernel(backend):
    def check(name):
        if not any(k.backend == backend for k in fastpaths.KERNELS[name]):
            pytest.skip(f"{name} has no {backend} kernel")
        why = fastpaths.reason_off(name, "cuda")
        if why:
            pytest.fail(f"kernel {name!r} ({backend}) does not run on this GPU machine: {why}")
        assert fastpaths.path_of(name, "cuda") == backend
    return check
