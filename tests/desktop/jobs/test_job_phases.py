"""A generation job in two phases (steps.generate_in_phases, through the worker's dispatch family_step, as a batch item
runs it): the first samples and leaves the folder with its inputs and settings (the context's entries in them) only,
the second writes the files. That they are the whole step's files: tests/desktop/batch/test_batch.py (a batch item
against a runner's job). On the tiny random-weight pipeline (CPU)."""
import threading
import uuid

import pytest

from desktop.jobs.context import JobContext
from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job
from desktop.jobs.worker import family_step
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob
from trellis.pipelines import TrellisImageTo3DPipeline

SMALL = dict(seed=4, randomize_seed=False, ss_steps=2, slat_steps=2, formats=("ply",))


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_dir):
    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


def run_context(pipeline, root, job, record=None) -> JobContext:
    """A context of the tiny pipeline whose folder is made in `root` (its lock released at once)."""
    def folder():
        made = JobFolder.create(root, job)
        made.release()
        return made
    return JobContext(device="cpu", model_path="the-model", outputs_dir=root,
                      pipeline=lambda which, progress: (pipeline, "the-model"),
                      background_remover=lambda: None, folder=folder, cancelled=lambda: False,
                      keep=lambda result: None, lock=threading.Lock(), record=record or {})


def test_a_generation_in_two_phases_samples_first_then_writes_its_files(pipeline, tmp_path):
    image = rgba_blob(tmp_path / "a.png")
    job = Job(id=uuid.uuid4().hex, inputs=[image], settings=GenerationSettings(**SMALL))
    entries = {"batch_item": {"name": "a", "key": "k", "kind": "image"}, "inputs": ["elsewhere/a.png"]}
    rest = family_step(job, phases=True)(run_context(pipeline, tmp_path / "phased", job, entries), job)
    folder = JobFolder(job.out_dir)
    assert sorted(p.name for p in folder.path.iterdir()) == ["input.png", "preprocessed.png", "settings.json"]
    assert {"preprocess", "pipeline", "memory_policy"} <= set(job.timings) and "export" not in job.timings
    record = folder.settings_record()
    assert record["batch_item"] == entries["batch_item"] and record["inputs"] == ["elsewhere/a.png"]
    assert (record["kind"], record["seed"], record["device"], record["model"]) == ("generate", 4, "cpu", "the-model")
    rest()
    assert {"model.ply", "result.npz"} <= {p.name for p in folder.path.iterdir()}
    assert "files_wall" in job.timings["export"]
