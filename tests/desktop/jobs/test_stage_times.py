"""The ETA learned from this machine's stage times: after one job, the next job's fraction and ETA come from what
each stage took, scaled by the steps asked for and by this job's pace, on a clock the test moves."""
import threading

import pytest

from desktop.jobs.job import Job
from desktop.jobs.progress import PACE_LIMITS, ProgressTracker
from desktop.jobs.stage_times import StageTimes
from desktop.settings import GenerationSettings

STAGES = ["preprocess", "sparse_structure", "slat", "bake", "glb"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run_job(times, clock, seconds, steps=10, stop_at=None):
    """One job's reports: preprocess (1 step), two samplers of `steps` steps, a bake of sub-stages, the GLB; each
    stage takes `seconds[stage]` on the clock. Returns (tracker, job, {stage: (eta at the stage's start, left)})."""
    job = Job(id="j", inputs=[], settings=GenerationSettings())
    tracker = ProgressTracker(job, STAGES, threading.Lock(), times=times, clock=clock)
    total = sum(seconds.values())
    start, seen = clock.now, {}
    for stage in STAGES:
        if stage == stop_at:
            break
        if stage == "bake":
            for sub, share in SUBSTAGES.items():          # uneven sub-stages, each reporting its own steps
                tracker(stage, 0, 4, sub)
                seen[f"{stage}/{sub}"] = (job.progress.eta_s, total - (clock.now - start))
                for i in range(4):
                    clock.now += seconds[stage] * share / 4
                    tracker(stage, i + 1, 4, sub)
            continue
        n = steps if stage in ("sparse_structure", "slat") else 1
        tracker(stage, 0, n)
        seen[stage] = (job.progress.eta_s, total - (clock.now - start))
        for i in range(n):
            clock.now += seconds[stage] / n
            tracker(stage, i + 1, n)
    return tracker, job, seen


SUBSTAGES = {"simplify": 0.1, "visibility": 0.6, "uv_unwrap": 0.05, "observe": 0.25}
SECONDS = {"preprocess": 2.0, "sparse_structure": 30.0, "slat": 60.0, "bake": 30.0, "glb": 3.0}


def test_the_second_job_knows_how_long_is_left():
    times, clock = StageTimes(), Clock()
    tracker, _, first = run_job(times, clock, SECONDS)
    assert not tracker.learned and times.knows(STAGES)
    # the first job's guess from fixed weights is far off on a machine whose proportions differ
    tracker, job, second = run_job(times, clock, SECONDS)
    assert tracker.learned
    assert len(second) == len(STAGES) - 1 + len(SUBSTAGES)
    for stage, (eta, left) in second.items():          # the bake's sub-stages included
        assert eta == pytest.approx(left, rel=1e-6), stage
    assert job.progress.fraction == pytest.approx(1.0)


def test_more_steps_take_longer_and_a_slower_job_says_so():
    times, clock = StageTimes(), Clock()
    run_job(times, clock, SECONDS, steps=10)
    # twice the sampler steps: each step as long as before, so the samplers take twice as long
    doubled = dict(SECONDS, sparse_structure=60.0, slat=120.0)
    _, _, seen = run_job(times, clock, doubled, steps=20)
    eta, left = seen["slat"]
    assert eta == pytest.approx(left, rel=1e-6)
    # a busy machine: everything 1.5x slower; from the second stage on, the pace of the finished ones scales the rest
    # (against stage times measured more than once: a first job's alone may be its imports' and compiles')
    times2, clock2 = StageTimes(), Clock()
    for _ in range(2):
        run_job(times2, clock2, SECONDS)
    slow = {k: v * 1.5 for k, v in SECONDS.items()}
    _, _, seen = run_job(times2, clock2, slow)
    for stage in ("slat", "bake/visibility", "bake/observe", "glb"):
        eta, left = seen[stage]
        assert eta == pytest.approx(left, rel=0.05), stage
    assert PACE_LIMITS[0] < 1 < PACE_LIMITS[1]


def test_a_stage_slow_in_one_job_does_not_rescale_the_next_jobs_eta():
    times, clock = StageTimes(), Clock()
    run_job(times, clock, dict(SECONDS, preprocess=40.0))    # the first job's preprocess: its libraries' first use
    _, _, seen = run_job(times, clock, SECONDS)
    for stage in ("bake/simplify", "bake/observe", "glb"):   # the export's ETA is its own time, not a fifth of it
        eta, left = seen[stage]
        assert eta == pytest.approx(left, rel=0.05), stage
    # a warm plan, then one job whose preprocess alone is slow (a large image): the median pace of the finished
    # stages keeps the rest at their own times (their summed time would say 11 % slower)
    times, clock = StageTimes(), Clock()
    for _ in range(2):
        run_job(times, clock, SECONDS)
    _, _, seen = run_job(times, clock, dict(SECONDS, preprocess=12.0))
    for stage in ("bake/observe", "glb"):
        eta, left = seen[stage]
        assert eta == pytest.approx(left, rel=0.05), stage


def test_an_unfinished_job_teaches_nothing_it_did_not_measure():
    times, clock = StageTimes(), Clock()
    run_job(times, clock, SECONDS, stop_at="glb")         # cancelled before the GLB: its start never came
    assert times.expected("slat") == pytest.approx(60.0)   # ended by the bake's start
    assert times.expected("bake") is None and not times.knows(STAGES)
    tracker, _, _ = run_job(times, clock, SECONDS)
    assert not tracker.learned                             # the fixed weights until every stage is known
    assert times.knows(STAGES)


def test_each_trellis2_pipeline_type_learns_its_own_stage_times(tmp_path):
    from desktop.jobs.context import JobContext

    times = StageTimes()
    times.of("1536_cascade").record("shape_slat", 30.0, 12)
    times.of("512").record("shape_slat", 1.2, 12)
    assert times.of("512").expected("shape_slat") == 1.2 and times.of("1536_cascade").expected("shape_slat") == 30.0
    assert times.expected("shape_slat") is None and set(times.kinds()) == {"512", "1536_cascade"}
    assert times.of(None) is times
    ctx = JobContext(device="cpu", model_path="m", outputs_dir=tmp_path, pipeline=None, background_remover=None,
                     folder=None, cancelled=lambda: False, keep=None, stage_times=times)
    for family, table in (("trellis2", times.of("512")), ("trellis", times)):
        job = Job(id="j", inputs=[], settings=GenerationSettings(pipeline_type="512"))
        job.family = family                       # the runner names the family that runs each image job
        assert ctx.tracker(job, ["shape_slat"]).times is table, family
    # 8-bit attention samples at another pace: its jobs learn into tables of their own, per type where there are types
    for family, kind in (("trellis2", "512/8bit"), ("trellis", "8bit")):
        job = Job(id="j", inputs=[], settings=GenerationSettings(pipeline_type="512", attention="8bit"))
        job.family = family
        assert ctx.tracker(job, ["shape_slat"]).times is times.of(kind), family
    assert set(times.kinds()) == {"512", "1536_cascade", "512/8bit", "8bit"}

