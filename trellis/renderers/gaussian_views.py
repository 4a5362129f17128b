"""How many views of one `Gaussian` a render call takes (``gaussian_render.render_gaussian_views``: a turntable's
frames a few at a time instead of one by one, a few dozen launches and host syncs per batch instead of per frame):
as many as the device's free memory holds, at most ``MAX_VIEWS``."""
from __future__ import annotations

from typing import Optional

import torch

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
