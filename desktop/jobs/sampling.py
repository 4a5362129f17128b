"""Sampling, shared by the app's jobs (steps.py) and the batch's items (batch/worker.py): the settings as the
pipeline's sampler parameters, and one pipeline call that gives the decoded Gaussians and mesh."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable, Optional

from ..settings import GenerationSettings
from .job import Job


def sampler_params(settings: GenerationSettings, stage1: bool = True) -> dict:
    """The seed and each flow stage's steps and guidance (`stage1`: with the sparse structure's; a variant samples
    stage 2 only, on a given structure)."""
    params = {"seed": settings.seed,
              "slat_sampler_params": {"steps": settings.slat_steps, "cfg_strength": settings.slat_cfg}}
    if stage1:
        params["sparse_structure_sampler_params"] = {"steps": settings.ss_steps, "cfg_strength": settings.ss_cfg}
    return params


def sample(job: Job, pipeline, call: Callable, settings: GenerationSettings, progress: Optional[Callable] = None,
           cancel: Optional[Callable[[], bool]] = None, stage1: bool = True) -> tuple:
    """(Gaussians, mesh) of one pipeline call, `call(**run arguments)` (pipeline.run, run_multi_image, run_variant
    with the job's input bound), with the job's sampler parameters; their seconds and the memory policy go in the
    job's timings. Both decodings, whatever the job writes: its result.npz (and a result kept in memory) can then
    be exported to any file later without sampling again."""
    decode = ["gaussian", "mesh"]
    report = None if progress is None else (lambda stage, i, n: progress(stage, i, n))
    t = time.perf_counter()
    try:
        outputs = call(formats=decode, progress=report, cancel=cancel, **sampler_params(settings, stage1))
    finally:
        record_run(job, pipeline, t)
    return (outputs["gaussian"][0] if "gaussian" in outputs else None,
            outputs["mesh"][0] if "mesh" in outputs else None)


def record_run(job: Job, pipeline, started: float) -> None:
    """The pipeline call's seconds and stages, its memory policy and its flow stages' lean choices, in the job's
    timings."""
    job.timings["pipeline"] = {"seconds": time.perf_counter() - started,
                               "stages": list(getattr(pipeline, "last_stats", []))}
    job.timings["memory_policy"] = asdict(pipeline.memory_policy)
    job.timings["lean"] = dict(getattr(pipeline, "last_lean", {}))


def sample_ovoxel(job: Job, pipeline, image, settings: GenerationSettings, progress: Optional[Callable] = None,
                  cancel: Optional[Callable[[], bool]] = None, on_shape: Optional[Callable] = None):
    """The O-Voxel (``MeshWithVoxel``) of one TRELLIS.2 run on the prepared `image`: the job's seed, pipeline type
    and steps (stage 1's for the structure, stage 2's for the shape and texture flows; their guidance is the
    pipeline's own, which differs from v1's); seconds and memory policy in the job's timings as ``sample``'s.
    `on_shape`: the pipeline's (its meshes, before the texture flow)."""
    report = None if progress is None else (lambda stage, i, n: progress(stage, i, n))
    detail = {"steps": settings.slat_steps}
    t = time.perf_counter()
    try:
        meshes = pipeline.run(image, seed=settings.seed, pipeline_type=settings.pipeline_type, preprocess_image=False,
                              sparse_structure_sampler_params={"steps": settings.ss_steps},
                              shape_slat_sampler_params=detail, tex_slat_sampler_params=dict(detail),
                              progress=report, cancel=cancel, on_shape=on_shape)
    finally:
        record_run(job, pipeline, t)
    return meshes[0]
