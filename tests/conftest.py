import pytest


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A tiny random-weight pipeline in the official folder layout, generated (never downloaded)."""
    from trellis.tools.tiny_pipeline import write_tiny_pipeline

    return write_tiny_pipeline(str(tmp_path_factory.mktemp("tiny_pipeline")), seed=0)


@pytest.fixture(scope="session")
def tiny_text_models_dir(tmp_path_factory):
    """`python -m trellis.tools.tiny_pipeline --text` output: a models folder holding TRELLIS-text-tiny (its
    pipeline.json naming the decoders of TRELLIS-image-large and the CLIP of clip-vit-large-patch14 the
    published way), a tiny TRELLIS-image-large and a tiny CLIP. Returns that folder (a str)."""
    from trellis.tools.tiny_text_pipeline import write_tiny_text_pipeline

    out = tmp_path_factory.mktemp("tiny_text_models")
    write_tiny_text_pipeline(str(out), seed=0)
    return str(out)
