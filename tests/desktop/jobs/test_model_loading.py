"""Model loading for the runner and the batch alike (desktop/jobs/models.py): which text model a prompt uses, the
messages of a model that cannot load, and one device's pipelines loaded once. Tiny pipeline, CPU, offline."""
import uuid

import pytest

from desktop.jobs import models
from desktop.jobs.job import Job, ModelLoadError
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob
from trellis.pipelines import TrellisImageTo3DPipeline


def test_a_prompt_uses_the_given_text_model_or_the_published_one_of_its_size():
    assert models.Models("m").text_model_for("base") == "microsoft/TRELLIS-text-base"
    assert models.Models("m", text_model="/my/text").text_model_for("base") == "/my/text"
    # A batch item's worker loads its pipelines through the same Models (desktop/batch/worker.py).
    assert models.text_source(None, "large") == "microsoft/TRELLIS-text-large"
    with pytest.raises(ValueError, match="unknown text model size"):
        models.text_source(None, "huge")


def test_a_model_that_cannot_load_says_what_to_do(tmp_path):
    missing = str(tmp_path / "no-model")
    with pytest.raises(ModelLoadError, match="could not load the model from") as err:
        models.load_image_pipeline(missing, "cpu")
    assert "pipeline.json" in str(err.value)
    with pytest.raises(ModelLoadError, match="could not load the text model") as err:
        models.load_text_pipeline(missing, "cpu")
    assert "--text-model FOLDER" in str(err.value)


def test_one_device_loads_its_image_pipeline_once_and_lends_its_background_remover(tiny_pipeline_dir, tmp_path):
    calls = []

    def factory(device):
        calls.append(device)
        return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir).to(device)

    pipelines = models.DevicePipelines(models.Models(tiny_pipeline_dir, image_factory=factory), "cpu")
    assert pipelines.background_remover() is None                       # nothing loaded yet
    stages = []
    first = Job(id=uuid.uuid4().hex, inputs=[], settings=GenerationSettings())
    pipeline = pipelines.image(first, lambda *report: stages.append(report[0]))
    second = Job(id=uuid.uuid4().hex, inputs=[], settings=GenerationSettings())
    assert pipelines.image(second, lambda *report: stages.append(report[0])) is pipeline
    assert calls == ["cpu"] and stages == ["load"]
    assert "load_model" in first.timings and "load_model" not in second.timings
    # The pipeline's own remover (made by its preprocess_image) serves the app's input checks too.
    assert pipeline.background_remover is None and pipelines.background_remover() is None
    pipeline.preprocess_image(rgba_blob(tmp_path / "a.png"))
    assert pipeline.background_remover is not None
    assert pipelines.background_remover() is pipeline.background_remover
