"""The API tests' shared runner: the tiny pipeline on the CPU, one per test module, its outputs in a folder named
after the module."""
import pytest

from desktop.jobs import JobRunner


@pytest.fixture(scope="module")
def runner(request, tiny_pipeline_dir, tmp_path_factory):
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    r = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp(f"{name}_out"), device="cpu")
    yield r
    r.shutdown(cancel=True, wait=True, timeout=30)
