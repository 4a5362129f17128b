"""The progress a newcomer sees before this machine has timed anything: the first job's ETA from the reference
machine's stage times scaled by a timed probe of this one (desktop/jobs/first_estimate.py), one step counter over a
cascade's two shape passes, and a bake's sub-stage never timed before (a first normal map) that still moves the bar.
The clock is the test's; the probe is real."""
import threading

import numpy as np
import pytest

from desktop.jobs.first_estimate import REFERENCE_PROBE_S, first_plan, probe_seconds, settings_scale
from desktop.jobs.job import Job
from desktop.jobs.progress import GENERATE_STAGES, ProgressTracker, export_stages
from desktop.jobs.stage_times import StageTimes
from desktop.settings import GenerationSettings


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def cpu_job_settings():
    return GenerationSettings(seed=1).for_device("cpu")


def test_the_probe_times_this_machine():
    first = probe_seconds()
    assert 0 < first < 30
    assert probe_seconds() == first                     # once per process


def test_a_first_job_on_a_slower_machine_says_its_eta_within_2x(monkeypatch):
    """A machine three times slower than the reference (its probe three times as long) runs every stage three times
    as long, its imports a second longer per stage: from its first report on, the first job's ETA is within 2x of
    the time left. Without the probe (a fixed share of each stage), the first report's ETA was 10x or more off."""
    monkeypatch.setattr("desktop.jobs.first_estimate._probe", REFERENCE_PROBE_S * 3)
    settings = cpu_job_settings()
    stages = GENERATE_STAGES + export_stages(settings)
    plan = first_plan(stages, settings, probe=REFERENCE_PROBE_S)
    seconds = {s: plan[s][0] * plan[s][1] * 3 + 1.0 for s in stages}
    subs = {name: rate for name, (rate, _) in plan.items() if name.startswith("bake/")}
    job = Job(id="j", inputs=[], settings=settings, used_settings=settings)
    clock = Clock()
    tracker = ProgressTracker(job, stages, threading.Lock(), times=StageTimes(), clock=clock)
    assert tracker.first and not tracker.learned
    total, start, ratios = sum(seconds.values()), clock.now, []

    def seen():
        left = total - (clock.now - start)
        if left > 1.0 and job.progress.eta_s is not None:
            eta = job.progress.eta_s
            ratios.append(max(eta / left, left / max(eta, 1e-6)))
    for stage in stages:
        if stage == "bake":
            share = {sub: rate / sum(subs.values()) for sub, rate in subs.items()}
            for sub in share:
                tracker(stage, 0, 2, sub.split("/")[1])
                seen()
                for i in range(2):
                    clock.now += seconds[stage] * share[sub] / 2
                    tracker(stage, i + 1, 2, sub.split("/")[1])
                    seen()
            continue
        n = plan[stage][1]
        tracker(stage, 0, n)
        seen()
        for i in range(n):
            clock.now += seconds[stage] / n
            tracker(stage, i + 1, n)
            seen()
    assert ratios and max(ratios) < 2.0, max(ratios)
    assert job.progress.fraction == pytest.approx(1.0)
    # a GPU's first job: a CPU probe says nothing of its speed
    gpu = Job(id="g", inputs=[], settings=settings, used_settings=settings, device="cuda:0")
    assert not ProgressTracker(gpu, stages, threading.Lock(), times=StageTimes(), clock=clock).first


def test_the_first_plan_follows_the_settings():
    base = cpu_job_settings()
    bigger = base.replace(bake_views=base.bake_views * 2, video_resolution=base.video_resolution * 2)
    stages = GENERATE_STAGES + export_stages(base)
    small, large = (first_plan(stages, s, probe=REFERENCE_PROBE_S) for s in (base, bigger))
    assert large["bake/observe"][0] == pytest.approx(2 * small["bake/observe"][0])
    assert large["video"][0] == pytest.approx(4 * small["video"][0])
    assert settings_scale("slat", bigger) == 1.0
    # a print export's clean-up alone ("shape") is planned as the bake's clean-up
    printed = first_plan(["shape", "stl"], base, probe=REFERENCE_PROBE_S)
    assert printed["shape/visibility"] == small["bake/visibility"] and printed["shape"][0] > printed["stl"][0]
    # twice as slow a probe: every stage twice as long
    slow = first_plan(stages, base, probe=2 * REFERENCE_PROBE_S)
    assert all(slow[s][0] == pytest.approx(2 * small[s][0]) for s in stages)


def test_a_cascade_counts_its_two_shape_passes_as_one():
    settings = GenerationSettings(seed=1, pipeline_type="1024_cascade")
    job = Job(id="j", inputs=[], settings=settings, used_settings=settings)
    stages = ["preprocess", "condition", "sparse_structure", "shape_slat", "tex_slat", "decode"]
    clock = Clock()
    tracker = ProgressTracker(job, stages, threading.Lock(), clock=clock)
    for stage in stages[:3]:
        tracker(stage, 1, 1)
    counts, fractions = [], []
    for _ in range(2):                                   # the 512 pass, then the 1024 pass: each 1..12
        for i in range(12):
            clock.now += 1.0
            tracker("shape_slat", i + 1, 12)
            counts.append((job.progress.step, job.progress.total))
            fractions.append(job.progress.fraction)
    assert counts == [(i, 24) for i in range(1, 25)]
    assert all(b > a for a, b in zip(fractions, fractions[1:])), fractions
    tracker("tex_slat", 1, 12)
    assert job.progress.fraction > fractions[-1]
    # a single pass type: its counter is its own
    one = GenerationSettings(seed=1, pipeline_type="512")
    job = Job(id="k", inputs=[], settings=one, used_settings=one)
    tracker = ProgressTracker(job, stages, threading.Lock(), clock=clock)
    tracker("shape_slat", 3, 12)
    assert (job.progress.step, job.progress.total) == (3, 12)


def test_a_sub_stage_never_timed_still_moves_the_bar():
    """Earlier bakes made no normal map: the first that does must not show 99 % through it."""
    times, clock = StageTimes(), Clock()
    earlier = GenerationSettings(seed=1, formats=("glb",), normal_map=False)
    settings = earlier.replace(normal_map=True)
    for _ in range(2):
        job = Job(id="j", inputs=[], settings=earlier)
        tracker = ProgressTracker(job, ["bake", "glb"], threading.Lock(), times=times, clock=clock)
        for sub in ("simplify", "observe", "bake"):
            tracker("bake", 0, 1, sub)
            clock.now += 5.0
            tracker("bake", 1, 1, sub)
        tracker("glb", 1, 1)
    job = Job(id="k", inputs=[], settings=settings)
    tracker = ProgressTracker(job, ["bake", "glb"], threading.Lock(), times=times, clock=clock)
    assert tracker.learned
    for sub in ("simplify", "observe", "bake"):
        tracker("bake", 1, 1, sub)
    before = job.progress.fraction
    assert before < 0.9, before
    for i in range(10):
        tracker("bake", i + 1, 10, "normal_map")
    assert job.progress.fraction > before + 0.1


def test_the_normal_map_reports_its_solve_and_its_end():
    """bake_normal_map's one counter: each view, each of the solve's iterations, then its last parts, to the end."""
    from trellis.export.bake.normal_map import bake_normal_map
    from trellis.renderers.cameras import orbit_cameras
    from tests.helpers.meshes import plane

    v, f = plane(1, lambda x, y: 0 * x)
    uv = np.stack([v[:, 0] + 0.5, v[:, 1] + 0.5], 1).astype(np.float32)
    ext, intr = orbit_cameras([0.0, 1.5, 3.0], [1.2, 1.0, 1.3])
    reports = []
    bake_normal_map(*plane(8, lambda x, y: 0.05 * x * y), v, f, uv, 32, ext, intr, 64, device="cpu",
                    cg_iterations=10, progress=lambda *r: reports.append(r))
    steps = [done for stage, done, total in reports]
    total = reports[-1][2]
    assert {stage for stage, _, _ in reports} == {"normal_map"} and all(t == total for _, _, t in reports)
    assert total == 3 + 10 + 3 and steps[-1] == total
    assert steps == sorted(steps) and len(set(steps)) >= 3 + 10 + 2
