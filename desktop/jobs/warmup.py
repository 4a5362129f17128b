"""The warm-up's tiny generation: what a worker runs at start so that the first job does not wait for CUDA, cuBLAS
and the kernels (JobRunner.start_warmup)."""
from __future__ import annotations

from trellis.core.callbacks import Cancelled


def warm_steps(pipeline) -> int:
    """Sampling steps of the warm run: 1, or with compiled flow blocks 5, so that the run has steps inside the
    guidance interval (a CFG pair: batch 2) and after it (batch 1) and both shapes are compiled before a job
    (5 steps of the usual time grid, rescaled by 3, end at t = 0.2 -> 0.43 < 0.5)."""
    return 5 if pipeline.memory_policy.compile else 1


def warm_run(pipeline, cancel=None) -> None:
    """One tiny generation (`warm_steps` steps per stage on a 96 px RGBA disc, both decoders, a one-frame 64 px
    render of each) that brings up what a first job would otherwise wait for: the CUDA context and cuBLAS,
    attention and sparse conv kernels, the renderers' Triton kernels (and, with `--compile`, the compiled flow
    blocks). Results are thrown away; an empty structure just ends it."""
    import numpy as np
    from PIL import Image

    from trellis.pipelines import EmptyStructureError
    from trellis.utils import render_utils

    yy, xx = np.mgrid[0:96, 0:96]
    disc = (np.hypot(xx - 47.5, yy - 47.5) < 30).astype(np.uint8) * 255
    image = Image.fromarray(np.dstack([np.full((96, 96, 3), 160, np.uint8), disc]), "RGBA")
    steps = warm_steps(pipeline)
    try:
        out = pipeline.run(image, seed=0, formats=["gaussian", "mesh"],
                           sparse_structure_sampler_params={"steps": steps}, slat_sampler_params={"steps": steps},
                           cancel=cancel)
    except EmptyStructureError:
        return
    for kind in ("gaussian", "mesh"):
        if cancel is not None and cancel():
            raise Cancelled()
        render_utils.render_video(out[kind][0], resolution=64, num_frames=1, cancel=cancel, verbose=False)
