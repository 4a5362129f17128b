"""A job's progress: (stage, step, total) reports -> the fraction of the whole job and an ETA.

Each stage's share of the run time is what it took in this worker's earlier jobs (``stage_times.StageTimes``),
scaled by how this job's finished stages compare with theirs once those were measured more than once. A CPU job whose
stages this machine has never timed (its first) plans from the reference CPU's times scaled by a short timed probe
of this one (first_estimate.py), corrected by its own finished stages as it goes. Without a table of times
(a job run outside a worker), a rough share (STAGE_WEIGHTS) and elapsed / fraction.

A stage that runs several passes (a cascade's shape flow: its low- then its high-resolution pass) shows one step
counter over all of them: "step 13/24", never a count that starts again."""
from __future__ import annotations

import statistics
import threading
import time
from typing import Callable, Optional

from ..settings import GenerationSettings
from ..settings_table import MESH_FORMATS
from .job import Job, Progress
from .stage_times import StageTimes

# Rough share of the run time of each stage (for the overall fraction and the ETA).
STAGE_WEIGHTS = {"download": 1, "voxelize": 2, "preprocess": 2, "condition": 1, "sparse_structure": 12, "slat": 20, "decode": 4,
                 "video": 8, "encode": 1, "ply": 1, "bake": 30, "shape": 6, "glb": 1, "obj": 1, "stl": 1, "3mf": 1, "usdz": 1}

# Stages whose progress comes as several sub-stages, and about how many there are.
MULTI_STEP = {"bake": 9, "shape": 5}     # simplify, visibility, remove_invisible, fill_holes, final_simplify,
#                                          (bake:) uv_unwrap, observe, bake, inpaint

# How far this job's pace may scale the learned times (a larger mesh, a busy machine), slower and faster.
PACE_LIMITS = (0.5, 2.0)
# ... and the first estimate's (first_estimate.py): another model's size, another machine's proportions.
FIRST_PACE_LIMITS = (0.2, 10.0)

# The stages of a generation before its files are written.
GENERATE_STAGES = ["preprocess", "condition", "sparse_structure", "slat", "decode"]
TEXT_STAGES = ["condition", "sparse_structure", "slat", "decode"]
VARIANT_STAGES = ["voxelize", "preprocess", "condition", "slat", "decode"]


def textured_files(settings: GenerationSettings) -> bool:
    """Whether a mesh file the settings write holds a texture (GLB, OBJ, USDZ and not geometry-only): without one,
    the export cleans the mesh up and bakes nothing (stage "shape", ``mesh_files.start_export``)."""
    from trellis.export.formats import FORMATS as FILE_FORMATS

    return not settings.geometry_only and any(FILE_FORMATS[kind].texture_formats for kind in MESH_FORMATS
                                               if kind in settings.formats)


def export_stages(settings: GenerationSettings, overlap: bool = False) -> list:
    """The stages that write the requested files, in the order they run (steps.write_outputs); with `overlap`, the
    preview video, made while the mesh is baked, is waited for last."""
    fmt = set(settings.formats)
    # The mesh files share one bake (clean-up, UV unwrap, texture; the clean-up alone, "shape", where no file holds
    # a texture), then each is written from it.
    meshes = [s for s in MESH_FORMATS if s in fmt]
    preview = ["video", "encode"] if "mp4" in fmt else []
    mesh_stages = ([("bake" if textured_files(settings) else "shape")] if meshes else []) + meshes
    ply = ["ply"] if "ply" in fmt else []
    return ply + (mesh_stages + preview if overlap and meshes else preview + mesh_stages)


def makes_normal_map(settings) -> bool:
    """Whether a job with `settings` bakes a normal map (for its textured GLB)."""
    return bool(getattr(settings, "normal_map", False)) and "glb" in settings.formats and textured_files(settings)


def stage_passes(settings) -> dict:
    """{stage: how many passes a generation with `settings` runs of it}: a cascade's shape flow runs twice (the
    library's pipeline type says which types are cascades); every other stage once."""
    kind = getattr(settings, "pipeline_type", None)
    if not kind:
        return {}
    from trellis.pipelines.trellis2_cascade import pipeline_type

    try:
        return {"shape_slat": 2} if pipeline_type(kind).cascade else {}
    except ValueError:
        return {}


class ProgressTracker:
    """Turns (stage, step, total) reports into the job's overall fraction and ETA. With `times` (the worker's
    ``StageTimes``), each stage's span (from its first report to the next stage's) is learned for later jobs, and
    once all of `stages` are known the fraction and ETA come from those times."""

    def __init__(self, job: Job, stages: list, lock: threading.Lock, listener: Optional[Callable] = None,
                 times: Optional[StageTimes] = None, clock: Callable[[], float] = time.perf_counter):
        self.job, self.lock, self.listener = job, lock, listener
        self.weights = {s: STAGE_WEIGHTS.get(s, 1) for s in stages}
        self.order = list(stages)
        self.total_weight = float(sum(self.weights.values())) or 1.0
        self.times, self.clock = times, clock
        # the learned times as this job starts (its own stages update them as they end, not its plan)
        self.plan = times.plan(self.order) if times is not None else {}
        self.learned = all(st in self.plan for st in self.order)
        self.warm = times.warm(self.order) if times is not None else set()
        settings = job.used_settings or job.settings
        # nothing learned here yet, on a CPU: the reference CPU's times, scaled by this one's probe (first_estimate.py);
        # a GPU's first job keeps the rough shares (its speed does not follow a CPU probe)
        self.first = times is not None and not self.learned and str(job.device or "cpu").startswith("cpu")
        if self.first:
            from .first_estimate import first_plan

            self.plan = {**first_plan(self.order, settings), **self.plan}
        if "bake" in self.order and makes_normal_map(settings):
            self._expect_normal_map()
        self.passes = {st: n for st, n in stage_passes(settings).items() if st in self.order}
        self.pass_no: dict = {}                # stage -> the pass under way (from 1) and its last step
        self.last_step: dict = {}
        self.t0 = clock()
        self.substages: dict = {}
        self.current: Optional[str] = None     # the stage under way, its start and its step count
        self.started = 0.0
        self.steps: dict = {}                  # stage -> the step count it reported in this job
        self.spans: dict = {}                  # stage -> seconds it took in this job (finished stages)
        self.sub: Optional[str] = None         # the sub-stage under way ("bake/observe") and its start
        self.sub_started = 0.0

    def _expect_normal_map(self) -> None:
        """A bake that makes a normal map where the plan's bakes made none: it renders the dense mesh from the bake's
        views and solves as the colour bake does, so it counts as those two sub-stages."""
        if "bake/normal_map" in self.plan or "bake/observe" not in self.plan:
            return
        seconds = self.plan["bake/observe"][0] + self.plan.get("bake/bake", (0.0, 1))[0]
        self.plan["bake/normal_map"] = (seconds, 1)
        if "bake" in self.plan:
            rate, steps = self.plan["bake"]
            self.plan["bake"] = (rate + seconds / max(steps, 1), steps)

    def restart_clock(self) -> None:
        """After a model load: the load counts neither in the elapsed time nor in the stage under way."""
        self.t0 = self.started = self.clock()

    def _advance(self, stage: str, step: int, total: int, message: str, now: float) -> None:
        """Keep the stages' spans: a later stage's first report ends the one under way; the last stage ends at its
        final step."""
        if stage not in self.order:
            return
        if stage != self.current:
            if self.current is not None and self.order.index(stage) < self.order.index(self.current):
                return                          # a late report of an earlier stage
            self._end(now)
            self.current, self.started = stage, now
        if stage not in MULTI_STEP:
            self.steps[stage] = max(int(total), 1) * self.passes.get(stage, 1)
        elif message and f"{stage}/{message}" != self.sub:
            self._end_sub(now)
            self.sub, self.sub_started = f"{stage}/{message}", now
        last_pass = self.pass_no.get(stage, 1) >= self.passes.get(stage, 1)
        if stage == self.order[-1] and total and step >= total and stage not in MULTI_STEP and last_pass:
            self._end(now)
            if self.times is not None:          # stages that never reported took no time of their own
                for s in self.order:
                    if s not in self.spans:
                        self.times.record(s, 0.0, 1)

    def _end_sub(self, now: float) -> None:
        if self.sub is not None and self.times is not None:
            self.times.record(self.sub, now - self.sub_started, 1)
        self.sub = None

    def _end(self, now: float) -> None:
        self._end_sub(now)
        if self.current is None or self.current in self.spans:
            return
        self.spans[self.current] = now - self.started
        if self.times is not None:
            self.times.record(self.current, self.spans[self.current], self.steps.get(self.current, 1))

    def _expected(self, stage: str) -> float:
        rate, steps = self.plan[stage]
        return rate * (self.steps.get(stage, steps) if stage not in MULTI_STEP else steps)

    def _from_times(self, stage: str, inner: float) -> tuple:
        """(fraction, eta) from the learned stage times, scaled by this job's pace so far."""
        idx = self.order.index(stage)
        expected = {s: self._expected(s) for s in self.order}
        total = sum(expected.values()) or 1.0
        before = sum(expected[s] for s in self.order[:idx])
        fraction = (before + expected[stage] * inner) / total
        # the median of the finished stages' own paces, against plans measured more than once: a first job's times
        # (imports, compiles) or one stage's outlier do not rescale every stage after it
        paces = [self.spans[s] / expected[s] for s in self.order[:idx]
                 if s in self.spans and (s in self.warm or self.first) and expected[s] > 0]
        lo, hi = FIRST_PACE_LIMITS if self.first else PACE_LIMITS
        pace = min(max(statistics.median(paces), lo), hi) if paces else 1.0
        left = expected[stage] * (1 - inner) + sum(expected[s] for s in self.order[idx + 1:])
        return fraction, left * pace

    def one_counter(self, stage: str, step: int, total: int) -> tuple:
        """(step, total) over all of `stage`'s passes: a pass whose counter starts again after the last one ended
        continues the count."""
        passes = self.passes.get(stage, 1)
        if passes == 1 or not total:
            return step, total
        done = self.pass_no.get(stage, 1)
        if step < self.last_step.get(stage, 0) and done < passes:
            done = self.pass_no[stage] = done + 1
        self.pass_no.setdefault(stage, done)
        self.last_step[stage] = step
        return (done - 1) * total + step, passes * total

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        now = self.clock()
        step, total = self.one_counter(stage, step, total)
        self._advance(stage, step, total, message, now)
        inner = min(step, total) / total if total else 0.0
        if stage in MULTI_STEP and message:
            # Exports report their own sub-stages, each counting from 0: spread them over the stage.
            names = self.substages.setdefault(stage, [])
            if message not in names:
                names.append(message)
            subs = {k: rate for k, (rate, _) in self.plan.items() if k.startswith(stage + "/")}
            if (self.learned or self.first) and subs:       # spread by the sub-stages' learned times
                # a sub-stage never timed here (a normal map the earlier bakes did not make) counts as an average one
                typical = sum(subs.values()) / len(subs)
                own = {n: subs.get(f"{stage}/{n}", typical) for n in names}
                whole = sum(subs.values()) + sum(v for n, v in own.items() if f"{stage}/{n}" not in subs)
                done = sum(own[n] for n in names[:names.index(message)])
                inner = min((done + own[message] * inner) / whole, 1.0)
            else:
                inner = (names.index(message) + inner) / max(MULTI_STEP[stage], len(names))
        elapsed = now - self.t0
        eta = None
        if (self.learned or self.first) and stage in self.order:
            fraction, eta = self._from_times(stage, inner)
        elif stage in self.order:
            done = sum(self.weights[s] for s in self.order[:self.order.index(stage)])
            fraction = (done + self.weights[stage] * inner) / self.total_weight
        else:
            fraction = self.job.progress.fraction
        fraction = max(fraction, self.job.progress.fraction)
        if eta is None:
            eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        with self.lock:
            self.job.progress = progress = Progress(stage, step, total, fraction, eta, elapsed, message,
                                                    measured=self.learned and stage in self.order)
        if self.listener is not None:
            self.listener(self.job, progress)
