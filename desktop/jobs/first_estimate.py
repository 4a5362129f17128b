"""The ETA of a job whose stages this machine has never timed (its first job, with no stage times kept): each stage's
seconds on the reference machine, scaled by how long a short timed probe takes here and now, and by the job's own
settings (steps, views, frames, pixels).

A family that declares stage times of its own (TRELLIS.2's, from an H200: its stages and proportions are not v1's)
is planned from those, per pipeline type; every other job from the CPU reference below.

The probe is CPU work of the export's kind (a matrix product, a scatter-add, an element-wise pass: what the
rasteriser, the bake's accumulator and the clean-up do), run once per process when the first such job starts
(about a tenth of a second on the reference machine). A machine that is slower, or busier, takes as much longer for
the probe as for the job, which a fixed table of seconds cannot know. The job's own stages then correct the rest as
they finish (``progress.ProgressTracker``'s pace).
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Optional

# The reference: the project's CPU runner (2 shared cores), the tiny pipeline's first job of a process at the
# page's defaults lowered for a CPU (benchmarks/first_eta.py prints this table; here the geometric mean of two runs,
# each scaled to a probe of REFERENCE_PROBE_S). Seconds per stage (per step for a sampler, per frame for the preview),
# at the settings in REFERENCE_SETTINGS.
REFERENCE_PROBE_S = 0.5
REFERENCE_SECONDS = {"bake/bake": (3.949, 1), "bake/fill_holes": (0.173, 1), "bake/final_simplify": (0.7315, 1),
                     "bake/inpaint": (1.624, 1), "bake/observe": (77.41, 1), "bake/remove_invisible": (0.1539, 1),
                     "bake/reobserve": (97.66, 1), "bake/resolve": (28.81, 1), "bake/simplify": (0.1462, 1),
                     "bake/uv_unwrap": (4.561, 1), "bake/visibility": (144.4, 1), "condition": (1.047, 1), "decode":
                     (3.001, 2), "encode": (0.02401, 60), "glb": (3.332, 1), "ply": (1.549, 1), "preprocess":
                     (0.8681, 1), "slat": (0.4281, 12), "sparse_structure": (0.6493, 12), "video": (1.011, 60)}
REFERENCE_SETTINGS = {"bake_views": 24, "bake_resolution": 512, "texture_size": 512, "video_frames": 60,
                      "video_resolution": 384}
# The clean-up's sub-stages: a bake's first part, and the whole of "shape" (a file without a texture: STL, 3MF).
CLEANUP = ("simplify", "visibility", "remove_invisible", "fill_holes", "final_simplify")
# A stage the reference never ran (a new one) counts as this many seconds there.
UNKNOWN_STAGE_S = 1.0

_lock = threading.Lock()
_probe: Optional[float] = None


def probe_seconds() -> float:
    """The probe's seconds on this machine now (the median of three runs; measured once per process)."""
    global _probe
    with _lock:
        if _probe is None:
            _probe = statistics.median(_probe_once() for _ in range(3))
        return _probe


def _probe_once() -> float:
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.rand(256, 256, generator=g)
    index = torch.randint(0, 1 << 16, (1 << 18,), generator=g)
    values = torch.rand(1 << 18, generator=g)
    t = time.perf_counter()
    for _ in range(4):
        b = a @ a
        out = torch.zeros(1 << 16).index_add_(0, index, values)
        values = torch.sqrt(values * values + out[index] * 1e-6)
        a = b / b.norm()
    return time.perf_counter() - t


def settings_scale(stage: str, settings) -> float:
    """How much more work `stage` is with `settings` than with REFERENCE_SETTINGS (pixels, views, frames)."""
    def ratio(name: str, power: int = 1) -> float:
        value = getattr(settings, name, None)
        return (float(value) / REFERENCE_SETTINGS[name]) ** power if value else 1.0
    if stage == "bake/observe" or stage == "bake/reobserve":
        return ratio("bake_views") * ratio("bake_resolution", 2)
    if stage in ("bake/bake", "bake/resolve", "bake/inpaint", "bake/normal_map"):
        return ratio("texture_size", 2)
    if stage in ("video", "encode"):
        return ratio("video_resolution", 2)
    return 1.0


def reference_for(stages, settings) -> tuple:
    """(the reference's {stage: (seconds per step, steps)}, whether its settings are REFERENCE_SETTINGS) of a job
    over `stages`: the times its family declares for the job's pipeline type (measured on another device: see the
    family's first_times_device), else the CPU reference above."""
    from ..families import FAMILIES

    for family in FAMILIES.values():
        if family.first_times and family.runs_stages(stages):
            return dict(family.first_times_of(getattr(settings, "pipeline_type", None))), False
    return REFERENCE_SECONDS, True


def first_plan(stages, settings, probe: Optional[float] = None) -> dict:
    """{stage: (seconds per step, steps)} of `stages` and the reference's sub-stages of them, as this machine is
    expected to run them now: ProgressTracker's plan where nothing is learned. A family's own reference, of another
    device, is scaled by the same probe: what it brings is its stages' proportions, and the job's finished stages
    correct its scale as for any first job."""
    factor = (probe if probe is not None else probe_seconds()) / REFERENCE_PROBE_S
    reference, cpu_reference = reference_for(stages, settings)
    plan = {}
    for name, (per_step, steps) in reference.items():
        if name.split("/")[0] in stages:
            scale = settings_scale(name, settings) if cpu_reference else 1.0
            plan[name] = (per_step * factor * scale, steps)
        if "shape" in stages and name.startswith("bake/") and name.split("/")[1] in CLEANUP:
            plan["shape/" + name.split("/")[1]] = (per_step * factor, steps)
    for stage in stages:
        subs = [rate for name, (rate, _) in plan.items() if name.startswith(stage + "/")]
        if subs:                # a stage of sub-stages (the bake) takes as long as they do at these settings
            plan[stage] = (sum(subs), 1)
        plan.setdefault(stage, (UNKNOWN_STAGE_S * factor, 1))
    return plan
