"""GPU-only checks: every fast kernel against its PyTorch twin (skipped without CUDA).

Run on a GPU machine whenever a kernel or a GPU path changes: ``python -m pytest tests/gpu -q``.
The kernels under test are chosen by ``trellis.fastpaths``; these tests switch the fast paths on and off
with ``fastpaths.set_enabled`` and compare the outputs.
"""
import pytest
import torch

from trellis import fastpaths


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (tests/gpu: fast kernels vs their PyTorch twins)")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
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


@pytest.fixture
def need_kernel():
    def check(name):
        why = fastpaths.reason_off(name, "cuda")
        if why:
            pytest.fail(f"kernel {name!r} does not run on this GPU machine: {why}")
    return check
