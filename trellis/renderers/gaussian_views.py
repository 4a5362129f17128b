"""Several views of one `Gaussian` in one render: a turntable's frames a few at a time instead of one by one.

The K views are composited as one tall image of K bands, each band a whole number of tiles high, with every
(Gaussian, view) pair projected by one ``gaussian_render.project`` call and binned into its own band only
(``row0`` / ``row1`` in the projection). The compositing is the same dispatch as a single view's
(``composite_torch`` or a kernel of ``trellis.fastpaths``), so a batch of K frames costs one projection, one
binning and one compositing launch — a few dozen kernel launches and host syncs instead of K times as many.
From a thread beside other GPU work (the app's preview beside the bake) this is what matters: every launch from
Python takes and gives back the interpreter lock.

A view equals `render_gaussians` from its camera up to float32 rounding of its band's offset: a splat of band b has
``v + b * band_height`` in the kernels' float32 table (at most ~5e-4 px of rounding for 8 views of 1024 px).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import fastpaths
from ..core.callbacks import CancelCheck, check
from ..representations.gaussian import SH_C0
from .gaussian_constants import TILE_SIZE
from .cameras import image_size
from .gaussian_render import composite_torch, project

# The most views composited at once: beyond it the launches saved are few and the bands' offsets grow.
MAX_VIEWS = 8
# Bytes per (Gaussian, view) pair while projecting (its intermediates and kept rows) and per pixel while
# compositing (outputs, per-tile lists): the measure of how many views fit in free memory.
BYTES_PER_PAIR = 256
BYTES_PER_PIXEL = 64


def views_at_once(n_gaussians: int, pixels: int, free_bytes: Optional[int]) -> int:
    """How many views of `pixels` pixels of `n_gaussians` Gaussians one `render_gaussian_views` call takes: at most
    MAX_VIEWS, and as many as a quarter of `free_bytes` holds; one where the free memory is unknown (a CPU, whose
    launches cost nothing and whose memory the views would only fill). Pure."""
    if free_bytes is None:
        return 1
    per_view = n_gaussians * BYTES_PER_PAIR + pixels * BYTES_PER_PIXEL
    return int(max(1, min(MAX_VIEWS, free_bytes // 4 // max(per_view, 1))))


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes this process may still take on `device` (under any VRAM budget); None where unknown (the CPU)."""
    if device.type != "cuda":
        return None
    from ..core.device import free_device_memory
    return free_device_memory(device)


def render_gaussian_views(gaussian, extrinsics: torch.Tensor, intrinsics: torch.Tensor, resolution,
                          near: float = 0.8, far: float = 1.6, bg_color: Sequence[float] = (0.0, 0.0, 0.0),
                          kernel_size: float = 0.1, tile_size: int = TILE_SIZE,
                          cancel: CancelCheck = None, *, opacity_compensation: bool = True,
                          cull_far: bool = False, work_budget: Optional[int] = None) -> dict:
    """`render_gaussians` from K cameras at once: extrinsics [K,4,4], intrinsics [K,3,3], the same other arguments.
    Returns ``color`` [K,3,H,W] (not clipped), ``alpha`` and ``depth`` [K,1,H,W]."""
    height, width = image_size(resolution)
    xyz = gaussian.get_xyz
    device, dtype = xyz.device, xyz.dtype
    extrinsics = torch.as_tensor(extrinsics, dtype=dtype, device=device).reshape(-1, 4, 4)
    intrinsics = torch.as_tensor(intrinsics, dtype=dtype, device=device).reshape(-1, 3, 3)
    if extrinsics.shape[0] != intrinsics.shape[0]:
        raise ValueError(f"{extrinsics.shape[0]} extrinsics for {intrinsics.shape[0]} intrinsics")
    views, n = extrinsics.shape[0], xyz.shape[0]
    band = -(-height // tile_size) * tile_size          # whole tiles: no tile holds rows of two views
    bg = torch.as_tensor(bg_color, dtype=dtype, device=device).reshape(3)
    check(cancel)
    with torch.no_grad():
        proj = project(xyz, gaussian.get_scaling, gaussian.get_rotation, gaussian.get_opacity.reshape(-1),
                       extrinsics, intrinsics, width, height, near, far, cull_far, kernel_size,
                       opacity_compensation)
        view = torch.div(proj["idx"], max(n, 1), rounding_mode="floor")
        row0 = view * band
        proj.update(v=proj["v"] + row0.to(proj["v"].dtype), row0=row0, row1=row0 + height)
        colors = (SH_C0 * gaussian.get_features.reshape(-1, 3)[proj["idx"] - view * n] + 0.5).clamp(min=0)
        del view
        out = fastpaths.dispatch("gaussian_composite", device, composite_torch, proj, colors, width, views * band,
                                 bg, tile_size, cancel, work_budget=work_budget)
    return {key: img.view(img.shape[0], views, band, width)[:, :, :height].transpose(0, 1)
            for key, img in out.items()}
