"""A job's fraction stays within 0..1, as the API's schema requires: shares summed two ways (Python 3.12's sum() is
compensated, the tracker's running total is not) can round past 1 at a stage's end, where GET /v1/jobs/{id} would
answer 500."""
import threading

from desktop.api.v1_schemas import models
from desktop.jobs.job import Job, Progress
from desktop.jobs.progress import ProgressTracker
from desktop.jobs.stage_times import StageTimes
from desktop.settings import GenerationSettings

# stage seconds whose plain running total passes the compensated total (found by a search under Python 3.12)
SECONDS = [2.4126046097720932, 2.5869132165060935, 1.8772308601679835, 0.4428310274354035, 1.9634942484222042,
           1.8609527767293836, 2.4366702696468385]
STAGES = ["preprocess", "condition", "sparse_structure", "slat", "decode", "bake", "glb"]


def test_a_fraction_past_one_is_one_and_below_zero_is_zero():
    assert Progress("glb", 1, 1, 1.0000000000000002).fraction == 1.0
    assert Progress("preprocess", 0, 1, -1e-17).fraction == 0.0
    assert Progress("slat", 3, 10, 0.4).fraction == 0.4


def test_the_last_stage_of_a_learned_job_answers_the_schema():
    times, now = StageTimes(), [0.0]
    for stage, seconds in zip(STAGES, SECONDS):
        times.record(stage, seconds, 1)
    job = Job(id="j", inputs=[], settings=GenerationSettings())
    tracker = ProgressTracker(job, STAGES, threading.Lock(), times=times, clock=lambda: now[0])
    assert tracker.learned
    for stage, seconds in zip(STAGES, SECONDS):
        tracker(stage, 0, 1)
        now[0] += seconds
        tracker(stage, 1, 1)
        assert 0.0 <= job.progress.fraction <= 1.0
    assert job.progress.fraction == 1.0
    p = job.to_dict()["progress"]
    models()["JobInfo"].model_fields["progress"].annotation.model_validate({**p, "percent": 100})
