"""Cameras and rasterisers (pure PyTorch, correct on any device; optional GPU kernels through
`trellis.fastpaths`), and `render`: the one place that knows which renderer draws which representation."""
from __future__ import annotations

import torch

from ..representations import Gaussian, MeshExtractResult, Strivec
from .gaussian_render import render_gaussians
from .mesh_view import render_mesh
from .radiance_field_render import render_strivec

__all__ = ["RENDERERS", "render", "renderer_for", "render_gaussians", "render_mesh", "render_strivec"]

RENDERERS = {Gaussian: render_gaussians, Strivec: render_strivec, MeshExtractResult: render_mesh}


def renderer_for(rep):
    """The render function of `rep`'s representation (TypeError for anything else)."""
    for kind, fn in RENDERERS.items():
        if isinstance(rep, kind):
            return fn
    raise TypeError(f"no renderer for {type(rep).__name__} (expected one of "
                    f"{', '.join(k.__name__ for k in RENDERERS)})")


def render(rep, extrinsics, intrinsics, resolution, **options) -> dict:
    """One view of `rep` with its renderer, the cameras moved to `rep.device`.

    extrinsics [4,4] (OpenCV world->camera), intrinsics [3,3] (normalised), resolution as the renderer
    takes it; `options` go to the renderer unchanged (its own defaults otherwise). Returns the
    renderer's dict of images."""
    fn = renderer_for(rep)
    device = rep.device
    return fn(rep, torch.as_tensor(extrinsics).to(device), torch.as_tensor(intrinsics).to(device), resolution,
              **options)
