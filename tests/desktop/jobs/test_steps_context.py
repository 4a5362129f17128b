"""A step runs from its job and its context alone (desktop/jobs/context.py): no runner, no worker. On the tiny
random-weight pipeline (CPU)."""
import json
import threading
import uuid

import pytest

from desktop.jobs import steps
from desktop.jobs.context import JobContext
from desktop.jobs.folder import JobFolder
from desktop.jobs.job import Job
from desktop.jobs.sampling import sampler_params
from desktop.settings import GenerationSettings
from tests.helpers.images import rgba_blob
from trellis.core.callbacks import Cancelled
from trellis.pipelines import TrellisImageTo3DPipeline

SMALL = dict(seed=4, randomize_seed=False, ss_steps=2, slat_steps=2, formats=("ply",))


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_dir):
    return TrellisImageTo3DPipeline.from_pretrained(tiny_pipeline_dir)


class Recorder:
    """A context's callables that write down what the step asked for, in order."""

    def __init__(self, pipeline, root, cancelled=False):
        self.pipe, self.root, self.is_cancelled = pipeline, root, cancelled
        self.asked, self.kept, self.reports, self.folders = [], [], [], []

    def context(self, job, **extra) -> JobContext:
        def pipeline(which, progress):
            self.asked.append(which)
            return self.pipe, "the-model"

        def folder():
            self.asked.append("folder")
            self.folders.append(JobFolder.create(self.root, job))
            return self.folders[-1]

        def remover():
            self.asked.append("remover")
            return None
        return JobContext(device="cpu", model_path="the-model", outputs_dir=self.root, pipeline=pipeline,
                          background_remover=remover, folder=folder, cancelled=lambda: self.is_cancelled,
                          keep=self.kept.append, lock=threading.Lock(),
                          on_progress=lambda job, p: self.reports.append(p.stage), **extra)


def test_a_generation_then_an_export_run_from_their_context(pipeline, tmp_path):
    """The input first, then the model, then the folder (whose lock the folder keeps until released); the kept result
    has both decodings; an export of it writes the same Gaussians."""
    rec = Recorder(pipeline, tmp_path / "out")
    job = Job(id=uuid.uuid4().hex, inputs=[rgba_blob(tmp_path / "a.png")], settings=GenerationSettings(**SMALL),
              keep_result=True)
    steps.generate(rec.context(job), job)
    assert rec.asked == ["remover", "image", "folder"]
    folder, = rec.folders
    assert job.out_dir == str(folder.path) and folder.lock is not None
    folder.release()
    assert folder.lock is None
    record = json.loads(open(job.files["settings"]).read())
    assert (record["model"], record["device"], record["seed"]) == ("the-model", "cpu", 4)
    assert {"preprocess", "pipeline", "memory_policy"} <= set(job.timings)
    (kept,) = rec.kept
    assert kept["gaussian"] is not None and kept["mesh"] is not None        # both, though only a PLY was asked
    assert rec.reports[-1] == "ply" and "sparse_structure" in rec.reports

    export = Job(id=uuid.uuid4().hex, inputs=list(job.inputs), settings=job.used_settings, kind="export",
                 source_id=job.id)
    again = Recorder(pipeline, tmp_path / "out")
    steps.export(again.context(export, source_result=kept, source_files=dict(job.files)), export)
    assert again.asked == ["folder"] and again.kept == []                   # no model, nothing kept
    again.folders[0].release()
    assert open(export.files["ply"], "rb").read() == open(job.files["ply"], "rb").read()
    assert open(export.files["input"], "rb").read() == open(job.files["input"], "rb").read()
    assert json.loads(open(export.files["settings"]).read())["source_job"] == job.id


def test_a_cancelled_job_stops_before_its_model_and_makes_no_folder(pipeline, tmp_path):
    rec = Recorder(pipeline, tmp_path / "out", cancelled=True)
    job = Job(id=uuid.uuid4().hex, inputs=[rgba_blob(tmp_path / "a.png")], settings=GenerationSettings(**SMALL))
    with pytest.raises(Cancelled):
        steps.generate(rec.context(job), job)
    assert rec.asked == ["remover"] and not (tmp_path / "out").exists() and job.out_dir is None


def test_sampler_parameters_come_from_the_settings():
    settings = GenerationSettings(seed=9, randomize_seed=False, ss_steps=3, ss_cfg=6.0, slat_steps=5, slat_cfg=2.5)
    assert sampler_params(settings) == {"seed": 9, "sparse_structure_sampler_params": {"steps": 3, "cfg_strength": 6.0},
                                        "slat_sampler_params": {"steps": 5, "cfg_strength": 2.5}}
    # A variant samples stage 2 only, on the structure it was given.
    assert sampler_params(settings, stage1=False) == {"seed": 9, "slat_sampler_params": {"steps": 5, "cfg_strength": 2.5}}
