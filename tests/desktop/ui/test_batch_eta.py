"""The page's whole-batch ETA on a clock the test moves: "estimating" while the machine has measured nothing (no
rough guess that grows while the first item runs), then the stage times learned from the first item for the item
under way and for those not started, a number that only goes down."""
import threading

import pytest

from desktop.jobs.job import Job, JobState, Progress
from desktop.jobs.progress import ProgressTracker
from desktop.jobs.stage_times import StageTimes
from desktop.settings import GenerationSettings
from desktop.ui.batch_view import batch_eta, status_html

STAGES = ["preprocess", "sparse_structure", "slat", "glb"]
# A CPU's proportions, far from the fixed shares: the rough ETA of a first job grows as it runs.
SECONDS = {"preprocess": 1.0, "sparse_structure": 40.0, "slat": 80.0, "glb": 30.0}
LOAD_S = 25.0        # the first item loads the model: no later item does


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Runner:
    def queue_position(self, job_id):
        return 0


def run_item(job, times, clock, watch, load=0.0):
    """One item's reports, each stage taking SECONDS on the clock; after each report, `watch()`."""
    job.state, job.started = JobState.RUNNING, clock.now
    job.progress = Progress("starting")
    watch()
    tracker = ProgressTracker(job, STAGES, threading.Lock(), times=times, clock=clock)
    clock.now += load
    if load:
        job.timings["load_model"] = load
        tracker.restart_clock()
    for stage in STAGES:
        n = 10 if stage in ("sparse_structure", "slat") else 1
        tracker(stage, 0, n)
        watch()
        for i in range(n):
            clock.now += SECONDS[stage] / n
            tracker(stage, i + 1, n)
            watch()
    job.state, job.finished = JobState.DONE, clock.now
    job.timings["total"] = clock.now - job.started


def test_the_batch_eta_waits_for_a_measurement_then_counts_down():
    times, clock, runner = StageTimes(), Clock(), Runner()
    jobs = [Job(id=c * 32, inputs=[], settings=GenerationSettings()) for c in "abc"]
    entries = [(f"{i}.png", j) for i, j in enumerate(jobs)]
    one = sum(SECONDS.values())
    heads = []

    def during_first():
        assert batch_eta(jobs) is None
        heads.append(status_html(entries, runner))
    run_item(jobs[0], times, clock, during_first, load=LOAD_S)
    assert all("the whole batch: estimating the time left…" in h for h in heads) and len(heads) > 20
    assert not any("whole batch: ETA" in h for h in heads)

    seen = []

    def during_second():
        eta = batch_eta(jobs)
        # what is left, exactly: the rest of this item (its stages as learned) and a whole item after it
        left = one - (clock.now - jobs[1].started) + one
        assert eta == pytest.approx(left, rel=1e-6), (jobs[1].progress, eta, left)
        seen.append(eta)
    run_item(jobs[1], times, clock, during_second)
    assert seen == sorted(seen, reverse=True) and seen[0] == pytest.approx(2 * one)
    assert jobs[1].progress.measured
    jobs[2].state, jobs[2].progress = JobState.RUNNING, Progress("starting")
    assert "the whole batch: ETA 2:31" in status_html(entries, runner)      # the item's 151 s, its load left out


def test_two_items_side_by_side_share_the_waiting_ones():
    # Two workers: one item's ETA from learned times, one whose own ETA is still a rough share (a second device that
    # has not measured its stages): it is given the measured length less its elapsed time.
    jobs = [Job(id=c * 32, inputs=[], settings=GenerationSettings()) for c in "abcd"]
    jobs[0].state, jobs[0].progress = JobState.RUNNING, Progress("slat", 5, 10, 0.6, 40.0, 60.0, measured=True)
    jobs[1].state, jobs[1].progress = JobState.RUNNING, Progress("slat", 1, 10, 0.3, 5.0, 30.0)
    assert batch_eta(jobs) == pytest.approx(max(40.0, 100.0 - 30.0) + 2 * 100.0 / 2)
    jobs[0].progress = Progress("slat", 5, 10, 0.6, 40.0, 60.0)          # neither measured, nothing done
    assert batch_eta(jobs) is None
    jobs[3].state, jobs[3].timings = JobState.DONE, {"total": 90.0, "load_model": 10.0}
    jobs[2].state = JobState.DONE                                           # no timings: not a measurement
    assert batch_eta(jobs) == pytest.approx(max(80.0 - 60.0, 80.0 - 30.0))
