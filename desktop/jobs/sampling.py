"""Sampling, shared by the app's jobs (steps.py) and the batch's items (batch/worker.py): the settings as the
pipeline's sampler parameters, and one pipeline call that gives the decoded Gaussians and mesh.

Every job kind's pipeline call (image, text, new look, TRELLIS.2's generation and texturing) runs inside
``sampling_block``: the job's attention arithmetic (its ``attention`` setting) held for the call, and the call's
seconds, stages (with the attention kernels each ran) and that arithmetic recorded in the job's timings.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from typing import Callable, Iterator, Optional

from trellis.core.callbacks import Cancelled
from trellis.modules.attention import attention_mode, attention_precision
from trellis.modules.attention.kernel_log import calls_by_kernel

from ..settings import GenerationSettings
from .job import Job

# How often a sampling that waits for the other attention arithmetic looks again (the library's hold has no signal;
# a sampling lasts seconds, so a twentieth of one is no cost).
WAIT_POLL_S = 0.05


def enter_attention(stack: contextlib.ExitStack, mode: str, cancel: Optional[Callable[[], bool]] = None,
                    wait: bool = True) -> Optional[float]:
    """Hold attention arithmetic `mode` ("exact" or "8bit") on `stack` until it closes; the seconds waited for it
    (0.0: at once). The choice is the process's: while another worker's run holds the other one, wait for it to end
    (Cancelled when `cancel()` says so meanwhile), or with `wait` False return None at once, holding nothing."""
    started, waited = time.perf_counter(), False
    while True:
        try:
            stack.enter_context(attention_precision(mode))
            return time.perf_counter() - started if waited else 0.0
        except RuntimeError:           # another run holds the other arithmetic now (the library's "must wait")
            if not wait:
                return None
            if cancel is not None and cancel():
                raise Cancelled() from None
            waited = True
            time.sleep(WAIT_POLL_S)


@contextlib.contextmanager
def sampling_block(job: Job, pipeline, settings: GenerationSettings,
                   cancel: Optional[Callable[[], bool]] = None) -> Iterator[None]:
    """The block of one job's pipeline call: in the job's attention arithmetic (``settings.attention``), waiting,
    with a warning, while another worker's sampling holds the other; then (also on failure) the call's seconds,
    stages, memory policy and arithmetic in the job's timings (``record_run``)."""
    with contextlib.ExitStack() as held:
        waited = enter_attention(held, settings.attention, cancel)
        if waited:
            other = "exact" if settings.attention == "8bit" else "8-bit"
            job.warn(f"Waited {waited:.0f} s for another job's sampling with {other} attention to end: one app "
                     "samples with one attention arithmetic at a time.")
        t = time.perf_counter()
        try:
            yield
        finally:
            record_run(job, pipeline, t)
        if settings.attention == "8bit" and calls_by_kernel(job.timings["pipeline"]["stages"]).get("8bit_twin"):
            job.warn(TWIN_8BIT_WARNING)


# Said when a job's 8-bit attention ran on its PyTorch twin: a user's choice for speed that made the job slower.
TWIN_8BIT_WARNING = ("8-bit attention ran as PyTorch arithmetic here, without its kernel (that needs Triton on an "
                     "NVIDIA GPU, with the fast paths on): slower than exact attention, and it still changes the "
                     "asset a little. Exact attention is the faster choice on this computer.")


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
    with the job's input bound), with the job's sampler parameters, in ``sampling_block``. Both decodings, whatever
    the job writes: its result.npz (and a result kept in memory) can then be exported to any file later without
    sampling again."""
    decode = ["gaussian", "mesh"]
    report = None if progress is None else (lambda stage, i, n: progress(stage, i, n))
    with sampling_block(job, pipeline, settings, cancel):
        outputs = call(formats=decode, progress=report, cancel=cancel, **sampler_params(settings, stage1))
    return (outputs["gaussian"][0] if "gaussian" in outputs else None,
            outputs["mesh"][0] if "mesh" in outputs else None)


def record_run(job: Job, pipeline, started: float) -> None:
    """The pipeline call's seconds, its stages (each with the attention kernels it ran), the attention arithmetic it
    ran in ("exact" or "8bit": read while ``sampling_block`` still holds it), its memory policy and its flow stages'
    lean choices, in the job's timings."""
    job.timings["pipeline"] = {"seconds": time.perf_counter() - started, "attention": attention_mode(),
                               "stages": list(getattr(pipeline, "last_stats", []))}
    job.timings["memory_policy"] = asdict(pipeline.memory_policy)
    job.timings["lean"] = dict(getattr(pipeline, "last_lean", {}))


def sample_ovoxel(job: Job, pipeline, image, settings: GenerationSettings, progress: Optional[Callable] = None,
                  cancel: Optional[Callable[[], bool]] = None, on_shape: Optional[Callable] = None):
    """The O-Voxel (``MeshWithVoxel``) of one TRELLIS.2 run on the prepared `image`: the job's seed, pipeline type
    and steps (stage 1's for the structure, stage 2's for the shape and texture flows; their guidance is the
    pipeline's own, which differs from v1's), in ``sampling_block`` as ``sample``'s.
    `on_shape`: the pipeline's (its meshes, before the texture flow)."""
    report = None if progress is None else (lambda stage, i, n: progress(stage, i, n))
    detail = {"steps": settings.slat_steps}
    with sampling_block(job, pipeline, settings, cancel):
        meshes = pipeline.run(image, seed=settings.seed, pipeline_type=settings.pipeline_type, preprocess_image=False,
                              sparse_structure_sampler_params={"steps": settings.ss_steps},
                              shape_slat_sampler_params=detail, tex_slat_sampler_params=dict(detail),
                              progress=report, cancel=cancel, on_shape=on_shape)
    return meshes[0]
