"""Texels no observation reached (outside every chart or never seen) filled from the observed ones
(``inpaint_texture``), in PyTorch on the texture's device."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["INPAINT_RINGS", "inpaint_texture"]

# Rings of texels around the charts that take their border's colour before the push-pull fill: what bilinear
# lookups and the first mip levels read just outside a chart.
INPAINT_RINGS = 4


def inpaint_texture(texture, filled, rings: int = INPAINT_RINGS) -> np.ndarray:
    """uint8 [S,S,3]: the texels where ``filled`` is False get colours from the filled ones, which keep theirs.

    Two steps, on the texture's device (tensors stay where they are; the GPU does it in milliseconds):
    ``rings`` rings of texels around the filled ones take the mean of their filled 3x3 neighbours, ring by ring
    (what bilinear lookups and the first mip levels read just outside a chart: the chart's own border colour),
    then every texel still empty is filled by push-pull (averages of the filled texels over 2x2, 4x4, ...
    blocks, blended back down with bilinear upsampling: a smooth fill of the gutter and of unseen spots).

    It is closer to the true continuation than OpenCV's Telea inpainting and runs on the GPU
    (docs/benchmarks/export.md#texture-bake).
    """
    tex = torch.as_tensor(texture)
    if tex.dtype == torch.uint8:
        tex = tex.float() / 255
    tex = tex[..., :3].float()
    known = torch.as_tensor(filled, device=tex.device).bool()
    if bool(known.all()) or not bool(known.any()):
        return (tex.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = _push_pull(*_grow_rings(tex, known, rings)).permute(1, 2, 0)
    out = torch.where(known[..., None], tex, out)                  # filled texels bit for bit
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _grow_rings(tex, known, rings: int):
    """(colour x weight [1,3,S,S], weight [1,1,S,S] of 0 / 1): the known texels of ``tex`` [S,S,3], then
    ``rings`` rings of empty texels next to known ones, each with the mean of its known 3x3 neighbours."""
    p = tex.permute(2, 0, 1)[None] * known
    w = known[None, None].to(tex.dtype)
    for _ in range(rings):
        ws = F.avg_pool2d(w, 3, stride=1, padding=1)
        grow = (w == 0) & (ws > 0)
        if not bool(grow.any()):
            break
        ps = F.avg_pool2d(p, 3, stride=1, padding=1)
        p = torch.where(grow, ps / ws.clamp_min(1e-12), p)
        w = torch.where(grow, torch.ones_like(w), w)
    return p, w


def _push_pull(p, w):
    """[3,S,S]: texels of weight 1 keep colour ``p``, the rest (weight 0, colour 0) come from coarser averages of
    the weighted ones (``p``, ``w``: [1,3,S,S] colour x weight, [1,1,S,S] weight, as ``_grow_rings`` gives)."""
    levels = [(p, w)]
    while w.shape[-1] > 1 or w.shape[-2] > 1:
        p, w = F.avg_pool2d(p, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)
        levels.append((p, w))
    fill = None
    for p, w in reversed(levels):
        colour = p / w.clamp_min(1e-12)
        fill = colour if fill is None else (
            w * colour + (1 - w) * F.interpolate(fill, size=w.shape[-2:], mode="bilinear", align_corners=False))
    return fill[0]
