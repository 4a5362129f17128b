import pytest


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A tiny random-weight pipeline in the official folder layout, generated (never downloaded)."""
    from trellis.tools.tiny_pipeline import write_tiny_pipeline

    return write_tiny_pipeline(str(tmp_path_factory.mktemp("tiny_pipeline")), seed=0)
