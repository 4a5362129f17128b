"""How long each stage of a job took on this machine, learned from the jobs it ran, for the next job's fraction and
ETA: a CPU runs a stage 10-100x slower than a GPU and in other proportions, so fixed stage weights cannot say
when a job will end there.

A stage's time is kept with the step count it ran (a sampler's steps, a video's frames): a job that asks for more
steps is expected to take that much longer. The newest measurement counts most (an exponential average), so the
estimate follows a machine that warms up, throttles or gets busy.

Jobs of different kinds run the same stage names at very different speeds (a TRELLIS.2 ``1536_cascade`` job's
sampling takes about fifteen times a ``512`` one's): each kind learns into a table of its own (``of``).

A table and its kinds' go to JSON and back (``snapshot``, ``restore``): the app keeps them between its starts
(stage_times_file.py), so that its first job has an ETA too.
"""
from __future__ import annotations

import math
import threading
from typing import Optional

__all__ = ["StageTimes", "NEWEST_WEIGHT", "checked_snapshot"]

# The newest measurement's weight in a stage's average: the first job after a start (cold libraries, kernels to
# compile) weighs little once a few warm ones follow.
NEWEST_WEIGHT = 0.5


def checked_snapshot(data, nested: bool = False) -> dict:
    """`data` if it is a ``StageTimes.snapshot()``: {"stages": {stage: [seconds per step >= 0, steps >= 1, times
    measured >= 1]}, "kinds": {kind: a snapshot without kinds}}; else ValueError saying what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise ValueError("not a table of stage times")
    kinds = data.get("kinds", {})
    if not isinstance(kinds, dict) or (nested and kinds):
        raise ValueError("its kinds are not tables of stage times")
    for stage, row in data["stages"].items():
        ok = isinstance(row, list) and len(row) == 3 and not any(isinstance(v, bool) for v in row)
        ok = ok and isinstance(row[0], (int, float)) and math.isfinite(row[0]) and row[0] >= 0
        if not (ok and all(isinstance(v, int) and v >= 1 for v in row[1:])):
            raise ValueError(f"stage {stage!r} is not [seconds per step, steps, times measured]")
    for kind, table in kinds.items():
        try:
            checked_snapshot(table, nested=True)
        except ValueError as err:
            raise ValueError(f"kind {kind!r}: {err}") from None
    return data


class StageTimes:
    """Seconds per step of each stage, measured; shared by the jobs of one worker (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._per_step: dict[str, float] = {}     # stage -> seconds per step (its whole time for a 1-step stage)
        self._steps: dict[str, int] = {}          # stage -> the step count it last ran with
        self._count: dict[str, int] = {}          # stage -> how many times it was measured
        self._kinds: dict[str, "StageTimes"] = {}  # kind -> the table of that kind's jobs

    def of(self, kind: Optional[str]) -> "StageTimes":
        """The table that jobs of `kind` (e.g. a TRELLIS.2 pipeline type) learn into and plan from; None: this one."""
        if kind is None:
            return self
        with self._lock:
            return self._kinds.setdefault(str(kind), StageTimes())

    def kinds(self) -> dict:
        """{kind: its table} of every kind measured so far."""
        with self._lock:
            return dict(self._kinds)

    def record(self, stage: str, seconds: float, steps: int) -> None:
        """A stage ran `steps` steps (at least 1) in `seconds`."""
        steps = max(int(steps), 1)
        rate = max(float(seconds), 0.0) / steps
        with self._lock:
            old = self._per_step.get(stage)
            self._per_step[stage] = rate if old is None else NEWEST_WEIGHT * rate + (1 - NEWEST_WEIGHT) * old
            self._steps[stage] = steps
            self._count[stage] = self._count.get(stage, 0) + 1

    def expected(self, stage: str, steps: Optional[int] = None) -> Optional[float]:
        """Seconds `stage` is expected to take with `steps` steps (None: as many as it last ran), None if it has
        never been measured here."""
        with self._lock:
            rate = self._per_step.get(stage)
            if rate is None:
                return None
            return rate * max(int(steps if steps else self._steps[stage]), 1)

    def plan(self, stages) -> dict:
        """{stage: (seconds per step, steps last run)} of `stages` and their sub-stages ("bake/uv_unwrap") as
        measured now: one job's fixed plan."""
        wanted = set(stages)
        with self._lock:
            return {s: (self._per_step[s], self._steps[s]) for s in self._per_step if s.split("/")[0] in wanted}

    def warm(self, stages) -> set:
        """Those of `stages` measured more than once: their times are not only a first use's (imports, compiles)."""
        with self._lock:
            return {s for s in stages if self._count.get(s, 0) > 1}

    def snapshot(self) -> dict:
        """What this table and its kinds' learned, as JSON holds it (see `checked_snapshot`)."""
        with self._lock:
            stages = {s: [self._per_step[s], self._steps[s], self._count[s]] for s in self._per_step}
            kinds = dict(self._kinds)
        return {"stages": stages, "kinds": {k: t.snapshot() for k, t in kinds.items()}}

    def restore(self, snapshot: dict) -> None:
        """Take on a `snapshot`'s times and measurement counts (stages it lacks are kept); one that is not a
        snapshot (ValueError) changes nothing. A stage saved after one measurement stays a first use's time (not
        ``warm``), as it was in the process that measured it."""
        checked_snapshot(snapshot)
        with self._lock:
            for stage, (rate, steps, count) in snapshot["stages"].items():
                self._per_step[stage], self._steps[stage], self._count[stage] = float(rate), steps, count
        for kind, table in snapshot.get("kinds", {}).items():
            self.of(kind).restore(table)

    def knows(self, stages) -> bool:
        """Whether every one of `stages` has been measured."""
        with self._lock:
            return all(s in self._per_step for s in stages)
