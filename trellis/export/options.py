"""``to_glb``'s keyword arguments beyond the reference's, and the observation views it uses by device."""
from __future__ import annotations

import numpy as np
import torch

from .normals import DEFAULT_CREASE_ANGLE

__all__ = ["EXTRA_DEFAULTS", "GPU_OBSERVATIONS", "CPU_OBSERVATIONS", "export_options", "observation_settings",
           "mesh_arrays"]

# Our extra keyword arguments (the reference's to_glb has none) and their defaults.
EXTRA_DEFAULTS = dict(
    nviews=None,             # observation views; None: by device (observation_settings)
    render_resolution=None,  # observation size; None: by device (reference: 1024)
    uv_time_budget_s=10.0,   # xatlas budget before the chart-layout fallback
    uv_method="auto",        # "auto" | "xatlas" | "geometric" | "charts" (uv.unwrap.unwrap_uv)
    steps=2500,              # "opt" bake steps (reference: 2500)
    lambda_tv=0.01,          # "opt" TV weight (reference: 0.01)
    cg_iterations=30,        # "fast" bake solver iterations
    observation_scale=None,  # Gaussians' scale factor in the bake's renders; None: for "fast"
                             # bake.observations.sharpening_scale, for "opt" 1 (the reference's renders)
    device=None,             # default: the device of the Gaussians
    overlap_uv=True,         # render observations while the decimation / xatlas run (same result; False: in turn)
    simplified=None,         # a BackgroundSimplify of this mesh started earlier (job.ExportJob makes it)
    target_faces=None,       # faces in the file (instead of the fraction kept, 1 - simplify)
    crease_angle=DEFAULT_CREASE_ANGLE,  # vertex normals split at edges sharper than this (degrees); None: none
    normal_map=False,        # also bake a tangent-space normal map from the dense mesh (bake.normal_map)
)

# Observation views when the caller does not choose: (views for "fast", for "opt", resolution). A CPU renders
# and rasterises a view many times slower than a GPU, so there fewer and smaller views are used
# (docs/benchmarks/export.md#observations).
GPU_OBSERVATIONS = (50, 100, 1024)
CPU_OBSERVATIONS = (24, 48, 512)


def export_options(kwargs: dict) -> dict:
    """``EXTRA_DEFAULTS`` updated with ``kwargs``; a TypeError names any unknown argument."""
    unknown = set(kwargs) - set(EXTRA_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; "
                        f"known extras: {sorted(EXTRA_DEFAULTS)}")
    return {**EXTRA_DEFAULTS, **kwargs}


def observation_settings(device, bake_mode: str = "fast") -> tuple:
    """(nviews, render_resolution) ``to_glb`` uses on ``device`` when the caller sets neither:
    50 ("fast") / 100 ("opt", the reference) views at 1024^2 on an accelerator, 24 / 48 at 512^2
    on a CPU."""
    fast, opt, res = CPU_OBSERVATIONS if torch.device(device).type == "cpu" else GPU_OBSERVATIONS
    return (fast if bake_mode == "fast" else opt), res


def mesh_arrays(mesh, device=None):
    """(vertices float32 [V,3], faces int64 [F,3]) on ``device`` (None: the vertices' own, the CPU for numpy) of a
    mesh given as (v, f), a dict with "vertices" / "faces", or an object with those attributes (torch or numpy)."""
    if isinstance(mesh, (tuple, list)):
        v, f = mesh[0], mesh[1]
    elif isinstance(mesh, dict):
        v, f = mesh["vertices"], mesh["faces"]
    else:
        v, f = mesh.vertices, mesh.faces
    v = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v)
    device = v.device if device is None else device
    v = v.to(device, torch.float32)
    f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f).to(device, torch.int64)
    return v.reshape(-1, 3), f.reshape(-1, 3)
